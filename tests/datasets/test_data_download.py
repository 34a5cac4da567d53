"""``stcn data download`` / ``stcn data resize-youtube`` against a local HTTP server (127.0.0.1 only):
layouts, resume, checksums, offline and bad-archive errors. Nothing here touches the internet."""
from __future__ import annotations

import hashlib
import io
import socket
import tarfile
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from stcn.cli import main
from stcn.data.download import DATASETS, STATE_DIR, DataSet, download_dataset, resize_youtube
from stcn.data.video_training import davis_training_set, youtube_training_set
from stcn.io.masks import load_label_png, save_label_png


@pytest.fixture
def server(local_server):
    """The shared local HTTP server (tests/local_http.py)."""
    return local_server


def _jpeg(h=12, w=16, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_labels(labels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    img = Image.frombytes("P", labels.shape[::-1], labels.astype(np.uint8).tobytes())
    img.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * 759)
    img.save(buf, "PNG")
    return buf.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _davis_zip(prefix="DAVIS", sequences=("bear", "cows"), frames=3) -> bytes:
    entries = {f"{prefix}/ImageSets/2017/train.txt": "\n".join(sequences).encode()}
    labels = np.zeros((12, 16), np.uint8)
    labels[3:9, 4:12] = 1
    labels[0:3, 0:4] = 2
    for seq in sequences:
        for t in range(frames):
            entries[f"{prefix}/JPEGImages/480p/{seq}/{t:05d}.jpg"] = _jpeg(seed=t)
            entries[f"{prefix}/Annotations/480p/{seq}/{t:05d}.png"] = _png_labels(labels)
    return _zip(entries)


@pytest.fixture
def registry(monkeypatch, server):
    """Point the registry's URLs at the local server (the test fills server.files)."""

    def point(name: str, **archive_changes) -> DataSet:
        spec = DATASETS[name]
        archives = tuple(replace(a, url=server.url("/" + a.name), mirrors=(), **archive_changes)
                         for a in spec.archives)
        new = replace(spec, archives=archives)
        monkeypatch.setitem(DATASETS, name, new)
        return new

    return point


def test_davis_download_gives_the_training_layout(server, registry, tmp_path, capsys):
    spec = registry("davis")
    server.files["/DAVIS-2017-trainval-480p.zip"] = _davis_zip()
    server.files["/DAVIS-2017-test-dev-480p.zip"] = _davis_zip(sequences=("aerobatics",), frames=1)
    root = tmp_path / "DAVIS"
    assert main(["data", "download", "davis", "--root", str(root), "--quiet"]) == 0
    assert (root / "trainval" / "JPEGImages" / "480p" / "bear" / "00002.jpg").is_file()
    assert (root / "test-dev" / "Annotations" / "480p" / "aerobatics" / "00000.png").is_file()
    assert not any((root / STATE_DIR).glob("*.zip"))  # archives removed once extracted
    assert sorted(p.name for p in (root / STATE_DIR).iterdir()) == sorted(f"{a.name}.done" for a in spec.archives)
    clips = davis_training_set(root)  # what stcn train reads
    assert [s.name for s in clips.sequences] == ["bear", "cows"]
    # again: nothing downloaded
    count = len(server.requests)
    assert main(["data", "download", "davis", "--root", str(root), "--quiet"]) == 0
    assert len(server.requests) == count
    assert "already in place" in capsys.readouterr().out


def test_interrupted_download_resumes(server, registry, tmp_path, capsys):
    registry("static")
    body = _zip({"fss/cat/1.jpg": _jpeg(), "fss/cat/1.png": _png_labels(np.ones((12, 16), np.uint8))})
    server.files["/static_data.zip"] = body
    server.drop_after = len(body) // 2
    root = tmp_path / "static"
    assert main(["data", "download", "static", "--root", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "interrupted" in err and "running the same command again continues" in err
    part = root / STATE_DIR / "static_data.zip.part"
    assert part.stat().st_size == len(body) // 2
    assert not (root / "fss").exists()
    server.drop_after = None
    assert main(["data", "download", "static", "--root", str(root), "--quiet"]) == 0
    assert server.requests[-1] == ("/static_data.zip", f"bytes={len(body) // 2}-")
    assert (root / "fss" / "cat" / "1.png").is_file() and not part.exists()


def test_checksum_is_verified(server, registry, tmp_path, capsys):
    body = _zip({"fss/a/1.jpg": _jpeg(), "fss/a/1.png": _png_labels(np.ones((12, 16), np.uint8))})
    server.files["/static_data.zip"] = body
    registry("static", sha256="0" * 64)
    root = tmp_path / "static"
    assert main(["data", "download", "static", "--root", str(root), "--quiet"]) == 2
    assert "sha256" in capsys.readouterr().err
    assert not (root / "fss").exists() and not list((root / STATE_DIR).iterdir())
    registry("static", sha256=hashlib.sha256(body).hexdigest())
    assert main(["data", "download", "static", "--root", str(root), "--quiet"]) == 0
    assert (root / "fss" / "a" / "1.jpg").is_file()


def test_offline_and_bad_archives_give_one_line(server, registry, tmp_path, monkeypatch, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    spec = registry("static")
    monkeypatch.setitem(DATASETS, "static", replace(spec, archives=(
        replace(spec.archives[0], url=f"http://127.0.0.1:{closed}/static_data.zip"),)))
    assert main(["data", "download", "static", "--root", str(tmp_path / "a"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not download" in err and "check your internet connection" in err
    registry("static")
    server.files["/static_data.zip"] = b"<html>quota exceeded</html>"
    assert main(["data", "download", "static", "--root", str(tmp_path / "b"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a zip or tar archive" in err
    # an archive without the expected top-level folder
    registry("davis")
    server.files["/DAVIS-2017-trainval-480p.zip"] = _davis_zip(prefix="Other")
    assert main(["data", "download", "davis", "--root", str(tmp_path / "c"), "--quiet"]) == 2
    assert "expected a top-level folder DAVIS/" in capsys.readouterr().err


def test_bl30k_needs_a_manual_download_or_a_mirror(server, tmp_path, capsys):
    root = tmp_path / "BL30K"
    assert main(["data", "download", "bl30k", "--root", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "doi.org/10.13012/B2IDB-1702934_V1" in err and str(root / STATE_DIR / "BL30K_a.tar") in err
    labels = np.zeros((12, 16), np.uint8)
    labels[2:10, 2:10] = 1
    for part in "abcdef":
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for t in range(3):
                for name, data in ((f"BL30K/JPEGImages/seq_{part}/{t:05d}.jpg", _jpeg(seed=t)),
                                   (f"BL30K/Annotations/seq_{part}/{t:05d}.png", _png_labels(labels))):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        if part == "a":  # one part saved by hand, the others from a mirror
            (root / STATE_DIR / "BL30K_a.tar").write_bytes(buf.getvalue())
        else:
            server.files[f"/mirror/BL30K_{part}.tar"] = buf.getvalue()
    assert main(["data", "download", "bl30k", "--root", str(root), "--quiet", "--mirror",
                 server.url("/mirror/")]) == 0
    # the parts are merged: BL30K/ inside the root, read by the BL30K loader from there
    from stcn.data.video_training import bl30k_training_set

    assert [s.name for s in bl30k_training_set(root).sequences] == [f"seq_{p}" for p in "abcdef"]


def _youtube_split(root, size=(360, 640), videos=("v1", "v2"), frames=(0, 5, 10)):
    labels = np.zeros(size, np.uint8)
    labels[100:200, 100:300] = 1
    labels[10:20, 10:30] = 2
    for v in videos:
        (root / "JPEGImages" / v).mkdir(parents=True)
        (root / "Annotations" / v).mkdir(parents=True)
        for t in frames:
            Image.fromarray(np.full((*size, 3), 100 + t, np.uint8)).save(root / "JPEGImages" / v / f"{t:05d}.jpg")
            save_label_png(root / "Annotations" / v / f"{t:05d}.png", labels)


def test_resize_youtube(tmp_path, capsys):
    src, dst = tmp_path / "train", tmp_path / "train_480p"
    _youtube_split(src)
    (src / "meta.json").write_text("{}")
    assert main(["data", "resize-youtube", "--in", str(src), "--out", str(dst), "--workers", "1", "--quiet"]) == 0
    with Image.open(dst / "JPEGImages" / "v1" / "00005.jpg") as im:
        assert im.size == (853, 480)  # shorter side 480, int() of the scaled width, as the original
    with Image.open(dst / "Annotations" / "v2" / "00000.png") as im:
        assert im.mode == "P" and im.size == (853, 480)
    labels = load_label_png(dst / "Annotations" / "v2" / "00000.png")
    assert set(np.unique(labels)) == {0, 1, 2}  # nearest: no new label values
    assert (dst / "meta.json").is_file()
    # finished videos are skipped on a second run
    stamp = (dst / "JPEGImages" / "v1").stat().st_mtime_ns
    resize_youtube(src, dst, workers=1, progress=False)
    assert (dst / "JPEGImages" / "v1").stat().st_mtime_ns == stamp
    assert youtube_training_set(tmp_path).sequences[0].name == "v1"
    assert main(["data", "resize-youtube", "--in", str(tmp_path / "none"), "--out", str(dst)]) == 2
    assert "no JPEGImages folder" in capsys.readouterr().err


def test_youtube_download_resizes_train(server, registry, tmp_path):
    registry("youtube")
    split = tmp_path / "src"
    _youtube_split(split / "train", size=(240, 320), videos=("a",), frames=(0, 5, 10))
    entries = {}
    for path in sorted((split / "train").rglob("*")):
        if path.is_file():
            entries[str(path.relative_to(split))] = path.read_bytes()
    server.files["/youtube-train.zip"] = _zip(entries)
    server.files["/youtube-valid.zip"] = _zip({"valid/meta.json": b"{}"})
    server.files["/youtube-valid-all-frames.zip"] = _zip({"valid_all_frames/JPEGImages/a/00000.jpg": _jpeg()})
    root = tmp_path / "YouTube"
    download_dataset("youtube", root, progress=False, log=lambda *a: None)
    assert (root / "valid" / "meta.json").is_file()
    assert (root / "all_frames" / "valid_all_frames" / "JPEGImages" / "a" / "00000.jpg").is_file()
    with Image.open(root / "train_480p" / "JPEGImages" / "a" / "00010.jpg") as im:
        assert im.size == (640, 480)
    assert len(youtube_training_set(root).sequences) == 1
