"""The engine holds no per-frame outputs: its state and the process's memory stay flat while frames
stream through (memory grows only with memory frames)."""
from __future__ import annotations

import gc
import os

import numpy as np
import torch

from stcn.data.synthetic import generate_video
from stcn.inference import InferenceCore
from stcn.model import PRESETS, STCN


def _held_bytes(core: InferenceCore) -> int:
    total = 0
    for entry in core.memory.entries:
        total += entry.key.numel() * entry.key.element_size()
        total += sum(v.numel() * v.element_size() for v in entry.values.values())
    return total


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_engine_state_and_rss_do_not_grow_with_frames_written():
    torch.manual_seed(0)
    model = STCN(PRESETS["small"]).eval()
    video = generate_video(3, num_frames=8, height=64, width=96, num_objects=2)
    core = InferenceCore(model, size=-1, precision="fp32", mem_every=10_000)  # only the annotated frame is memory
    rss = {}
    held = {}
    for t in range(70):
        frame = video.frames[t % len(video.frames)]
        probs = core.step(frame, video.labels[0] if t == 0 else None)
        core.labels(probs)
        if t in (15, 69):
            gc.collect()
            rss[t] = _rss_bytes()
            held[t] = _held_bytes(core)
    assert held[15] == held[69] > 0
    assert len(core.memory.entries) == 1
    # 54 more frames of 64x96 (K+1) probabilities would be ~4 MB kept; allow allocator noise only.
    assert rss[69] - rss[15] < 2 * 2**20, (rss[15], rss[69])


def test_memory_grows_only_with_memory_frames():
    torch.manual_seed(0)
    model = STCN(PRESETS["small"]).eval()
    video = generate_video(4, num_frames=12, height=64, width=96, num_objects=2)
    core = InferenceCore(model, size=-1, precision="fp32", mem_every=5)
    sizes = []
    for t, frame in enumerate(video.frames):
        core.step(frame, video.labels[0] if t == 0 else None)
        sizes.append(len(core.memory.entries))
    # frame t's value joins the memory when frame t+1 arrives: memory frames 0, 5, 10
    assert sizes == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3]
    assert np.all(np.diff(sizes) >= 0)
