"""benchmarks/bench_real_footage.py's pseudo ground truth: the teacher's masks of a frame and of its mirror."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return importlib.import_module("bench_real_footage")
    finally:
        sys.path.remove(str(BENCHMARKS))


class _Teacher:
    """A fake teacher: a pixel-wise rule, or one that only ever sees the left half of its input."""

    def __init__(self, left_only: bool) -> None:
        self.left_only, self.calls = left_only, 0

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        matte = (rgb[..., 0] > 128).astype(np.float32)
        if self.left_only:
            matte[:, rgb.shape[1] // 2:] = 0
        return matte


def test_the_mirrored_view_is_mirrored_back_and_cached(tmp_path):
    bench = _bench()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(3)]
    fair = _Teacher(left_only=False)
    plain = bench.teacher_masks(lambda: fair, frames, [0, 2], tmp_path / "plain")
    mirrored = bench.teacher_masks(lambda: fair, frames, [0, 2], tmp_path / "mirrored", mirrored=True)
    for t in (0, 2):  # a pixel-wise teacher gives the same mask on both views
        assert np.array_equal(plain[t], frames[t][..., 0] > 128) and np.array_equal(mirrored[t], plain[t])
    assert fair.calls == 4
    again = bench.teacher_masks(lambda: fair, frames, [0, 2], tmp_path / "mirrored", mirrored=True)
    assert fair.calls == 4 and all(np.array_equal(again[t], mirrored[t]) for t in (0, 2))  # read from the cache
    # a teacher blind to one side: its two views keep opposite halves, which is what the bench's
    # self-agreement row exposes
    blind = _Teacher(left_only=True)
    left = bench.teacher_masks(lambda: blind, frames, [1], tmp_path / "blind")[1]
    right = bench.teacher_masks(lambda: blind, frames, [1], tmp_path / "blind_mirrored", mirrored=True)[1]
    assert not left[:, 8:].any() and not right[:, :8].any()
    assert np.array_equal(left[:, :8], frames[1][:, :8, 0] > 128)
    assert np.array_equal(right[:, 8:], frames[1][:, 8:, 0] > 128)
