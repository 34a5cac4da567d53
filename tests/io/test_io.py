"""Readers and writers of stcn.io: frame folders and videos in, label PNGs, probabilities and
overlay videos out, staged output folders. No network model here: everything is small and fast."""
from __future__ import annotations

import threading
import time

import av
import numpy as np
import pytest
from media import write_mp4
from PIL import Image

from stcn.errors import DataError
from stcn.io.files import staged_output
from stcn.io.frames import count_frames, iter_frames, probe
from stcn.io.masks import DAVIS_PALETTE, read_label_png, read_masks, save_label_png
from stcn.io.writers import LabelWriter, OverlayWriter, overlay_frame


def _frames(n: int, h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth-ish content so lossy codecs keep it recognisable
    base = rng.integers(0, 256, size=(n, h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)[:, :h, :w].copy()


def _reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "stcn-frame-reader" and t.is_alive()]


# --------------------------------------------------------------------------------------------------
# Frames
# --------------------------------------------------------------------------------------------------
def test_folder_frames_natural_order_and_content(tmp_path):
    frames = _frames(4)
    names = ["f10", "f2", "f1", "f3"]
    for name, frame in zip(names, frames):
        Image.fromarray(frame).save(tmp_path / f"{name}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / ".hidden.png").write_bytes(b"")
    expected = dict(zip(names, frames))
    for prefetch in (0, 2):
        got = list(iter_frames(tmp_path, prefetch=prefetch))
        assert [n for n, _ in got] == ["f1", "f2", "f3", "f10"]
        for name, frame in got:
            assert frame.dtype == np.uint8 and frame.shape == (32, 48, 3) and frame.flags.writeable
            np.testing.assert_array_equal(frame, expected[name])
    assert count_frames(tmp_path) == 4
    info = probe(tmp_path)
    assert (info.kind, info.width, info.height, info.num_frames) == ("frames", 48, 32, 4)


def test_greyscale_and_rgba_frames_become_rgb(tmp_path):
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((16, 16, 4), 9, np.uint8)).save(tmp_path / "b.png")
    (a, fa), (b, fb) = iter_frames(tmp_path)
    assert fa.shape == fb.shape == (16, 16, 3) and fa.max() == 7 and fb.max() == 9


def test_video_frames(tmp_path):
    frames = _frames(5, 32, 48)
    path = write_mp4(tmp_path / "clip.mp4", frames)
    info = probe(path)
    assert (info.kind, info.width, info.height, info.num_frames, info.fps) == ("video", 48, 32, 5, 24)
    assert count_frames(path) == 5
    got = list(iter_frames(path))
    assert [n for n, _ in got] == ["00000", "00001", "00002", "00003", "00004"]
    for (_, frame), original in zip(got, frames):
        assert frame.shape == (32, 48, 3) and frame.dtype == np.uint8
        assert np.abs(frame.astype(int) - original).mean() < 20  # lossy, but the same picture


def test_truncated_video_is_a_clear_error(tmp_path):
    data = write_mp4(tmp_path / "clip.mp4", _frames(6)).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: the file cannot be opened
    with pytest.raises(DataError, match="truncated or corrupt"):
        list(iter_frames(cut))
    # index first, data cut: the frames that are there decode, then the missing ones are reported
    data = write_mp4(tmp_path / "fast.mp4", _frames(6), codec="mpeg4", faststart=True).read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.7)])
    with pytest.raises(DataError, match="truncated"):
        list(iter_frames(cut))
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 50)
    with pytest.raises(DataError, match="junk.mp4"):
        probe(tmp_path / "junk.mp4")


def test_corrupt_frame_is_reported_when_reached(tmp_path):
    for i, frame in enumerate(_frames(3)):
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.jpg", quality=90)
    bad = tmp_path / "00001.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 200])  # header intact, image data cut
    probe(tmp_path)  # headers are fine
    frames = iter_frames(tmp_path)
    assert next(frames)[0] == "00000"
    with pytest.raises(DataError, match="00001.jpg.*truncated or corrupt"):
        next(frames)


def test_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no frames"):
        probe(empty)
    with pytest.raises(DataError, match="no such file"):
        probe(tmp_path / "missing")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((16, 24, 3), np.uint8)).save(mixed / "1.png")
    with pytest.raises(DataError, match="same size"):
        probe(mixed)
    with pytest.raises(DataError, match="same size"):  # without the up-front check, when reached
        list(iter_frames(mixed))
    dup = tmp_path / "dup"
    dup.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(dup / "0.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(dup / "0.jpg")
    with pytest.raises(DataError, match="two frames"):
        probe(dup)


def test_closing_the_iterator_stops_the_reader_thread(tmp_path):
    for i, frame in enumerate(_frames(12, 16, 16)):
        Image.fromarray(frame).save(tmp_path / f"{i:05d}.png")
    frames = iter_frames(tmp_path, prefetch=2)
    next(frames)
    assert _reader_threads()
    frames.close()
    deadline = time.monotonic() + 5
    while _reader_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _reader_threads()


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------
def test_read_masks_palette_and_grey(tmp_path):
    labels = np.zeros((8, 10), np.uint8)
    labels[2:5, 3:6] = 4
    custom = np.array([[0, 0, 0], [1, 2, 3], [4, 5, 6], [7, 8, 9], [250, 10, 20]], np.uint8)
    save_label_png(tmp_path / "00003.png", labels, custom)
    Image.fromarray(labels * 2).save(tmp_path / "00010.png")  # greyscale, id 8
    (tmp_path / "readme.txt").write_text("ignored")
    masks = read_masks(tmp_path)
    assert list(masks) == ["00003", "00010"]
    got, palette = masks["00003"]
    np.testing.assert_array_equal(got, labels)
    np.testing.assert_array_equal(palette[:5], custom)
    grey, none = masks["00010"]
    assert none is None and set(np.unique(grey)) == {0, 8}
    single = read_masks(tmp_path / "00003.png")
    assert list(single) == ["00003"]


def test_mask_errors(tmp_path):
    big = np.zeros((8, 8), np.uint16)
    big[0, 0] = 300
    Image.fromarray(big).save(tmp_path / "big.png")
    with pytest.raises(DataError, match="at most 255 objects"):
        read_label_png(tmp_path / "big.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="colour image"):
        read_label_png(tmp_path / "rgb.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png"):
        read_label_png(tmp_path / "broken.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no mask PNGs"):
        read_masks(empty)


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------
def test_label_writer_pngs_and_probs(tmp_path):
    palette = DAVIS_PALETTE.copy()
    palette[5] = (1, 2, 3)
    labels = np.zeros((6, 7), np.uint8)
    labels[1:3, 1:4] = 5
    probs = np.random.default_rng(0).random((2, 6, 7)).astype(np.float32)
    with LabelWriter(tmp_path, palette) as writer:
        writer.write("a", labels)
        writer.write("b", labels, probs, [5])
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.array(image), labels)
        assert tuple(image.getpalette()[15:18]) == (1, 2, 3)
    assert not (tmp_path / "probs" / "a.npz").exists()
    with np.load(tmp_path / "probs" / "b.npz") as f:
        assert f["probs"].dtype == np.float32
        np.testing.assert_array_equal(f["probs"], probs)
        np.testing.assert_array_equal(f["object_ids"], [5])


def test_label_writer_failure_is_reraised(tmp_path):
    writer = LabelWriter(tmp_path / "missing" / "folder")
    writer.write("a", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="cannot write"):
        writer.close()


def test_overlay_writer_odd_size_decodes(tmp_path):
    frames = _frames(4, 33, 47)
    labels = np.zeros((33, 47), np.uint8)
    labels[5:20, 5:30] = 1
    path = tmp_path / "overlay.mp4"
    with OverlayWriter(path, width=47, height=33, fps=12) as writer:
        for frame in frames:
            writer.write(frame, labels)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 12
    assert len(decoded) == 4 and decoded[0].shape == (34, 48, 3)
    blended = overlay_frame(frames[0], labels)
    np.testing.assert_array_equal(blended[labels == 0], frames[0][labels == 0])
    expected = (frames[0][10, 10].astype(float) + DAVIS_PALETTE[1]) / 2
    assert np.abs(blended[10, 10] - expected).max() <= 1


# --------------------------------------------------------------------------------------------------
# Staged output
# --------------------------------------------------------------------------------------------------
def test_staged_output_publishes_or_leaves_nothing(tmp_path):
    final = tmp_path / "a" / "b" / "out"
    with staged_output(final) as stage:
        assert stage.parent == final.parent and not final.exists()
        (stage / "x.png").write_text("x")
    assert (final / "x.png").read_text() == "x"
    assert sorted(p.name for p in final.parent.iterdir()) == ["out"]

    other = tmp_path / "c" / "d" / "out"
    with pytest.raises(RuntimeError):
        with staged_output(other) as stage:
            (stage / "x.png").write_text("x")
            raise RuntimeError("boom")
    assert not (tmp_path / "c").exists()  # the parents it made are gone too

    with pytest.raises(DataError, match="not empty.*--force"):
        with staged_output(final):
            pass
    (final / "keep.txt").write_text("mine")
    with staged_output(final, force=True) as stage:
        (stage / "x.png").write_text("new")
        (stage / "probs").mkdir()
        (stage / "probs" / "x.npz").write_text("p")
    assert (final / "x.png").read_text() == "new" and (final / "keep.txt").read_text() == "mine"
    assert (final / "probs" / "x.npz").exists()
    assert sorted(p.name for p in final.parent.iterdir()) == ["out"]

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match="cannot create the output folder"):
        with staged_output(blocker / "out"):
            pass
    with pytest.raises(DataError, match="not a folder"):
        with staged_output(blocker):
            pass


def test_overlay_writer_bad_path(tmp_path):
    with pytest.raises(DataError, match="cannot write the overlay video"):
        OverlayWriter(tmp_path / "missing" / "o.mp4", width=16, height=16)
    with pytest.raises(DataError, match="cannot write the overlay video"):
        OverlayWriter(tmp_path / "o.unknown-extension", width=16, height=16)
    assert list(tmp_path.iterdir()) == []


def test_overlay_writer_atomic_replaces_only_a_complete_video(tmp_path):
    frames = _frames(3, 16, 24)
    labels = np.zeros((16, 24), np.uint8)
    path = tmp_path / "overlay.mp4"
    path.write_bytes(b"previous")
    with pytest.raises(RuntimeError):
        with OverlayWriter(path, width=24, height=16, atomic=True) as writer:
            writer.write(frames[0], labels)
            assert path.read_bytes() == b"previous"  # encoding goes to a hidden file beside it
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"previous" and list(tmp_path.iterdir()) == [path]  # nothing left behind
    with OverlayWriter(path, width=24, height=16, atomic=True) as writer:
        for frame in frames:
            writer.write(frame, labels)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 3
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(DataError, match=r"cannot write the overlay video .*missing/o\.mp4"):
        OverlayWriter(tmp_path / "missing" / "o.mp4", width=16, height=16, atomic=True)
