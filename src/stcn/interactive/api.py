"""The high-level interactive API: one stateful session for scripts and the browser UI.

    session = InteractiveSession(prop_net, s2m, fusion, frames, num_objects=2)  # frames: T x H x W x 3 uint8
    session.scribble(0, [[(30, 40), (60, 42)]], object_id=1)   # S2M on frame 0 -> its (H, W) label map
    session.scribble(0, [[(5, 5), (20, 8)]], object_id=0)      # background strokes refine the same mask
    labels = session.propagate(0)                              # (T, H, W) label maps
    session.click(5, (64, 30), object_id=2)                    # correct frame 5, then propagate again
    session.undo()

Built on the low-level pieces, nothing re-implemented: strokes are rasterised by
:class:`stcn.interactive.scribbles.ScribbleInteraction` (GUI rules: OpenCV lines of thickness 3 on the
true-size canvas) and S2M runs through it; the brush is :func:`stcn.interactive.scribbles.free_hand`;
propagation is :meth:`stcn.interactive.propagation.InteractivePropagation.interact`.

Interactions. Every frame may hold one *pending* interaction result: the (K+1, 1, H, W) mask that the
next :meth:`propagate` from that frame sends to ``InteractivePropagation.interact``; its argmax is shown at once
(``update_mask_only``). Scribble and click strokes accumulate in one open S2M interaction (MiVOS's
scribble interaction: every call re-runs S2M with all strokes of the interaction against the label map
frozen when it started); :meth:`commit`, a brush stroke, :meth:`set_mask`, :meth:`propagate` or
strokes on another frame close it, so later strokes refine the new mask. Propagation consumes the
pending result of its frame and drops those of other frames (their label maps are overwritten by the
propagation, as in MiVOS, which keeps one interaction).

Clicks: MiVOS sends clicks to f-BRS (a separate network, not rebuilt here). A click is encoded as a
short S2M stroke instead: a cross of two segments of ``CLICK_RADIUS`` px around the point (positive:
the object's id, negative: background).

Every mutating call is one undo step (at most ``history``). A propagation step keeps the previous
probabilities of the frames it changed only.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from stcn.errors import UserError
from stcn.inference.preprocess import unpad
from stcn.interactive.aggregate import aggregate_sbg
from stcn.interactive.propagation import InteractivePropagation
from stcn.interactive.scribbles import (
    SCRIBBLE_THICKNESS,
    ScribbleInteraction,
    free_hand,
)

CLICK_RADIUS = 2  # px: a click is a cross of two 5-px segments (thickness 3) on the S2M canvas
BRUSH_SIZES = (1, 100)  # MiVOS's free-hand slider
MAX_POINTS = 100_000
S2M_COMMAND = "stcn weights download s2m"  # what enables scribbles and clicks when S2M is absent
FUSION_COMMAND = "stcn weights download fusion"  # points in one call, all strokes together

Point = tuple[float, float]
ProgressCallback = Callable[[int, int], None]  # (frames done, frames to do)


class PropagationCancelled(Exception):
    """Raised by :meth:`InteractiveSession.propagate` when its ``cancel`` event was set; the session
    is left exactly as before the call."""


@dataclass
class _Snapshot:
    """What an undo step restores. ``frames``: label maps (and, for a propagation, probabilities) of
    these frames; the interaction state is always kept (it is small)."""

    masks: dict[int, torch.Tensor]
    prob: dict[int, torch.Tensor] | None = None  # only for propagation steps
    interacted: set[int] = field(default_factory=set)
    certain: list = field(default_factory=list)
    trace: list = field(default_factory=list)
    open: tuple[int, torch.Tensor, list] | None = None  # (frame, frozen labels, strokes)
    pending: dict[int, torch.Tensor] = field(default_factory=dict)
    last: int | None = None


class InteractiveSession:
    """A stateful interactive segmentation of one video (MiVOS's GUI logic without the GUI).

    Args:
        prop_net: the STCN network (:func:`stcn.load_model`).
        s2m: the S2M network (:func:`stcn.interactive.load_s2m`), or None: then brush, eraser and
            :meth:`set_mask` work and :meth:`scribble` / :meth:`click` raise a UserError naming the
            command that gets S2M (the browser UI's offline mode with the demo model).
        fusion: the FusionNet (:func:`stcn.interactive.load_fusion`), or None to overwrite instead of fusing.
        frames: the video, T x H x W x 3 uint8 (array or sequence of arrays).
        num_objects: K (object ids 1..K; 0 = background).
        history: undo steps kept.
        mem_every, top_k, precision: passed to :class:`InteractivePropagation` (precision: the propagation
            network's: ``"auto"`` by default, as `stcn ui`; ``"fp32"`` is exact).

    Strokes are point lists ``[(x, y), ...]`` in image coordinates at the true size (0 <= x <= W - 1,
    0 <= y <= H - 1); bad input raises :class:`stcn.errors.UserError`.
    """

    def __init__(
        self,
        prop_net: torch.nn.Module,
        s2m: torch.nn.Module | None,
        fusion: torch.nn.Module | None,
        frames,
        num_objects: int,
        *,
        history: int = 50,
        mem_every: int = 5,
        top_k: int = 20,
        precision: str = "auto",
    ) -> None:
        if int(num_objects) < 1:
            raise UserError(f"num_objects must be at least 1, got {num_objects}")
        self.vos = InteractivePropagation(prop_net, fusion, frames, int(num_objects), mem_every=mem_every, top_k=top_k,
                                          precision=precision)
        self.s2m = s2m.eval() if s2m is not None else None
        self.history = max(1, int(history))
        self._open: tuple[int, ScribbleInteraction] | None = None
        self._pending: dict[int, torch.Tensor] = {}  # frame -> (K+1, 1, H, W) at the true size
        self._last: int | None = None  # the frame of the latest interaction
        self._undo: list[_Snapshot] = []
        self._redo: list[_Snapshot] = []

    # ---- properties ---------------------------------------------------------------------------------
    @property
    def num_frames(self) -> int:
        return self.vos.num_frames

    @property
    def num_objects(self) -> int:
        return self.vos.num_objects

    @property
    def size(self) -> tuple[int, int]:
        """The true (H, W)."""
        return tuple(self.vos.size)

    @property
    def last_frame(self) -> int | None:
        """The frame of the latest interaction (None before any)."""
        return self._last

    @property
    def pending_frames(self) -> list[int]:
        """Frames holding an interaction not propagated yet."""
        return sorted(self._pending)

    @property
    def open_strokes(self) -> tuple[int, list] | None:
        """(frame, [(object id, points), ...]) of the open S2M interaction, or None."""
        if self._open is None:
            return None
        return self._open[0], list(self._open[1].strokes)

    @property
    def has_s2m(self) -> bool:
        """Whether scribbles and clicks are available (an S2M network was given)."""
        return self.s2m is not None

    @property
    def fused(self) -> bool:
        """Whether propagation fuses with FusionNet (False: the new result overwrites the old)."""
        return self.vos.fusion is not None

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def labels(self, frame: int) -> np.ndarray:
        """(H, W) uint8 label map of ``frame`` as it is shown now."""
        t = self._frame(frame)
        return unpad(self.vos.masks[t], self.vos.pad).cpu().numpy().copy()  # the core changes masks in place

    def masks(self) -> np.ndarray:
        """(T, H, W) uint8 label maps of all frames."""
        return self.vos.labels.copy()

    # ---- validation ---------------------------------------------------------------------------------
    def _frame(self, frame) -> int:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise UserError(f"frame must be an integer, got {frame!r}")
        if not 0 <= int(frame) < self.num_frames:
            raise UserError(f"frame {frame} is outside 0..{self.num_frames - 1}")
        return int(frame)

    def _object(self, object_id) -> int:
        if isinstance(object_id, bool) or not isinstance(object_id, (int, np.integer)):
            raise UserError(f"object id must be an integer, got {object_id!r}")
        if not 0 <= int(object_id) <= self.num_objects:
            raise UserError(f"unknown object id {object_id}: expected 0 (background) .. {self.num_objects}")
        return int(object_id)

    def _point(self, p) -> Point:
        h, w = self.size
        try:
            x, y = (float(v) for v in p)
        except (TypeError, ValueError):
            raise UserError(f"a point must be a pair of numbers (x, y), got {p!r}") from None
        if not (math.isfinite(x) and math.isfinite(y) and 0 <= x <= w - 1 and 0 <= y <= h - 1):
            raise UserError(f"point ({x:g}, {y:g}) is outside the {w}x{h} frame")
        return x, y

    def _strokes(self, strokes) -> list[list[Point]]:
        if isinstance(strokes, (str, bytes)) or not isinstance(strokes, Sequence) or not strokes:
            raise UserError("strokes must be a non-empty list of point lists")
        out = []
        for s in strokes:
            if isinstance(s, (str, bytes)) or not isinstance(s, Sequence) or len(s) == 0:
                raise UserError("every stroke needs at least one point")
            out.append([self._point(p) for p in s])
        if sum(map(len, out)) > MAX_POINTS:
            raise UserError(f"too many points in one call (at most {MAX_POINTS})")
        return out

    def _need_s2m(self, what: str) -> None:
        # refused before anything is recorded, so a refused call leaves no undo step behind
        if self.s2m is None:
            raise UserError(f"{what} need the S2M network, which is not loaded: run `{S2M_COMMAND}` "
                            "(then restart stcn ui, or pass --s2m PATH)")

    # ---- interactions -------------------------------------------------------------------------------
    def scribble(self, frame: int, strokes: Sequence[Sequence[Point]], object_id: int) -> np.ndarray:
        """Add strokes of ``object_id`` (0 = background) to the open S2M interaction of ``frame`` and
        re-run S2M with all of its strokes. Returns the frame's (H, W) label map (not propagated)."""
        self._need_s2m("scribbles")
        t, k, strokes = self._frame(frame), self._object(object_id), self._strokes(strokes)
        self._record([t])
        self._add_strokes(t, [(k, s) for s in strokes])
        return self.labels(t)

    def click(self, frame: int, point: Point, object_id: int, positive: bool = True) -> np.ndarray:
        """A click at ``point`` = (x, y): a short S2M stroke (a cross of ``CLICK_RADIUS`` px) of
        ``object_id`` when positive, of the background when negative. MiVOS uses f-BRS for clicks."""
        self._need_s2m("clicks")
        t, k = self._frame(frame), self._object(object_id)
        x, y = self._point(point)
        h, w = self.size
        r = CLICK_RADIUS
        cross = [[(max(x - r, 0), y), (min(x + r, w - 1), y)], [(x, max(y - r, 0)), (x, min(y + r, h - 1))]]
        self._record([t])
        self._add_strokes(t, [(k if positive else 0, s) for s in cross])
        return self.labels(t)

    def brush(self, frame: int, strokes: Sequence[Sequence[Point]], object_id: int, size: int) -> np.ndarray:
        """Free-hand painting (MiVOS's "Free"): under the brush of diameter ``size`` px (1..100) the
        object's probability becomes 1 and the others' 0 (object 0 = eraser: all become 0, i.e.
        background). Paints on the frame's pending result, else on its propagated probabilities; the
        result is the soft simple-background aggregation (aggregate_sbg). Returns the (H, W) labels."""
        t, k, strokes = self._frame(frame), self._object(object_id), self._strokes(strokes)
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not (
                BRUSH_SIZES[0] <= size <= BRUSH_SIZES[1]):
            raise UserError(f"brush size must be an integer in {BRUSH_SIZES[0]}..{BRUSH_SIZES[1]}, got {size!r}")
        self._record([t])
        self._open = None
        base = self._pending.get(t)
        if base is None:
            base = unpad(self.vos.prob[:, t], self.vos.pad)
        painted = free_hand(base[1:].cpu().numpy(), [(k, s) for s in strokes], thickness=int(size))
        self._set_pending(t, aggregate_sbg(torch.from_numpy(painted), keep_bg=True))
        return self.labels(t)

    def erase(self, frame: int, strokes: Sequence[Sequence[Point]], size: int) -> np.ndarray:
        """The eraser: :meth:`brush` with the background."""
        return self.brush(frame, strokes, 0, size)

    def set_mask(self, frame: int, label_map) -> np.ndarray:
        """Replace the frame's mask by an (H, W) label map of ids 0..K (drawn by hand or imported); it
        becomes the frame's pending interaction (one-hot)."""
        t = self._frame(frame)
        m = np.asarray(label_map)
        if m.shape != self.size:
            raise UserError(f"the mask is {'x'.join(map(str, m.shape))} but frames are "
                            f"{self.size[0]}x{self.size[1]} (H x W)")
        if not np.issubdtype(m.dtype, np.integer) or m.min() < 0 or m.max() > self.num_objects:
            raise UserError(f"the mask must hold integer ids 0..{self.num_objects}")
        ids = torch.arange(self.num_objects + 1).view(-1, 1, 1, 1)
        one_hot = (torch.from_numpy(m.astype(np.int64))[None, None] == ids).float()  # (K+1, 1, H, W)
        self._record([t])
        self._open = None
        self._set_pending(t, one_hot)
        return self.labels(t)

    def commit(self) -> None:
        """Close the open S2M interaction: later strokes start a new one against the current mask."""
        if self._open is not None:
            self._record([])
            self._open = None

    def propagate(
        self,
        frame: int | None = None,
        *,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> np.ndarray:
        """Propagate the pending interaction of ``frame`` (default: the latest interaction's frame)
        through the video (``InteractivePropagation.interact``: forward and backward to the nearest interacted
        frames, fusing in between). ``progress(done, total)`` is called after each propagated frame;
        setting ``cancel`` stops between frames and raises :class:`PropagationCancelled` with the
        session unchanged. Returns the (T, H, W) uint8 label maps."""
        t = self._last if frame is None else self._frame(frame)
        if t is None or t not in self._pending:
            where = "any frame" if t is None else f"frame {t}"
            raise UserError(f"nothing to propagate: {where} has no new interaction (draw on it first)")
        before = self._snapshot(range(self.num_frames), with_vos=True)
        try:
            total = self.vos.frames_to_propagate(t)
            labels = self.vos.interact(self._pending[t], t, on_frame=self._observer(progress, cancel, total))
            if progress is not None:
                progress(total, total)
        except BaseException:
            self._restore(before)
            raise
        self._open = None
        self._pending = {}
        self._last = t
        self._push(self._compress(before))
        return labels.copy()

    # ---- undo / redo --------------------------------------------------------------------------------
    def undo(self) -> bool:
        """Undo the latest step (returns False when there is none)."""
        return self._swap(self._undo, self._redo)

    def redo(self) -> bool:
        """Redo the latest undone step (returns False when there is none)."""
        return self._swap(self._redo, self._undo)

    # ---- internals ----------------------------------------------------------------------------------
    def _add_strokes(self, t: int, strokes: list[tuple[int, list[Point]]]) -> None:
        if self._open is None or self._open[0] != t:
            self._open = (t, ScribbleInteraction(self.vos.masks[t], self.size, self.vos.pad, self.num_objects,
                                                 thickness=SCRIBBLE_THICKNESS))
        inter = self._open[1]
        for k, points in strokes:
            inter.add_stroke(k, points)
        mask = inter.predict(self.s2m, self.vos.images[t:t + 1])  # (K+1, 1, Hp, Wp)
        # MiVOS shows and propagates the un-padded result (the core pads it again with zeros)
        self._set_pending(t, unpad(mask, self.vos.pad))

    def _set_pending(self, t: int, mask: torch.Tensor) -> None:
        self._pending[t] = mask.detach().to(self.vos.device, torch.float32)
        self._last = t
        self.vos.update_mask_only(self._pending[t], t)

    @staticmethod
    def _observer(progress: ProgressCallback | None, cancel: threading.Event | None, total: int):
        """InteractivePropagation's per-frame hook: stop between frames when ``cancel`` is set, report the
        frames finished so far."""
        done = 0

        def on_frame(_ti: int) -> None:
            nonlocal done
            if cancel is not None and cancel.is_set():
                raise PropagationCancelled("propagation cancelled")
            if progress is not None and done:
                progress(done, total)
            done += 1

        return on_frame

    def _snapshot(self, frames, *, with_vos: bool = False) -> _Snapshot:
        vos = self.vos
        snap = _Snapshot(
            masks={f: vos.masks[f].clone() for f in frames},
            open=None if self._open is None else (self._open[0], self._open[1].prev_labels,
                                                  list(self._open[1].strokes)),
            pending=dict(self._pending),  # tensors are never changed in place: references suffice
            last=self._last,
        )
        if with_vos:
            snap.prob = {f: vos.prob[:, f].clone() for f in frames}
            snap.interacted = set(vos.interacted)
            snap.certain = list(vos.certain.entries)
            snap.trace = list(vos.trace)
        return snap

    def _compress(self, snap: _Snapshot) -> _Snapshot:
        """Keep only the frames a propagation changed (label maps or probabilities)."""
        changed = [f for f in snap.masks if not (torch.equal(snap.masks[f], self.vos.masks[f])
                                                 and torch.equal(snap.prob[f], self.vos.prob[:, f]))]
        snap.masks = {f: snap.masks[f] for f in changed}
        snap.prob = {f: snap.prob[f] for f in changed}
        return snap

    @torch.inference_mode()  # the core's buffers are inference tensors
    def _restore(self, snap: _Snapshot) -> None:
        vos = self.vos
        for f, m in snap.masks.items():
            vos.masks[f] = m
        if snap.prob is not None:
            for f, p in snap.prob.items():
                vos.prob[:, f] = p
            vos.interacted = set(snap.interacted)
            vos.certain.entries = snap.certain  # the bank rebuilds its storage from these entries
            vos.trace[:] = snap.trace
        self._open = None
        if snap.open is not None:
            t, frozen, strokes = snap.open
            inter = ScribbleInteraction(frozen, self.size, self.vos.pad, self.num_objects, thickness=SCRIBBLE_THICKNESS)
            for k, points in strokes:
                inter.add_stroke(k, points)
            self._open = (t, inter)
        self._pending = dict(snap.pending)
        self._last = snap.last

    def _record(self, frames: list[int]) -> None:
        self._push(self._snapshot(frames))

    def _push(self, snap: _Snapshot) -> None:
        self._undo.append(snap)
        del self._undo[:-self.history]
        self._redo.clear()

    def _swap(self, source: list[_Snapshot], target: list[_Snapshot]) -> bool:
        if not source:
            return False
        snap = source.pop()
        target.append(self._snapshot(snap.masks, with_vos=snap.prob is not None))
        self._restore(snap)
        return True
