"""Hostile requests to the UI's HTTP API: each answers 4xx with a one-line error, changes nothing on
disk, and the server still answers /api/info afterwards. Save is all or nothing."""
from __future__ import annotations

import errno
import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import bomb_png, listing
from PIL import Image

pytest.importorskip("starlette", reason="the ui extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the ui extra (starlette, uvicorn) is not installed")

_TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_TESTS / "ui"))
sys.path.insert(0, str(_TESTS / "interactive"))  # recipe_interactive, interactive_data
# the interactive tests' recipe networks, reused (their conftest is not on this folder's path)
_spec = importlib.util.spec_from_file_location("interactive_fixtures_hostile", _TESTS / "interactive" / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
s2m_weights, fusion_weights = _fixtures.s2m_weights, _fixtures.fusion_weights
s2m_model, fusion_model = _fixtures.s2m_model, _fixtures.fusion_model

from ui_helpers import post, request  # noqa: E402

K, T, H, W = 2, 3, 32, 48


@pytest.fixture
def ui(mo_model, s2m_model, fusion_model, tmp_path):
    """(base URL, out folder, state) of a UI server over a 3-frame clip."""
    from stcn.data.synthetic import generate_video
    from stcn.interactive.api import InteractiveSession
    from stcn.ui.server import BackgroundServer, create_app
    from stcn.ui.state import UIState

    clip = generate_video(3, num_frames=T, height=H, width=W, num_objects=K)
    state = UIState(lambda k: InteractiveSession(mo_model, s2m_model, fusion_model, clip.frames, k, precision="fp32"),
                    clip.frames, [f"{t:05d}" for t in range(T)], K, tmp_path / "out")
    with BackgroundServer(create_app(state)) as url:
        yield url, tmp_path / "out", state


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _json(value) -> bytes:
    return json.dumps(value).encode()


CLICK = {"frame": 0, "point": [5, 5], "object_id": 1}

# (id, path, body bytes or a callable of tmp_path, content type)
BAD_REQUESTS = [
    ("json_nested_100k_deep", "api/click", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("json_invalid", "api/click", b"{not json", "application/json"),
    ("json_not_an_object", "api/click", _json([1, 2, 3]), "application/json"),
    ("click_positive_no", "api/click", _json({**CLICK, "positive": "no"}), "application/json"),
    ("click_positive_number", "api/click", _json({**CLICK, "positive": 1}), "application/json"),
    ("click_unknown_field", "api/click", _json({**CLICK, "evil": 1}), "application/json"),
    ("object_name_not_a_string", "api/objects/1", _json({"name": {"a": 1}}), "application/json"),
    ("object_name_a_number", "api/objects/1", _json({"name": 7}), "application/json"),
    ("object_colour_out_of_range", "api/objects/1", _json({"colour": 999}), "application/json"),
    ("save_overlay_not_a_bool", "api/save", _json({"overlay": "no"}), "application/json"),
    ("mask_upload_20000x20000", "api/masks/0", lambda tmp: bomb_png(tmp / "bomb.png", mode=3).read_bytes(),
     "image/png"),
    ("mask_upload_jpeg", "api/masks/0", lambda tmp: _jpeg(), "image/png"),
    ("mask_upload_wrong_size", "api/masks/0", lambda tmp: _png(np.zeros((5, 5), np.uint8)), "image/png"),
    ("mask_upload_ids_above_k", "api/masks/0", lambda tmp: _png(np.full((H, W), 9, np.uint8)), "image/png"),
    ("mask_upload_not_png_type", "api/masks/0", b"GIF89a", "image/gif"),
]


@pytest.mark.parametrize("name, path, body, content_type", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_request_is_a_one_line_4xx(ui, tmp_path, name, path, body, content_type):
    url, out, state = ui
    before = state.info()
    if callable(body):
        body = body(tmp_path)
    # sent as they are: ui_helpers.request JSON-encodes bodies only for a bare application/json type
    content_type = "application/json; charset=utf-8" if content_type == "application/json" else content_type
    status, raw, _ = request(url + path, body, content_type=content_type)
    assert 400 <= status < 500, (status, raw[:200])
    error = json.loads(raw)["error"]
    assert isinstance(error, str) and error and "\n" not in error
    status, info = request(url + "api/info")[:2]
    assert status == 200
    after = json.loads(info)
    assert after["objects"] == before["objects"] and after["can_undo"] == before["can_undo"]
    assert state.log == []  # nothing was applied
    assert not out.exists()


def test_objects_beyond_255_are_refused():
    from stcn.errors import UserError
    from stcn.ui.state import UIState

    frames = np.zeros((1, H, W, 3), np.uint8)
    for count in (0, 256, 300):
        with pytest.raises(UserError, match="255"):
            UIState(lambda k: None, frames, ["00000"], count, "unused")


def _draw(url: str) -> None:
    status, _ = post(url + "api/click", {**CLICK, "point": [10, 10], "positive": True})
    assert status == 200


def _files(out: Path) -> dict[str, bytes]:
    return {p: (out / p).read_bytes() for p in listing(out) if (out / p).is_file()}


def test_save_into_a_log_that_is_a_folder_changes_nothing(ui):
    url, out, _state = ui
    _draw(url)
    (out / "interactions.json").mkdir(parents=True)
    before = listing(out)
    status, body = post(url + "api/save", {"overlay": True})
    assert status == 400 and "interactions.json" in body["error"] and "\n" not in body["error"]
    assert listing(out) == before  # no masks/, no staging, no video
    assert request(url + "api/info")[0] == 200


def test_save_under_a_file_is_refused(ui, tmp_path):
    url, _out, state = ui
    (tmp_path / "blocker").write_text("")
    state.out = tmp_path / "blocker" / "out"
    status, body = post(url + "api/save", {})
    assert status == 400 and "not a folder" in body["error"]
    assert request(url + "api/info")[0] == 200


@pytest.mark.parametrize("fail_at", ["masks", "log"])
def test_a_save_failing_midway_leaves_the_previous_save_intact(ui, monkeypatch, fail_at):
    """The disk fills up while the second save writes its masks, or interactions.json cannot be
    written: the first save stays whole, byte for byte."""
    from stcn.io import writers

    url, out, state = ui
    _draw(url)
    assert post(url + "api/save", {})[0] == 200
    first = _files(out)
    _draw(url)
    real_save, real_write = writers.save_label_png, Path.write_text
    calls = []

    def full_disk(path, labels, palette=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real_save(path, labels, palette)

    def unwritable(self, *args, **kwargs):
        if self.name == "interactions.json":
            raise OSError(errno.EACCES, "Permission denied", str(self))
        return real_write(self, *args, **kwargs)

    if fail_at == "masks":
        monkeypatch.setattr(writers, "save_label_png", full_disk)
    else:
        monkeypatch.setattr(Path, "write_text", unwritable)
    status, body = post(url + "api/save", {"overlay": True})
    expected = "no space left" if fail_at == "masks" else "permission denied"
    assert status == 400 and expected in body["error"], body
    assert _files(out) == first
    assert request(url + "api/info")[0] == 200
    monkeypatch.undo()
    status, body = post(url + "api/save", {"overlay": True})
    assert status == 200 and body["count"] == T and (out / "overlay.mp4").is_file()
    assert not [p for p in listing(out) if ".stcn-tmp-" in p]
    assert len(json.loads((out / "interactions.json").read_text())) == len(state.log) == 2


def test_a_failing_rename_is_undone(tmp_path, monkeypatch):
    """Publishing renames every staged file into place; if one rename fails the earlier ones are
    undone, so the folder ends exactly as it was."""
    import os

    from stcn.errors import DataError
    from stcn.io import files

    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "a.png").write_bytes(b"old a")
    (out / "keep.txt").write_bytes(b"someone else's")
    before = _files(out)
    real = os.replace

    def flaky(src, dst):
        if Path(dst).name == "b.png":
            raise OSError(errno.EIO, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(files.os, "replace", flaky)
    with pytest.raises(DataError, match="cannot save into"):
        with files.staged_files(out) as stage:
            (stage / "masks").mkdir()
            (stage / "masks" / "a.png").write_bytes(b"new a")
            (stage / "masks" / "b.png").write_bytes(b"new b")
    assert _files(out) == before
    monkeypatch.undo()
    with files.staged_files(out) as stage:
        (stage / "masks").mkdir()
        (stage / "masks" / "a.png").write_bytes(b"new a")
    assert (out / "masks" / "a.png").read_bytes() == b"new a" and (out / "keep.txt").exists()
    assert sorted(os.listdir(out)) == ["keep.txt", "masks"]
