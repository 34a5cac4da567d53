"""The whole-video API beside :meth:`InferenceCore.step`: :func:`segment_video`, a generator of
per-frame results (in the spirit of SAM2's ``propagate_in_video``).

    >>> import stcn
    >>> model = stcn.load_model("demo")
    >>> for r in stcn.segment_video("frames/", "annotations/", model=model):
    ...     r.name, r.labels                                  # "00000", HxW uint8 object ids

``stcn segment``, the benchmark-set runners, ``stcn demo``, synthetic validation and the benchmarks
all drive it. The per-frame loop lives in :func:`_propagate` only; it runs once per pass, forwards or
backwards (``direction="both"``, the default: :func:`plan_directions` says which pass writes which frame).
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from stcn.errors import DataError, UserError
from stcn.inference.inference_core import InferenceCore
from stcn.inference.options import EngineOptions
from stcn.io.frames import VideoInfo, frame_name, iter_frames, probe, read_rgb

__all__ = ["DIRECTIONS", "FrameResult", "segment_video", "plan_directions", "VideoLike", "MasksLike"]

#: ``both``: propagate forwards and backwards from the annotated frames (the default); ``forward``: forwards
#: only, frames before the first annotation are background (the original).
DIRECTIONS = ("both", "forward")

#: A frame folder or video file, an array (T, H, W, 3) uint8, a sequence of HxWx3 arrays or of image files.
VideoLike = Union[str, os.PathLike, np.ndarray, Sequence]
#: ``{frame index or name: HxW ids}`` (or ``(ids, objects)``), or a mask PNG / folder of PNGs named after frames.
MasksLike = Union[Mapping, str, os.PathLike]


@dataclass
class FrameResult:
    """One frame of :func:`segment_video`.

    index: the frame's position in the video. name: its name (file stem, or ``00000``...). labels: HxW
    object ids at the input size (uint8 when ids fit), probs: (K+1, H, W) float32 probabilities on the
    engine's device (channel 0 background, channel i ``object_ids[i-1]``); both None for a frame whose
    output was not asked for. image: the decoded HxWx3 frame (for overlays). seconds: engine time for
    this frame (step and labels, no I/O). engine: the :class:`InferenceCore` of the pass that computed it
    (its memory and settings). direction: that pass, ``"forward"`` or ``"backward"``.
    """

    index: int
    name: str
    labels: np.ndarray | None
    probs: torch.Tensor | None
    object_ids: tuple[int, ...]
    image: np.ndarray | None
    seconds: float
    engine: InferenceCore
    direction: str = "forward"  # the pass that computed it: "forward" or "backward"


@dataclass
class _Frames:
    """Frames as (name, loader) pairs: a loader decodes only when the engine computes the frame.

    ``source(start, reverse)`` gives the loaders of frames ``start, start+1, ...`` (or ``start,
    start-1, ..., 0`` with ``reverse``), so a pass can begin anywhere without decoding what it skips
    when the source allows it (frame folders, lists); a video file decodes from its start forwards, or
    in chunks from ``start`` backwards (:func:`stcn.io.reverse.iter_frames_reversed`)."""

    names: list[str]
    source: Callable[[int, bool], Iterator[Callable[[], np.ndarray]]]
    info: VideoInfo | None = None

    @property
    def num_frames(self) -> int:
        return len(self.names)


def _frames(video: VideoLike, reverse_chunk_bytes: int | None = None) -> _Frames:
    if isinstance(video, VideoInfo) or isinstance(video, (str, os.PathLike)):
        info = video if isinstance(video, VideoInfo) else probe(video)

        def decoded(start: int, reverse: bool) -> Iterator[Callable[[], np.ndarray]]:
            if reverse:
                from stcn.io.reverse import DEFAULT_CHUNK_BYTES, iter_frames_reversed

                reader = iter_frames_reversed(info, start=start, chunk_bytes=reverse_chunk_bytes or DEFAULT_CHUNK_BYTES)
            elif start and info.kind == "frames":  # a folder starts at its file: nothing before it is read
                reader = iter_frames(dataclasses.replace(info, names=info.names[start:], files=info.files[start:]))
            else:
                reader = iter_frames(info)
            try:
                for index, (_, frame) in enumerate(reader):
                    if index == 0 and frame.shape[:2] != (info.height, info.width):
                        h, w = frame.shape[:2]
                        raise DataError(f"{info.path}: the first frame decodes to {w}x{h}, but the file says "
                                        f"{info.width}x{info.height}")
                    if not reverse and info.kind == "video" and index < start:
                        continue  # a video file decodes from its start
                    yield lambda frame=frame: frame
            finally:
                reader.close()

        return _Frames(list(info.names), decoded, info)
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"a video array must be (T, H, W, 3) uint8, got shape {video.shape}")
    items = list(video)
    names = [Path(v).stem if isinstance(v, (str, os.PathLike)) else frame_name(i) for i, v in enumerate(items)]

    def listed(start: int, reverse: bool) -> Iterator[Callable[[], np.ndarray]]:
        order = items[start::-1] if reverse else items[start:]
        return ((lambda v=v: read_rgb(v)) if isinstance(v, (str, os.PathLike)) else (lambda v=v: np.asarray(v))
                for v in order)

    return _Frames(names, listed)


def plan_directions(num_frames: int, annotated: Collection[int], direction: str = "both") -> list[str]:
    """Which pass writes each frame: ``"forward"`` or ``"backward"``, one entry per frame.

    ``forward``: every frame from the forward pass (frames before the first annotation are background).
    ``both``: a frame before the first annotated frame comes from the backward pass, one after the last
    from the forward pass; a frame between two annotated frames ``a < t < b`` comes from the pass whose
    annotation is nearer (backward when ``b - t < t - a``; a tie, and every annotated frame, goes to the
    forward pass, so that one annotation at frame 0 gives exactly the forward result).
    """
    if direction not in DIRECTIONS:
        raise UserError(f"--direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    marks = sorted(set(int(t) for t in annotated))
    if direction == "forward" or not marks:
        return ["forward"] * num_frames
    plan = []
    j = 0  # marks[j] is the first annotated frame > t (or len(marks) when none)
    for t in range(num_frames):
        while j < len(marks) and marks[j] <= t:
            j += 1
        if j == 0:
            plan.append("backward")
        elif j == len(marks):
            plan.append("forward")
        else:
            before, after = marks[j - 1], marks[j]
            plan.append("backward" if after - t < t - before else "forward")
    return plan


def _masks(masks: MasksLike, frames: _Frames, warn: Callable[[str], None] | None) -> dict[int, tuple]:
    """``{frame index: (HxW ids, objects or None)}`` from a mapping or a PNG / folder of PNGs."""
    if isinstance(masks, (str, os.PathLike)):
        from stcn.io.masks import match_masks, read_masks

        info = frames.info or VideoInfo(Path("<video>"), "frames", tuple(frames.names), 0, 0)
        if frames.info is None:  # sizes are checked by the engine for in-memory frames
            first = next(iter(read_masks(masks).values()))[0]
            info = VideoInfo(info.path, "frames", info.names, first.shape[1], first.shape[0])
        matched, _ = match_masks(read_masks(masks), info, Path(masks), warn)
        index = {n: i for i, n in enumerate(frames.names)}
        return {index[name]: (labels, ids) for name, (labels, ids) in matched.items()}
    index = {n: i for i, n in enumerate(frames.names)}
    out: dict[int, tuple] = {}
    for key, value in masks.items():
        t = key if isinstance(key, (int, np.integer)) else index.get(str(key))
        if t is None or not 0 <= int(t) < frames.num_frames:
            raise UserError(f"mask for frame {key!r}: the video has no such frame ({frames.num_frames} frames)")
        out[int(t)] = value if isinstance(value, tuple) else (value, None)
    return out


def segment_video(
    video: VideoLike,
    masks: MasksLike,
    *,
    model: torch.nn.Module | InferenceCore,
    options: EngineOptions | None = None,
    outputs: Collection[int] | None = None,
    warn: Callable[[str], None] | None = None,
    direction: str = "both",
    resume_after: tuple[str, int] | None = None,
    reverse_chunk_bytes: int | None = None,
    max_memory_bytes: int | str | None = None,
    auto_size: bool = False,
    info_line: Callable[[str], None] | None = None,
) -> Iterator[FrameResult]:
    """Propagate ``masks`` through ``video``, yielding one :class:`FrameResult` per frame.

    Args:
        video: a frame folder or video file (decoded on a background thread), a (T, H, W, 3) uint8
            array, or a sequence of HxWx3 uint8 arrays or of image files (decoded only when needed).
        masks: ``{frame: HxW object ids}`` keyed by index or name (a value may be ``(ids, objects)``), or
            a mask PNG (the first frame) / a folder of PNGs named after frames. Any frame may bring new
            objects or re-annotate known ones.
        model: an STCN on its device (an engine is built from ``options``), or a fresh
            :class:`InferenceCore` to drive as it is (the backward pass runs on ``core.spawn()``).
        options: :class:`EngineOptions` (default: its defaults, size 480).
        outputs: indices of the frames whose results are wanted (default: all). Other frames are
            skipped without decoding when they are not memory frames, and not yielded.
        warn: called with one line for masks that are ignored (empty, or named after no frame).
        direction: ``"both"`` (default): a backward pass from the last annotated frame down to frame 0,
            then the forward pass from the first annotated frame to the end; each frame is yielded once,
            by the pass :func:`plan_directions` gives it, so frames come backward-pass first (indices
            descending), then forward (ascending). ``"forward"``: the forward pass over every frame, in
            order (frames before the first annotation are background), as the original.
        resume_after: ``(pass, frame)``: continue a run after its pass ``"forward"`` / ``"backward"``
            wrote ``frame``; ``model`` is then the :class:`InferenceCore` of that pass restored with
            :meth:`InferenceCore.load_state_dict`, and only the frames after that point are yielded
            (what ``stcn segment --resume`` does).
        reverse_chunk_bytes: decoded frames a video file's backward pass holds at a time (default 256 MB,
            or what ``max_memory_bytes`` plans).
        max_memory_bytes: bytes, or a size such as ``"2GB"`` (as ``stcn segment --max-memory``): keep the
            process's peak memory under it by choosing the memory-frame bound, the work memory (query
            chunks, object batches) and, with ``auto_size``, the processing size, from ``options``
            (:func:`stcn.inference.budget.plan_for_masks`, the planner of ``segment(max_memory_bytes=...)``).
            What it chose (:meth:`~stcn.inference.budget.MemoryPlan.summary`, one line) goes to
            ``info_line`` (default: printed to stderr as ``stcn: memory budget ...``); a budget that cannot
            be met raises :class:`UserError` (one line) here, before any frame is computed.
            ``model`` must then be a network, not an :class:`InferenceCore`.
        auto_size: with ``max_memory_bytes``: lower the processing size if the budget needs it.
        info_line: called with the memory plan's one-line summary.

    Raises :class:`~stcn.errors.UserError` (DataError for bad frames or masks, and out of memory).
    """
    options = options or EngineOptions()
    plan_directions(0, (), direction)  # validates the direction before anything is read
    budget = None
    if max_memory_bytes is not None:
        from stcn.inference.budget import parse_bytes

        budget = parse_bytes(max_memory_bytes)
        if isinstance(model, InferenceCore):
            raise UserError("max_memory_bytes chooses the engine's options: pass the network as model=, "
                            "not an InferenceCore")
    elif auto_size:
        raise UserError("--auto-size chooses the processing size for --max-memory: give --max-memory too")
    frames = _frames(video, reverse_chunk_bytes)
    annotations = _masks(masks, frames, warn)
    if budget is not None:
        from stcn.inference.budget import plan_for_masks

        if frames.info is not None:
            height, width = frames.info.height, frames.info.width
        elif annotations:  # in-memory frames: a mask has its frame's size (the engine checks it)
            height, width = np.asarray(next(iter(annotations.values()))[0]).shape[:2]
        else:
            raise UserError("max_memory_bytes: no mask to propagate")
        plan = plan_for_masks(budget, height=int(height), width=int(width), num_frames=frames.num_frames,
                              masks=[labels for labels, _ in annotations.values()], options=options,
                              model=model, auto_size=auto_size)
        options = plan.options
        if reverse_chunk_bytes is None and frames.info is not None:
            frames = _frames(frames.info, plan.reverse_chunk_bytes)  # the planned chunk (no second probe)
        (info_line or _stderr_line)(plan.summary())
    if isinstance(model, InferenceCore):
        core = model
    else:
        core = InferenceCore.from_options(model, options, num_frames=frames.num_frames)
    wanted = None if outputs is None else set(outputs)
    plan = plan_directions(frames.num_frames, annotations, direction)
    if resume_after is not None and (resume_after[0] not in ("forward", "backward")
                                     or not 0 <= resume_after[1] < frames.num_frames):
        raise ValueError(f"resume_after must be (forward|backward, frame index), not {resume_after!r}")
    return _passes(core, frames, annotations, wanted, plan, resume_after)


def _stderr_line(message: str) -> None:
    import sys

    print(f"stcn: {message}", file=sys.stderr)


def _passes(core: InferenceCore, frames: _Frames, annotations: dict[int, tuple], wanted: set[int] | None,
            plan: list[str], resume_after: tuple[str, int] | None = None) -> Iterator[FrameResult]:
    """The backward pass (if the plan gives it any frame), then the forward pass: each yields the frames
    the plan gives it (and ``wanted`` asks for); the other frames it passes only feed its memory. With
    ``resume_after``, ``core`` is that pass's engine, restored; the pass continues after the frame."""
    forward_core = core
    if "backward" in plan and (resume_after is None or resume_after[0] == "backward"):
        last = max(annotations) if resume_after is None else resume_after[1] - 1
        mine = {t for t in range(last + 1) if plan[t] == "backward" and (wanted is None or t in wanted)}
        # A fresh engine: the backward pass must not see the forward pass's memory (nor it this one's).
        if resume_after is None:
            back = core.spawn() if "forward" in plan else core
        else:
            back, forward_core = core, core.spawn()
        if last >= 0:
            yield from _propagate(back, frames, annotations, mine, start=last, reverse=True)
        if "forward" not in plan:
            return
        # the backward engine's memory is not needed any more: drop it before the forward pass fills its own
        back = core = None  # noqa: F841
        resume_after = None
    first = min(annotations) if annotations and "backward" in plan else 0
    if resume_after is not None:
        first = resume_after[1] + 1
        if first >= frames.num_frames:
            return
    mine = {t for t in range(first, frames.num_frames) if plan[t] == "forward" and (wanted is None or t in wanted)}
    yield from _propagate(forward_core, frames, annotations, mine, start=first, reverse=False)


def _propagate(core: InferenceCore, frames: _Frames, annotations: dict[int, tuple], wanted: set[int] | None,
               *, start: int = 0, reverse: bool = False) -> Iterator[FrameResult]:
    """The per-frame loop of one pass (frames ``start, start+1, ...``, or ``start, ..., 0`` with
    ``reverse``): the one place that feeds the engine a video."""
    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    loaders = frames.source(start, reverse)
    try:
        yield from _loop(core, frames, loaders, annotations, wanted, out_of_memory, start, reverse)
    finally:  # a caller that stops early (or fails) stops the frame reader's thread now
        close = getattr(loaders, "close", None)
        if close is not None:
            close()


def _loop(core, frames: _Frames, loaders: Iterator[Callable[[], np.ndarray]], annotations: dict[int, tuple],
          wanted: set[int] | None, out_of_memory: type[BaseException], start: int,
          reverse: bool) -> Iterator[FrameResult]:
    step_by = -1 if reverse else 1
    direction = "backward" if reverse else "forward"
    with torch.inference_mode():
        for i, load in enumerate(loaders):
            t = start + step_by * i
            name = frames.names[t]
            labels_in, objects = annotations.get(t, (None, None))
            need = wanted is None or t in wanted
            if not core.will_compute(annotated=labels_in is not None, need_output=need):
                core.step(None, need_output=False)
                continue
            image = load()
            begin = time.perf_counter()
            try:
                probs = core.step(image, labels_in, objects=objects, need_output=need)
                labels = core.labels(probs) if need else None  # .cpu() inside syncs CUDA
            except out_of_memory:
                raise UserError(f"out of {core.device.type} memory at frame {name}: try a smaller --size, "
                                "--precision bf16/fp16, or a larger --mem-every") from None
            except ValueError as exc:  # a mask whose size differs from its frame, a bad image
                raise DataError(f"frame {name}: {exc}") from None
            seconds = time.perf_counter() - begin
            if need:
                yield FrameResult(t, name, labels, probs, tuple(core.object_ids), image, seconds, core, direction)
