"""Streaming inference: memory bank, the frame-by-frame engine, readers and writers."""
from stcn.inference.clip import ClipResult, segment_clip
from stcn.inference.inference_core import InferenceCore
from stcn.inference.memory_bank import MemoryBank

__all__ = ["ClipResult", "InferenceCore", "MemoryBank", "segment_clip"]
