"""Streaming inference: the frame-by-frame engine, its options, and the whole-video API."""
from stcn.inference.device import resolve_device
from stcn.inference.inference_core import InferenceCore
from stcn.inference.memory_bank import MemoryBank
from stcn.inference.options import EngineOptions, add_engine_arguments
from stcn.inference.video import FrameResult, segment_video

__all__ = ["EngineOptions", "FrameResult", "InferenceCore", "MemoryBank", "add_engine_arguments", "resolve_device",
           "segment_video"]
