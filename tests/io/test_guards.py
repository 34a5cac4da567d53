"""The size/resource guard and the file-system helpers it relies on (stcn.guards, stcn.io.files)."""
from __future__ import annotations

import errno
import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from stcn import guards
from stcn.errors import DataError, UserError
from stcn.io.files import atomic_folder, atomic_write, check_writable, os_error, staged_output, sweep_stale
from stcn.io.frames import probe
from stcn.io.masks import read_label_png


def _bomb_png(path, width=20000, height=20000):
    """A few hundred bytes whose PNG header promises width x height pixels."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    body = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    body += chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


@pytest.mark.parametrize("size", [0, -2, 8193, 999_999_999])
def test_bad_sizes_are_refused(size):
    with pytest.raises(UserError, match="--size"):
        guards.check_size_option(size)


def test_good_sizes_pass():
    for size in (-1, 1, 480, guards.MAX_SIZE):
        guards.check_size_option(size)


def test_a_thin_frame_at_the_default_size_is_refused_by_its_pixel_count():
    with pytest.raises(UserError, match="megapixel limit; use a smaller --size"):
        guards.check_frame_fits(4000, 16, 480)
    assert guards.check_frame_fits(4000, 16, -1) == (16, 4000)


def test_memory_limit_refuses_with_the_option_to_change(monkeypatch):
    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, "1")
    with pytest.raises(UserError, match=r"GiB of memory, but 0\.0 GiB are available; use a smaller --size"):
        guards.check_frame_fits(640, 480, 480)
    monkeypatch.setenv(guards.MEMORY_LIMIT_ENV, "100000")
    guards.check_frame_fits(640, 480, 480)


def test_port_and_objects():
    for port in (-1, 65536, 99999):
        with pytest.raises(UserError, match="--port"):
            guards.check_port(port)
    guards.check_port(0)
    for count in (0, 256, 300):
        with pytest.raises(UserError, match="255"):
            guards.check_object_count(count)
    guards.check_object_count(255)


def test_bomb_frames_and_masks_are_one_line_data_errors(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    _bomb_png(frames / "00000.png")
    with pytest.raises(DataError, match="megapixel limit"):
        probe(frames)
    with pytest.raises(DataError, match="megapixel limit"):
        read_label_png(_bomb_png(tmp_path / "mask.png"))


def test_jpeg_masks_are_refused_even_when_named_png(tmp_path):
    labels = np.zeros((24, 32), np.uint8)
    labels[4:12, 4:20] = 100
    Image.fromarray(labels).save(tmp_path / "m.png", format="JPEG", quality=60)
    with pytest.raises(DataError, match="JPEG image; masks must be PNG"):
        read_label_png(tmp_path / "m.png")
    buf = io.BytesIO()
    Image.fromarray(labels).save(buf, format="PNG")
    (tmp_path / "ok.png").write_bytes(buf.getvalue())
    assert read_label_png(tmp_path / "ok.png")[0].max() == 100


def test_check_writable_names_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "out")
    check_writable(tmp_path / "new" / "deeper")
    assert sorted(os.listdir(tmp_path)) == ["file"]  # the probe file is gone, nothing was created


def test_os_error_words():
    assert "read-only" in str(os_error(OSError(errno.EROFS, "x"), "write", "f"))
    assert "another file system" in str(os_error(OSError(errno.EXDEV, "Invalid cross-device link"), "move", "f"))
    assert "no space left" in str(os_error(OSError(errno.ENOSPC, "x"), "write", "f"))


def test_atomic_write_failure_is_a_data_error_and_leaves_nothing(tmp_path, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("stcn.io.files.move", full)
    with pytest.raises(DataError, match="no space left"):
        atomic_write(tmp_path / "a.txt", "x")
    assert os.listdir(tmp_path) == []


def test_atomic_folder_removes_the_parents_it_created_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "out" / "seq"):
            raise RuntimeError("the first video fails")
    assert os.listdir(tmp_path) == []


def test_sweep_removes_only_dead_writers_debris(tmp_path):
    dead, live = 999_999_999, os.getppid()
    debris = [tmp_path / f".out.stcn-tmp-{dead}-0123abcd", tmp_path / f".out.tmp-{dead}-0123abcd",
              tmp_path / f".clip.{dead}.0123456789ab.tmp.mp4"]
    kept = [tmp_path / f".out.stcn-tmp-{live}-0123abcd", tmp_path / f".other.stcn-tmp-{dead}-0123abcd"]
    for p in debris[:2] + kept:
        p.mkdir()
    debris[2].write_bytes(b"\0" * 48)
    assert sorted(sweep_stale(tmp_path / "out")) == sorted(debris[:2])
    assert sweep_stale(tmp_path / "clip.mp4") == [debris[2]]
    assert all(p.exists() for p in kept) and not any(p.exists() for p in debris)


def test_staged_output_sweeps_a_killed_runs_staging(tmp_path):
    stale = tmp_path / ".out.stcn-tmp-999999999-0123abcd"
    stale.mkdir()
    (stale / "00000.png").write_bytes(b"partial")
    with staged_output(tmp_path / "out") as stage:
        (stage / "a.png").write_bytes(b"x")
    assert sorted(os.listdir(tmp_path)) == ["out"]
