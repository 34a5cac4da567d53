"""Small HTTP helpers and the replay of a UI interaction log through the Python API."""
from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

NAMES = [f"{t:05d}" for t in range(8)]  # the frame names the UI tests give the 8-frame clip


def request(url: str, body=None, *, content_type: str = "application/json", headers: dict | None = None,
            method: str | None = None) -> tuple[int, bytes, dict]:
    data = json.dumps(body).encode() if content_type == "application/json" and body is not None else body
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        return e.code, e.read(), {k.lower(): v for k, v in e.headers.items()}


def post(url: str, body=None, **kw) -> tuple[int, dict]:
    status, raw, _ = request(url, {} if body is None else body, **kw)
    return status, json.loads(raw)


def labels(base: str, t: int, size: tuple[int, int]) -> np.ndarray:
    status, raw, _ = request(f"{base}api/labels/{t}")
    assert status == 200
    return np.frombuffer(raw, np.uint8).reshape(size)


def replay(session, log: list[dict], masks: dict | None = None) -> np.ndarray:
    """Apply a UI log (UIState.log / interactions.json) to a fresh session; ``masks``: frame -> the
    label maps that were imported. Returns the (T, H, W) label maps."""
    for e in log:
        op = e["op"]
        if op == "scribble":
            session.scribble(e["frame"], e["strokes"], e["object_id"])
        elif op == "click":
            session.click(e["frame"], tuple(e["point"]), e["object_id"], e.get("positive", True))
        elif op == "brush":
            session.brush(e["frame"], e["strokes"], e["object_id"], e["size"])
        elif op == "set_mask":
            session.set_mask(e["frame"], masks[e["frame"]])
        elif op == "propagate":
            session.propagate(e["frame"])
        else:
            getattr(session, op)()
    return session.masks()


def ui_args(tmp_path: Path, *argv: str) -> argparse.Namespace:
    """``stcn ui`` options as the real parser reads them."""
    from stcn.commands.ui import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["ui", str(tmp_path / "synthetic.mp4"), "--objects", "2", "--out",
                              str(tmp_path / "out"), "--device", "cpu", *argv])
