"""stcn.io.reverse: frames from last to first, the same pixels as the forward reader, for a frame folder and
for an mp4 decoded in chunks (several groups of pictures, chunks smaller than a group), from any start."""
from __future__ import annotations

import numpy as np
import pytest
from media import write_mp4
from PIL import Image

from stcn.io.frames import iter_frames
from stcn.io.reverse import _chunks, iter_frames_reversed


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (1, 32, 48, 3))
    return (base + np.arange(23)[:, None, None, None] * 2).astype(np.uint8)


def test_chunks_cover_every_frame_once_split_at_keyframes():
    assert _chunks(10, [0, 4, 8], 3) == [(0, 3), (3, 4), (4, 7), (7, 8), (8, 10)]
    assert _chunks(5, [0, 4, 8], 100) == [(0, 4), (4, 5)]


@pytest.mark.parametrize("chunk_frames", [2, 1000])
def test_mp4_reversed_equals_forward_decoding(tmp_path, frames, chunk_frames):
    clip = write_mp4(tmp_path / "c.mp4", frames, gop=5)
    forward = list(iter_frames(clip))
    chunk_bytes = chunk_frames * 32 * 48 * 3
    for start in (22, 13, 0):
        backward = list(iter_frames_reversed(clip, start=start, chunk_bytes=chunk_bytes))
        assert [n for n, _ in backward] == [f"{t:05d}" for t in range(start, -1, -1)]
        for (_, got), (_, want) in zip(backward, forward[start::-1]):
            np.testing.assert_array_equal(got, want)


def test_folder_reversed(tmp_path, frames):
    for t, frame in enumerate(frames[:5]):
        Image.fromarray(frame).save(tmp_path / f"f{t}.png")
    got = list(iter_frames_reversed(tmp_path, start=3, prefetch=0))
    assert [n for n, _ in got] == ["f3", "f2", "f1", "f0"]
    np.testing.assert_array_equal(got[0][1], frames[3])
    with pytest.raises(ValueError):
        iter_frames_reversed(tmp_path, start=5)
