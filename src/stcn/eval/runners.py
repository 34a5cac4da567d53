"""Benchmark-set runners: segment DAVIS 2016/2017, YouTube-VOS 2018/2019 or any folder of videos.

    >>> from stcn.eval.runners import run_davis
    >>> summary = run_davis("DAVIS/2017/trainval", "out/davis17", weights="stcn.pth", evaluate=True)
    >>> summary.fps, summary.evaluation.global_results["J&F-Mean"]

The defaults are the paper's settings: top-k 20, a memory frame every 5 frames (3 on DAVIS test-dev),
DAVIS at its native 480p, YouTube-VOS and generic data resized to a shorter side of 480.

Resuming: each video is written into a hidden temporary folder next to its output folder and renamed
into place only when all its frames are written; a video whose output folder holds every expected
file is skipped. Stale temporary folders of an interrupted run are removed.

Several processes: launched with ``torchrun --nproc_per_node N``, rank ``r`` (``RANK``) of ``N``
(``WORLD_SIZE``) takes videos ``r, r+N, r+2N, ...`` and writes them; no process waits for another (no
process group is created). The process that finishes last and finds every video complete also runs
the DAVIS evaluation (``evaluate=True``) or writes the YouTube-VOS submission zip.
"""
from __future__ import annotations

import math
import os
import sys
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stcn.errors import DataError, UserError
from stcn.eval.datasets import Video, davis_videos, generic_videos, resolve_davis_root, youtube_videos
from stcn.inference.device import resolve_device
from stcn.inference.options import EngineOptions
from stcn.io.files import atomic_file, atomic_folder, remove_stale
from stcn.io.masks import read_label_png, save_label_png

__all__ = [
    "RunSummary",
    "Video",
    "distributed_rank",
    "run_davis",
    "run_generic",
    "run_videos",
    "run_youtube",
    "video_labels",
    "davis_options",
]


@dataclass
class RunSummary:
    """What one process did. ``frames``/``seconds`` count the videos it computed (not the resumed ones)."""

    out_dir: Path
    rank: int = 0
    world_size: int = 1
    assigned: list[str] = field(default_factory=list)
    computed: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    frames: int = 0
    seconds: float = 0.0
    complete: bool = False  # every video of the set (all ranks) is written
    evaluation: object | None = None  # stcn.eval.davis_eval.EvaluationResult with evaluate=True
    zip_path: Path | None = None
    options: EngineOptions | None = None  # the engine's settings, when a video was computed
    precision: str | None = None  # options.precision resolved on the model's device (auto -> fp32 ...)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("nan")


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------
def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def distributed_rank() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's environment (``(0, 1, 0)`` without it)."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise UserError(f"RANK={rank} and WORLD_SIZE={world} do not describe a process of a group")
    return rank, world, local


# --------------------------------------------------------------------------------------------------
# Reading and segmenting one video
# --------------------------------------------------------------------------------------------------
def _read_annotation(video: Video, t: int) -> tuple[np.ndarray, np.ndarray | None]:
    labels, palette = read_label_png(video.annotations[t])
    if video.mode == "binary":
        labels = (labels > 0).astype(np.uint8)
    return labels, palette


def video_labels(core_or_model, video: Video, options: EngineOptions) -> Iterator[tuple[int, np.ndarray]]:
    """Segment ``video`` with :func:`stcn.segment_video`: yields ``(t, label map)`` for each frame in
    ``video.outputs``, in order. Label maps hold the annotations' object ids (uint8), or 0/255 for
    ``mode="binary"``. Frames that are not written and are not memory frames are neither decoded nor
    computed."""
    from stcn.inference.video import segment_video

    masks = {t: _read_annotation(video, t)[0] for t in video.annotations}
    try:
        for r in segment_video(list(video.frames), masks, model=core_or_model, options=options,
                               outputs=video.outputs, direction="forward"):  # the benchmarks' protocol
            labels = r.labels
            if video.mode == "binary":
                labels = (labels > 0).astype(np.uint8) * 255
            yield r.index, labels
    except DataError as exc:
        raise DataError(f"{video.name} {exc}") from None


def _palette(video: Video):
    """The palette of the video's first annotation (as the original writes its outputs), or None
    (then the DAVIS palette) for greyscale annotations."""
    if video.mode == "binary" or not video.annotations:
        return None
    return _read_annotation(video, min(video.annotations))[1]


def _save(path: Path, labels: np.ndarray, video: Video, palette) -> None:
    from PIL import Image

    if video.mode == "binary":
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path, format="PNG")
        return
    if labels.dtype != np.uint8:
        raise DataError(f"{video.name}: object ids above 255 cannot be written as a palette PNG")
    save_label_png(path, labels, palette)


# --------------------------------------------------------------------------------------------------
# Output folders: complete, stale, atomic
# --------------------------------------------------------------------------------------------------
def is_complete(folder: Path, video: Video) -> bool:
    """Whether ``folder`` holds every file ``video`` writes."""
    try:
        present = set(os.listdir(folder))
    except OSError:
        return False
    return all(name in present for name in video.output_names())


def write_video(core_or_model, video: Video, folder: Path, options: EngineOptions) -> int:
    """Segment ``video`` into ``folder`` atomically (temporary sibling, then rename). Returns the
    number of frames of the video."""
    with atomic_folder(folder) as tmp:
        palette = _palette(video)
        for t, labels in video_labels(core_or_model, video, options):
            _save(tmp / video.output_name(t), labels, video, palette)
    return video.num_frames


# --------------------------------------------------------------------------------------------------
# Running a set
# --------------------------------------------------------------------------------------------------
def run_videos(
    videos: Sequence[Video],
    folder_of,
    *,
    model=None,
    weights: str | os.PathLike | None = None,
    options: EngineOptions | None = None,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    label: str = "stcn eval",
    rank: int | None = None,
    world_size: int | None = None,
) -> RunSummary:
    """Segment this process's share of ``videos``; ``folder_of(video)`` gives its output folder.

    ``model`` (an STCN on its device) or ``weights`` (default: the cached s012 checkpoint, loaded
    only if a video needs computing). ``rank``/``world_size`` default to torchrun's environment.
    """
    import torch
    from tqdm import tqdm

    env_rank, env_world, local_rank = distributed_rank()
    rank = env_rank if rank is None else rank
    world_size = env_world if world_size is None else world_size
    options = options or EngineOptions(size=-1)
    mine = list(videos)[rank::world_size]
    summary = RunSummary(out_dir=Path(), rank=rank, world_size=world_size, assigned=[v.name for v in mine])
    if model is None:
        from stcn.weights import registry

        weights_path = registry.resolve(weights)
    todo = []
    for v in mine:
        folder = folder_of(v)
        remove_stale(folder)
        if not overwrite and is_complete(folder, v):
            summary.resumed.append(v.name)
        else:
            todo.append(v)
    from stcn.guards import check_image_file_fits

    for v in todo:  # each video's frame size against --size and the memory, before any work
        check_image_file_fits(v.frames[0], options.size, device=None if device in (None, "auto") else device)
    if todo and model is None:
        from stcn.weights.io import load_model

        model = load_model(weights_path, device=resolve_device(device, local_rank=local_rank))
    if todo:
        from stcn.inference.precision import resolve_precision

        summary.options = options
        summary.precision = resolve_precision(options.precision, next(model.parameters()).device)
    where = f" [rank {rank}/{world_size}]" if world_size > 1 else ""
    bar = tqdm(total=len(mine), desc=f"{label}{where}", unit="video", disable=not progress,
               file=sys.stderr, dynamic_ncols=True, initial=len(mine) - len(todo))
    try:
        for v in todo:
            bar.set_postfix_str(v.name)
            cuda = model is not None and next(model.parameters()).is_cuda
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
            summary.frames += write_video(model, v, folder_of(v), options)
            if cuda:
                torch.cuda.synchronize()
            summary.seconds += time.perf_counter() - start
            summary.computed.append(v.name)
            bar.update(1)
            bar.set_postfix_str(f"{summary.fps:.1f} FPS")
    finally:
        bar.close()
    summary.complete = all(is_complete(folder_of(v), v) for v in videos)
    return summary


def davis_options(split: str = "val", **changes) -> EngineOptions:
    """The paper's DAVIS settings: native 480p, a memory frame every 5 frames (3 on test-dev); precision
    ``auto`` like every command (``precision="fp32"`` is exact)."""
    return EngineOptions(**{"size": -1, "mem_every": 3 if split == "test-dev" else 5, **changes})


def run_davis(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    year: str | int = "2017",
    split: str = "val",
    weights=None,
    model=None,
    options: EngineOptions | None = None,
    device: str | None = None,
    evaluate: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> RunSummary:
    """Segment DAVIS ``<year>/<split>`` into ``out/<seq>/<frame>.png`` (see the module docstring).

    ``options`` default to :func:`davis_options` (the paper's settings: native size, a memory frame
    every 5 frames, 3 on test-dev; precision auto). ``evaluate=True`` scores
    the results with :func:`stcn.eval.davis_eval.evaluate_davis` once every sequence is written and
    stores its CSVs and results.json in ``out``.
    """
    year = str(year)
    options = options or davis_options(split)
    if evaluate and split != "val":
        raise DataError(f"--evaluate needs the ground truth of every frame, which DAVIS {split} does not publish")
    videos = davis_videos(root, year=year, split=split)
    out = Path(out)
    summary = run_videos(videos, lambda v: out / v.name, model=model, weights=weights, options=options,
                         device=device, progress=progress, overwrite=overwrite, label=f"DAVIS {year} {split}")
    summary.out_dir = out
    if evaluate and summary.complete:
        from stcn.eval.davis_eval import evaluate_davis

        base = resolve_davis_root(Path(root), year, split)
        result = evaluate_davis(base, out, split=split, year=year, progress=progress,
                                sequences=[v.name for v in videos])
        result.write(out)
        summary.evaluation = result
    return summary


def run_youtube(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    year: str | int = "2019",
    split: str = "valid",
    all_frames: bool = False,
    weights=None,
    model=None,
    options: EngineOptions | None = None,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> RunSummary:
    """Segment YouTube-VOS ``<split>`` into ``out/Annotations/<vid>/<frame>.png``.

    Writes the frames meta.json lists (from each video's first annotated frame on), or every frame
    from there with ``all_frames``. Once every video is written, also writes the zip the evaluation
    server expects, ``out/youtube-vos-<year>-<split>.zip`` holding ``Annotations/<vid>/<frame>.png``.
    """
    options = options or EngineOptions(size=480)
    videos = youtube_videos(root, split=split, all_frames=all_frames)
    out = Path(out)
    annotations = out / "Annotations"
    summary = run_videos(videos, lambda v: annotations / v.name, model=model, weights=weights,
                         options=options, device=device, progress=progress, overwrite=overwrite,
                         label=f"YouTube-VOS {year} {split}")
    summary.out_dir = out
    if summary.complete:
        summary.zip_path = write_submission_zip(out, videos, out / f"youtube-vos-{year}-{split}.zip")
    return summary


def write_submission_zip(out: Path, videos: Sequence[Video], path: Path) -> Path:
    """Zip ``out/Annotations/<vid>/<frame>.png`` of ``videos`` (atomically) into ``path``."""
    with atomic_file(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for v in sorted(videos, key=lambda v: v.name):
            for name in v.output_names():
                zf.write(out / "Annotations" / v.name / name, f"Annotations/{v.name}/{name}")
    return path


def run_generic(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights=None,
    model=None,
    options: EngineOptions | None = None,
    device: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> RunSummary:
    """Segment ``root/JPEGImages/<seq>/`` from the masks in ``root/Annotations/<seq>/`` (any frames,
    objects may first appear anywhere) into ``out/<seq>/<frame>.png``, every frame written."""
    options = options or EngineOptions(size=480)
    videos = generic_videos(root)
    out = Path(out)
    summary = run_videos(videos, lambda v: out / v.name, model=model, weights=weights, options=options,
                         device=device, progress=progress, overwrite=overwrite, label="generic")
    summary.out_dir = out
    return summary


def _cell(value: float, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def format_summary(summary, title: str) -> str:
    """One table: videos, frames, seconds and FPS (and J&F, J, F when evaluated)."""
    head = ["videos", "resumed", "frames", "seconds", "FPS"]
    row = [str(len(summary.computed)), str(len(summary.resumed)), str(summary.frames),
           _cell(summary.seconds, 1), _cell(summary.fps, 2)]
    if summary.evaluation is not None:
        g = summary.evaluation.global_results
        head += ["J&F-Mean", "J-Mean", "F-Mean"]
        row += [_cell(g["J&F-Mean"], 4), _cell(g["J-Mean"], 4), _cell(g["F-Mean"], 4)]
    if summary.world_size > 1:
        title += f" [rank {summary.rank}/{summary.world_size}]"
    widths = [max(len(h), len(c)) for h, c in zip(head, row)]
    lines = [title, "  ".join(h.rjust(w) for h, w in zip(head, widths)),
             "  ".join(c.rjust(w) for c, w in zip(row, widths))]
    if summary.options is not None:
        lines.append("engine: " + summary.options.describe(summary.precision))
    return "\n".join(lines)
