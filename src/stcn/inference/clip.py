"""Segment an in-memory clip from its first frame's mask: the loop shared by ``stcn demo``, synthetic
validation during training and the memory-policy benchmark."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from stcn.inference.inference_core import InferenceCore


@dataclass
class ClipResult:
    """labels (T, H, W) in the mask's object ids; seconds of processing (engine steps only, no I/O);
    the engine at the end (its settings and memory)."""

    labels: np.ndarray
    seconds: float
    engine: InferenceCore

    @property
    def fps(self) -> float:
        return len(self.labels) / self.seconds if self.seconds > 0 else float("inf")


@torch.inference_mode()
def segment_clip(model: torch.nn.Module, frames: Sequence[np.ndarray], first_mask: np.ndarray, *,
                 on_frame: Callable[[int, np.ndarray], None] | None = None, **engine_options) -> ClipResult:
    """Propagate ``first_mask`` (H, W) label map through ``frames`` (T x (H, W, 3) uint8).

    ``engine_options`` go to :class:`InferenceCore` (``max_memory_frames``, ``memory_policy``, ...).
    ``on_frame(t, labels)`` is called after each frame, outside the timed section.
    """
    core = InferenceCore(model, **engine_options)
    labels, seconds = [], 0.0
    for t, frame in enumerate(frames):
        start = time.perf_counter()
        out = core.labels(core.step(frame, first_mask if t == 0 else None))  # .cpu() inside syncs CUDA
        seconds += time.perf_counter() - start
        labels.append(out)
        if on_frame is not None:
            on_frame(t, out)
    return ClipResult(np.stack(labels), seconds, core)
