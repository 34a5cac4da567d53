"""What the UI server keeps between requests: the interactive session, the objects' names and colours,
the propagation job (a background thread) and its progress events, and the log of interactions.

Every session call goes through :class:`UIState`, which holds one lock: a request that would change
the session while a propagation (or another change) runs gets :class:`Busy` instead of waiting, so the
server never blocks. Reads (frames, label maps) take no lock.
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from stcn.errors import UserError
from stcn.interactive.api import FUSION_COMMAND, S2M_COMMAND, InteractiveSession, PropagationCancelled
from stcn.io.masks import DAVIS_PALETTE

MAX_OBJECTS = 20
SessionFactory = Callable[[int], InteractiveSession]  # num_objects -> a fresh session


class Busy(Exception):
    """The session is being changed by another request (usually a propagation)."""


@dataclass
class UIObject:
    id: int
    name: str
    colour: int  # index into the DAVIS palette (display and overlay video only; PNGs keep the ids)


class EventHub:
    """Server-sent events to every connected page: threads publish, each page's queue receives."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self._lock = threading.Lock()

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=1000)
        with self._lock:
            self._subscribers.append((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subscribers = [(lp, q) for lp, q in self._subscribers if q is not queue]

    def publish(self, event: str, data: dict) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(_offer, queue, (event, data))
            except RuntimeError:  # the loop has closed: that page is gone
                self.unsubscribe(queue)


def _offer(queue: asyncio.Queue, item) -> None:
    if not queue.full():  # a page that stopped reading loses events instead of growing memory
        queue.put_nowait(item)


class UIState:
    """The server's state for one video.

    Args:
        make_session: builds a fresh :class:`InteractiveSession` for K objects (the same networks and
            frames each time); called once here and again when an object is added before any interaction.
        frames: the video (T, H, W, 3) uint8 as the session sees it (after resizing).
        names: frame names (used for the saved PNGs and to match imported masks).
        num_objects: K to start with.
        out: where :meth:`save` writes.
        fps: frame rate of the overlay video.
        networks: what :meth:`info` reports as loaded: ``{"propagation": name or path, "s2m": ...,
            "fusion": ...}``, None for a network that is absent (default: "STCN", and "S2M" /
            "FusionNet" where the session has them).
    """

    def __init__(self, make_session: SessionFactory, frames: np.ndarray, names: list[str], num_objects: int,
                 out: str | Path, *, fps: float = 24.0, title: str = "",
                 networks: dict[str, str | None] | None = None) -> None:
        if len(names) != len(frames):
            raise ValueError("one name per frame is needed")
        from stcn.guards import check_object_count

        check_object_count(num_objects)  # ids beyond 255 would be saved as 255: refused instead
        self._make_session = make_session
        self.frames = frames
        self.names = list(names)
        self.out = Path(out)
        self.fps = fps
        self.title = title
        self.session = make_session(num_objects)
        default = {"propagation": "STCN", "s2m": "S2M" if self.session.has_s2m else None,
                   "fusion": "FusionNet" if self.session.fused else None}
        self.networks = {**default, **(networks or {})}
        self.objects = [UIObject(k, f"object {k}", k) for k in range(1, num_objects + 1)]
        self.events = EventHub()
        self.log: list[dict] = []  # the interactions in order, replayable through the Python API
        self.version = 0  # bumped on every change, so pages know to fetch label maps again
        self.job = {"state": "idle", "done": 0, "total": 0, "frame": None, "message": ""}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._jpeg: dict[int, bytes] = {}

    # ---- reads --------------------------------------------------------------------------------------
    def info(self) -> dict:
        s = self.session
        h, w = s.size
        open_strokes = s.open_strokes
        return {
            "title": self.title, "num_frames": s.num_frames, "height": h, "width": w, "names": self.names,
            "objects": [o.__dict__ for o in self.objects], "palette": DAVIS_PALETTE[:64].tolist(),
            "version": self.version, "can_undo": s.can_undo, "can_redo": s.can_redo,
            "pending": s.pending_frames, "last_frame": s.last_frame, "job": dict(self.job),
            "open": None if open_strokes is None else {"frame": open_strokes[0], "strokes": open_strokes[1]},
            "out": str(self.out),
            # the page greys out what the loaded networks cannot do and shows the command enabling it
            "networks": dict(self.networks), "fused": s.fused,
            "tools": {"scribble": s.has_s2m, "click": s.has_s2m, "commit": s.has_s2m, "brush": True, "eraser": True,
                      "import": True},
            "enable": {"s2m": S2M_COMMAND, "fusion": FUSION_COMMAND},
        }

    def frame_jpeg(self, t: int) -> bytes:
        t = self.session._frame(t)
        if t not in self._jpeg:
            _ok, data = cv2.imencode(".jpg", cv2.cvtColor(self.frames[t], cv2.COLOR_RGB2BGR),
                                    [cv2.IMWRITE_JPEG_QUALITY, 92])
            self._jpeg[t] = data.tobytes()
        return self._jpeg[t]

    def labels(self, t: int) -> bytes:
        """Frame t's label map as H*W raw bytes (row-major uint8)."""
        return self.session.labels(t).tobytes()

    # ---- changes ------------------------------------------------------------------------------------
    def _locked(self, op: Callable[[], object], entry: dict | None):
        if not self._lock.acquire(blocking=False):
            raise Busy("busy: a propagation is running (cancel it or wait)")
        try:
            result = op()
            if entry is not None:
                self.log.append(entry)
            self.version += 1
            return result
        finally:
            self._lock.release()

    def apply(self, op: str, **kwargs) -> None:
        """One session call by name (scribble, click, brush, set_mask, commit, undo, redo)."""
        if op == "commit":  # it closes an S2M interaction: without S2M there is none, and the page disables it
            self.session._need_s2m("commits")
        method = {"scribble": self.session.scribble, "click": self.session.click, "brush": self.session.brush,
                  "set_mask": self.session.set_mask, "commit": self.session.commit,
                  "undo": self.session.undo, "redo": self.session.redo}[op]
        # the log keeps what a script needs to replay the call; an imported mask is only named
        entry = {"op": op, **{k: v for k, v in kwargs.items() if k != "label_map"}}
        self._locked(lambda: method(**kwargs), entry)

    def add_object(self) -> None:
        """Add object K+1. The networks' K is fixed once something was drawn, so this works only on an
        untouched session (it is rebuilt with K+1 objects)."""
        def op():
            s = self.session
            if s.can_undo or s.can_redo or s.pending_frames or s.vos.interacted:
                raise UserError("objects can only be added before the first interaction "
                                "(or start `stcn ui` with --objects N)")
            if s.num_objects >= MAX_OBJECTS:
                raise UserError(f"at most {MAX_OBJECTS} objects")
            self.session = self._make_session(s.num_objects + 1)
            k = self.session.num_objects
            self.objects.append(UIObject(k, f"object {k}", k))
        self._locked(op, None)

    def edit_object(self, object_id: int, name: str | None = None, colour: int | None = None) -> None:
        matches = [o for o in self.objects if o.id == object_id]
        if not matches:
            raise UserError(f"unknown object id {object_id}")
        if name is not None:
            if not isinstance(name, str):  # {"a": 1} would be stored stringified
                raise UserError("an object name must be a string")
            name = name.strip()
            if not name or len(name) > 60:
                raise UserError("an object name needs 1..60 characters")
            matches[0].name = name
        if colour is not None:
            if isinstance(colour, bool) or not isinstance(colour, int) or not 1 <= colour <= 255:
                raise UserError("colour must be a DAVIS palette index 1..255")
            matches[0].colour = colour
        self.version += 1

    # ---- propagation --------------------------------------------------------------------------------
    def start_propagation(self, frame: int | None) -> None:
        """Start propagating in a background thread; progress goes to :attr:`events`."""
        if not self._lock.acquire(blocking=False):
            raise Busy("busy: a propagation is running (cancel it or wait)")
        try:
            t = self.session.last_frame if frame is None else self.session._frame(frame)
            if t is None or t not in self.session.pending_frames:
                where = "any frame" if t is None else f"frame {t}"
                raise UserError(f"nothing to propagate: {where} has no new interaction (draw on it first)")
            self._cancel.clear()
            self.job = {"state": "running", "done": 0, "total": 0, "frame": t, "message": ""}
            threading.Thread(target=self._propagate, args=(t,), name="stcn-ui-propagate", daemon=True).start()
        except BaseException:
            self._lock.release()
            raise

    def cancel(self) -> bool:
        """Ask a running propagation to stop; True if one was running."""
        running = self.job["state"] == "running"
        if running:
            self._cancel.set()
        return running

    def _progress(self, done: int, total: int) -> None:
        self.job.update(done=done, total=total)
        self.events.publish("progress", dict(self.job))

    def _propagate(self, t: int) -> None:
        try:
            self.session.propagate(t, progress=self._progress, cancel=self._cancel)
            self.log.append({"op": "propagate", "frame": t})
            self.version += 1
            self.job.update(state="done", message=f"propagated from frame {t}")
        except PropagationCancelled:
            self.job.update(state="cancelled", message="propagation cancelled: nothing changed")
        except Exception as exc:  # noqa: BLE001 - reported to the page, the server keeps running
            self.job.update(state="error", message=f"propagation failed: {exc}")
        finally:
            self._lock.release()
            self.events.publish(self.job["state"], {**self.job, "version": self.version})

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no change is running (tests and scripts); True if it became free."""
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            return False
        self._lock.release()
        return True

    # ---- save ---------------------------------------------------------------------------------------
    def save(self, *, overlay: bool = False) -> dict:
        """Write ``out/masks/<frame name>.png`` (DAVIS palette, pixel = object id) for every frame,
        ``out/interactions.json`` (the log) and, with ``overlay``, ``out/overlay.mp4`` (objects in their
        display colours). Returns what was written."""
        def op():
            from stcn.io.files import staged_files
            from stcn.io.writers import LabelWriter, OverlayWriter  # PyAV is imported only here

            masks = self.session.masks()
            folder = self.out / "masks"
            written = {"masks": str(folder), "count": len(masks), "log": str(self.out / "interactions.json")}
            # all or nothing: everything is written aside, then renamed into place (undone on failure),
            # so a full disk or an unwritable interactions.json never leaves masks/ half rewritten
            with staged_files(self.out) as stage:
                (stage / "masks").mkdir()
                with LabelWriter(stage / "masks") as writer:
                    for name, labels in zip(self.names, masks):
                        writer.write(name, labels)
                (stage / "interactions.json").write_text(json.dumps(self.log, indent=1))
                if overlay:
                    palette = DAVIS_PALETTE.copy()
                    for o in self.objects:
                        palette[o.id] = DAVIS_PALETTE[o.colour]
                    h, w = self.session.size
                    with OverlayWriter(stage / "overlay.mp4", width=w, height=h, fps=self.fps,
                                       palette=palette) as video:
                        for frame, labels in zip(self.frames, masks):
                            video.write(frame, labels)
                    written["overlay"] = str(self.out / "overlay.mp4")
            return written
        return self._locked(op, None)
