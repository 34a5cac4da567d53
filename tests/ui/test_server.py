"""The UI server over HTTP (a real uvicorn on a free loopback port): strokes in, label maps out, equal
to the same calls through the Python API; progress events; cancel; busy; import; save; safety."""
from __future__ import annotations

import http.client
import io
import json
import threading
import urllib.request

import numpy as np
import pytest
from PIL import Image
from ui_helpers import labels, post, replay, request

from stcn.io.masks import load_label_png

SIZE = (96, 128)
OBJ1 = [[[30, 40], [45.5, 44.2], [50, 52]]]
OBJ2 = [[[90, 30], [100, 45]], [[95, 20], [95, 60]]]
BG = [[[2, 90], [120, 92]]]


def _events(url: str, until: set[str], out: list, ready: threading.Event) -> None:
    with urllib.request.urlopen(f"{url}api/events", timeout=60) as r:
        event = None
        for raw in r:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "hello":
                    ready.set()
            elif line.startswith("data:") and event != "hello":
                out.append((event, json.loads(line[5:])))
                if event in until:
                    return


def _listen(url: str) -> tuple[threading.Thread, list]:
    out, ready = [], threading.Event()
    thread = threading.Thread(target=_events, args=(url, {"done", "cancelled", "error"}, out, ready), daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread, out


def test_page_static_files_and_safety(server):
    status, page, headers = request(server)
    assert status == 200 and b"/static/app.js" in page and "content-security-policy" in headers
    assert request(f"{server}static/app.js")[0] == 200
    for bad in ("static/..%2fserver.py", "static/../state.py", "static/index.html.bak", "api/../pyproject.toml"):
        assert request(server + bad)[0] == 404, bad
    assert request(server, headers={"Host": "evil.example:8765"})[0] == 403
    assert post(f"{server}api/commit", headers={"Origin": "http://evil.example"})[0] == 403
    status, body = post(f"{server}api/commit", b"{}", content_type="text/plain")
    assert status == 400 and "application/json" in body["error"]
    # an oversized body is refused from its declared length, before it is read
    host, port = server.split("//")[1].strip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/api/scribble")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10**9))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


def test_strokes_in_masks_out_as_the_python_api(server, state, make_session):
    assert post(f"{server}api/scribble", {"frame": 0, "strokes": OBJ1, "object_id": 1})[0] == 200
    assert post(f"{server}api/scribble", {"frame": 0, "strokes": OBJ2, "object_id": 2})[0] == 200
    status, info = post(f"{server}api/click", {"frame": 0, "point": [10, 10], "object_id": 1, "positive": False})
    assert status == 200 and info["open"]["frame"] == 0 and len(info["open"]["strokes"]) == 5
    status, info = post(f"{server}api/brush", {"frame": 3, "strokes": BG, "object_id": 2, "size": 5})
    assert status == 200 and info["pending"] == [0, 3] and info["can_undo"]

    ref = make_session()
    ref.scribble(0, OBJ1, 1)
    ref.scribble(0, OBJ2, 2)
    ref.click(0, (10, 10), 1, positive=False)
    ref.brush(3, BG, 2, 5)
    for t in range(8):
        assert np.array_equal(labels(server, t, SIZE), ref.labels(t))
    assert {1, 2} <= set(np.unique(ref.labels(0)))
    # undo / redo
    assert post(f"{server}api/undo")[0] == 200
    assert np.array_equal(labels(server, 3, SIZE), np.zeros(SIZE, np.uint8))
    assert post(f"{server}api/redo")[0] == 200
    assert np.array_equal(labels(server, 3, SIZE), ref.labels(3))
    assert np.array_equal(replay(make_session(), state.log), ref.masks())


@pytest.mark.parametrize(("path", "body", "message"), [
    ("scribble", {"frame": 8, "strokes": OBJ1, "object_id": 1}, "frame 8 is outside 0..7"),
    ("scribble", {"frame": 0, "strokes": [[[128, 3]]], "object_id": 1}, "outside the 128x96 frame"),
    ("scribble", {"frame": 0, "strokes": OBJ1, "object_id": 3}, "unknown object id 3"),
    ("scribble", {"frame": 0, "strokes": [], "object_id": 1}, "non-empty"),
    ("scribble", {"frame": 0, "strokes": OBJ1}, "object_id"),
    ("scribble", {"frame": 0, "strokes": OBJ1, "object_id": 1, "path": "/etc"}, "unexpected field"),
    ("brush", {"frame": 0, "strokes": OBJ1, "object_id": 1, "size": 1000}, "brush size"),
    ("propagate", {}, "nothing to propagate"),
    ("objects/7", {"name": "x"}, "unknown object id 7"),
])
def test_bad_requests_are_one_line_400s(server, path, body, message):
    status, out = post(f"{server}api/{path}", body)
    assert status == 400 and message in out["error"] and "\n" not in out["error"]


def test_propagation_streams_progress_and_equals_the_api(server, state, make_session):
    post(f"{server}api/scribble", {"frame": 2, "strokes": OBJ1, "object_id": 1})
    post(f"{server}api/scribble", {"frame": 2, "strokes": OBJ2, "object_id": 2})
    thread, events = _listen(server)
    status, info = post(f"{server}api/propagate", {"frame": 2})
    assert status == 202 and info["job"]["state"] == "running"
    thread.join(60)
    kinds = [e for e, _ in events]
    assert kinds[-1] == "done" and kinds.count("progress") == 7
    assert [d["done"] for e, d in events if e == "progress"] == list(range(1, 8))
    status, info = post(f"{server}api/info", method="GET", content_type="application/json")
    assert info["job"]["state"] == "done" and info["pending"] == []
    # a correction, propagated again
    post(f"{server}api/scribble", {"frame": 6, "strokes": BG, "object_id": 0})
    thread, events = _listen(server)
    post(f"{server}api/propagate", {})
    thread.join(60)
    assert events[-1][0] == "done"

    ref = make_session()
    ref.scribble(2, OBJ1, 1)
    ref.scribble(2, OBJ2, 2)
    ref.propagate(2)
    ref.scribble(6, BG, 0)
    expected = ref.propagate(6)
    assert np.array_equal(np.stack([labels(server, t, SIZE) for t in range(8)]), expected)
    assert [e["op"] for e in state.log] == ["scribble", "scribble", "propagate", "scribble", "propagate"]


def test_busy_and_cancel(server, state):
    post(f"{server}api/scribble", {"frame": 0, "strokes": OBJ1, "object_id": 1})
    before = state.session.masks()
    started, release = threading.Event(), threading.Event()
    progress = state._progress

    def slow(done, total):  # hold the propagation after its first frame
        progress(done, total)
        started.set()
        release.wait(30)

    state._progress = slow
    thread, events = _listen(server)
    assert post(f"{server}api/propagate", {"frame": 0})[0] == 202
    assert started.wait(30)
    status, out = post(f"{server}api/scribble", {"frame": 1, "strokes": OBJ1, "object_id": 1})
    assert status == 409 and "busy" in out["error"]
    assert request(f"{server}api/labels/3")[0] == 200  # reads never wait
    assert post(f"{server}api/cancel")[1] == {"cancelled": True}
    release.set()
    thread.join(30)
    assert events[-1][0] == "cancelled"
    assert np.array_equal(state.session.masks(), before) and state.session.pending_frames == [0]
    assert post(f"{server}api/cancel")[1] == {"cancelled": False}


def test_import_mask_and_save(server, state, clip, tmp_path):
    buf = io.BytesIO()
    Image.fromarray(clip.labels[4]).save(buf, format="PNG")
    status, info = post(f"{server}api/masks/4", buf.getvalue(), content_type="image/png")
    assert status == 200 and info["pending"] == [4]
    assert np.array_equal(labels(server, 4, SIZE), clip.labels[4])
    status, out = post(f"{server}api/masks/4", b"not a png", content_type="image/png")
    assert status == 400 and "PNG" in out["error"]
    bad = io.BytesIO()
    Image.fromarray(np.full(SIZE, 5, np.uint8)).save(bad, format="PNG")
    assert "ids 0..2" in post(f"{server}api/masks/4", bad.getvalue(), content_type="image/png")[1]["error"]

    thread, _ = _listen(server)
    post(f"{server}api/propagate", {})
    thread.join(60)
    status, out = post(f"{server}api/save", {"overlay": True})
    assert status == 200 and out["count"] == 8
    saved = np.stack([load_label_png(tmp_path / "out" / "masks" / f"{t:05d}.png") for t in range(8)])
    assert np.array_equal(saved, state.session.masks())
    assert (tmp_path / "out" / "overlay.mp4").stat().st_size > 0
    log = json.loads((tmp_path / "out" / "interactions.json").read_text())
    assert [e["op"] for e in log] == ["set_mask", "propagate"]


def test_objects_add_rename_colour(server, state):
    status, info = post(f"{server}api/objects/2", {"name": "dog", "colour": 7})
    assert status == 200 and info["objects"][1] == {"id": 2, "name": "dog", "colour": 7}
    status, info = post(f"{server}api/objects")
    assert status == 200 and len(info["objects"]) == 3 and state.session.num_objects == 3
    post(f"{server}api/scribble", {"frame": 0, "strokes": OBJ1, "object_id": 3})
    status, out = post(f"{server}api/objects")
    assert status == 400 and "before the first interaction" in out["error"]


def test_cli_is_registered_and_reports_mistakes(tmp_path, capsys):
    from stcn.cli import main

    with pytest.raises(SystemExit):
        main(["ui", "--help"])
    assert "--s2m" in capsys.readouterr().out
    assert main(["ui", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.strip().startswith("stcn: error: input not found")
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(frames / "00000.png")
    assert main(["ui", str(frames), "--s2m", str(tmp_path / "nope.pth")]) == 2
    assert "--s2m: checkpoint not found" in capsys.readouterr().err
