"""The whole-video API beside :meth:`InferenceCore.step`: :func:`segment_video`, a generator of
per-frame results (in the spirit of SAM2's ``propagate_in_video``).

    >>> import stcn
    >>> model = stcn.load_model("demo")
    >>> for r in stcn.segment_video("frames/", "annotations/", model=model):
    ...     r.name, r.labels                                  # "00000", HxW uint8 object ids

``stcn segment``, the benchmark-set runners, ``stcn demo``, synthetic validation and the benchmarks
all drive it. The per-frame loop lives in :func:`_propagate` only, so a later direction (backward
from annotated frames) or resuming changes one place.
"""
from __future__ import annotations

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

__all__ = ["FrameResult", "segment_video", "VideoLike", "MasksLike"]

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
    this frame (step and labels, no I/O). engine: the :class:`InferenceCore` (its memory and settings).
    """

    index: int
    name: str
    labels: np.ndarray | None
    probs: torch.Tensor | None
    object_ids: tuple[int, ...]
    image: np.ndarray | None
    seconds: float
    engine: InferenceCore


@dataclass
class _Frames:
    """Frames as (name, loader) pairs: a loader decodes only when the engine computes the frame."""

    names: list[str]
    loaders: Iterator[Callable[[], np.ndarray]]
    info: VideoInfo | None = None

    @property
    def num_frames(self) -> int:
        return len(self.names)


def _frames(video: VideoLike) -> _Frames:
    if isinstance(video, VideoInfo) or isinstance(video, (str, os.PathLike)):
        info = video if isinstance(video, VideoInfo) else probe(video)

        def decoded() -> Iterator[Callable[[], np.ndarray]]:
            reader = iter_frames(info)
            try:
                for index, (_, frame) in enumerate(reader):
                    if index == 0 and frame.shape[:2] != (info.height, info.width):
                        h, w = frame.shape[:2]
                        raise DataError(f"{info.path}: the first frame decodes to {w}x{h}, but the file says "
                                        f"{info.width}x{info.height}")
                    yield lambda frame=frame: frame
            finally:
                reader.close()

        return _Frames(list(info.names), decoded(), info)
    if isinstance(video, np.ndarray):
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"a video array must be (T, H, W, 3) uint8, got shape {video.shape}")
    items = list(video)
    names = [Path(v).stem if isinstance(v, (str, os.PathLike)) else frame_name(i) for i, v in enumerate(items)]
    loaders = ((lambda v=v: read_rgb(v)) if isinstance(v, (str, os.PathLike)) else (lambda v=v: np.asarray(v))
               for v in items)
    return _Frames(names, loaders)


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
) -> Iterator[FrameResult]:
    """Propagate ``masks`` through ``video``, yielding one :class:`FrameResult` per frame in order.

    Args:
        video: a frame folder or video file (decoded on a background thread), a (T, H, W, 3) uint8
            array, or a sequence of HxWx3 uint8 arrays or of image files (decoded only when needed).
        masks: ``{frame: HxW object ids}`` keyed by index or name (a value may be ``(ids, objects)``), or
            a mask PNG (the first frame) / a folder of PNGs named after frames. Any frame may bring new
            objects or re-annotate known ones.
        model: an STCN on its device (an engine is built from ``options``), or a fresh
            :class:`InferenceCore` to drive as it is.
        options: :class:`EngineOptions` (default: its defaults, size 480).
        outputs: indices of the frames whose results are wanted (default: all). Other frames are
            skipped without decoding when they are not memory frames, and not yielded.
        warn: called with one line for masks that are ignored (empty, or named after no frame).

    Raises :class:`~stcn.errors.UserError` (DataError for bad frames or masks, and out of memory).
    """
    options = options or EngineOptions()
    frames = _frames(video)
    annotations = _masks(masks, frames, warn)
    if isinstance(model, InferenceCore):
        core = model
    else:
        core = InferenceCore.from_options(model, options, num_frames=frames.num_frames)
    wanted = None if outputs is None else set(outputs)
    return _propagate(core, frames, annotations, wanted)


def _propagate(core: InferenceCore, frames: _Frames, annotations: dict[int, tuple],
               wanted: set[int] | None) -> Iterator[FrameResult]:
    """The per-frame loop: the one place that feeds the engine a video."""
    out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    try:
        yield from _loop(core, frames, annotations, wanted, out_of_memory)
    finally:  # a caller that stops early (or fails) stops the frame reader's thread now
        close = getattr(frames.loaders, "close", None)
        if close is not None:
            close()


def _loop(core, frames: _Frames, annotations: dict[int, tuple], wanted: set[int] | None,
          out_of_memory: type[BaseException]) -> Iterator[FrameResult]:
    with torch.inference_mode():
        for t, load in enumerate(frames.loaders):
            name = frames.names[t]
            labels_in, objects = annotations.get(t, (None, None))
            need = wanted is None or t in wanted
            if not core.will_compute(annotated=labels_in is not None, need_output=need):
                core.step(None, need_output=False)
                continue
            image = load()
            start = time.perf_counter()
            try:
                probs = core.step(image, labels_in, objects=objects, need_output=need)
                labels = core.labels(probs) if need else None  # .cpu() inside syncs CUDA
            except out_of_memory:
                raise UserError(f"out of {core.device.type} memory at frame {name}: try a smaller --size, "
                                "--precision bf16/fp16, or a larger --mem-every") from None
            except ValueError as exc:  # a mask whose size differs from its frame, a bad image
                raise DataError(f"frame {name}: {exc}") from None
            seconds = time.perf_counter() - start
            if need:
                yield FrameResult(t, name, labels, probs, tuple(core.object_ids), image, seconds, core)
