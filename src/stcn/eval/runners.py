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

import os
import shutil
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stcn.errors import DataError, UserError
from stcn.eval.datasets import Video, davis_videos, generic_videos, resolve_davis_root, youtube_videos

__all__ = [
    "InferenceOptions",
    "RunSummary",
    "Video",
    "distributed_rank",
    "read_frame",
    "run_davis",
    "run_generic",
    "run_videos",
    "run_youtube",
    "segment_video",
]

TEMP_TAG = ".tmp-"
OLD_TAG = ".old-"


@dataclass(frozen=True)
class InferenceOptions:
    """Engine settings (see :class:`stcn.inference.InferenceCore`)."""

    top_k: int = 20
    mem_every: int = 5
    include_last: bool = False
    size: int = -1
    amp: bool = False

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise UserError(f"top-k must be at least 1, not {self.top_k}")
        if self.mem_every < 1:
            raise UserError(f"mem-every must be at least 1, not {self.mem_every}")
        if self.size == 0 or self.size < -1:
            raise UserError(f"size must be a positive shorter side, or -1 for the native size; not {self.size}")


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


def _device(requested: str | None, local_rank: int) -> str:
    """The requested device; ``None`` means CUDA when available, else the CPU. A bare ``cuda`` is
    this process's GPU (``LOCAL_RANK``, so torchrun processes spread over the GPUs)."""
    import torch

    if requested is None:
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: CUDA is not available on this machine")
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {requested!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {requested}: CUDA is not available on this machine")
    return requested


# --------------------------------------------------------------------------------------------------
# Reading and segmenting one video
# --------------------------------------------------------------------------------------------------
def read_frame(path: Path) -> np.ndarray:
    """An image file as an HxWx3 uint8 RGB array (decoded by content)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            return np.array(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"frame {path} not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"frame {path} cannot be read ({str(exc).splitlines()[0] if str(exc) else exc})") from None


def _read_annotation(video: Video, t: int) -> tuple[np.ndarray, np.ndarray | None]:
    from stcn.inference.io import read_mask

    labels, palette = read_mask(video.annotations[t])
    if video.mode == "binary":
        labels = (labels > 0).astype(np.uint8)
    return labels, palette


def segment_video(core_or_model, video: Video, options: InferenceOptions | None = None,
                  ) -> Iterator[tuple[int, np.ndarray]]:
    """Segment ``video``: yields ``(t, label map)`` for each frame in ``video.outputs``, in order.

    Label maps hold the annotations' object ids (uint8), or 0/255 for ``mode="binary"``. Frames
    that are not written and are not memory frames are neither decoded nor computed. Pass a model
    (a fresh engine is built with ``options``) or a fresh :class:`~stcn.inference.InferenceCore`.
    """
    from stcn.inference import InferenceCore

    if isinstance(core_or_model, InferenceCore):
        core = core_or_model
    else:
        o = options or InferenceOptions()
        core = InferenceCore(core_or_model, top_k=o.top_k, mem_every=o.mem_every,
                             include_last=o.include_last, size=o.size, amp=o.amp)
    wanted = set(video.outputs)
    for t, path in enumerate(video.frames):
        mask = _read_annotation(video, t)[0] if t in video.annotations else None
        need = t in wanted
        if not core.will_compute(annotated=mask is not None, need_output=need):
            core.step(None, need_output=False)
            continue
        image = read_frame(path)
        try:
            probs = core.step(image, mask, need_output=need)
        except ValueError as exc:  # a mask whose size differs from its frame, a bad image
            raise DataError(f"{video.name} frame {path.stem}: {exc}") from None
        if need:
            labels = core.labels(probs)
            if video.mode == "binary":
                labels = (labels > 0).astype(np.uint8) * 255
            yield t, labels


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
    from stcn.data.palette import save_label_png

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


def _remove_stale(folder: Path) -> None:
    parent = folder.parent
    if not parent.is_dir():
        return
    prefixes = (f".{folder.name}{TEMP_TAG}", f".{folder.name}{OLD_TAG}")
    for p in parent.iterdir():
        if p.name.startswith(prefixes):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def write_video(core_or_model, video: Video, folder: Path, options: InferenceOptions | None = None) -> int:
    """Segment ``video`` into ``folder`` atomically (temporary sibling, then rename). Returns the
    number of frames of the video."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = folder.parent / f".{folder.name}{TEMP_TAG}{tag}"
    tmp.mkdir()
    try:
        palette = _palette(video)
        for t, labels in segment_video(core_or_model, video, options):
            _save(tmp / video.output_name(t), labels, video, palette)
        old = None
        if folder.exists() or folder.is_symlink():
            old = folder.parent / f".{folder.name}{OLD_TAG}{tag}"
            os.replace(folder, old)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() and not old.is_symlink() else old.unlink()
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
    options: InferenceOptions | None = None,
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
    options = options or InferenceOptions()
    mine = list(videos)[rank::world_size]
    summary = RunSummary(out_dir=Path(), rank=rank, world_size=world_size, assigned=[v.name for v in mine])
    if model is None:
        from stcn.weights import registry

        weights_path = registry.resolve(weights)
    todo = []
    for v in mine:
        folder = folder_of(v)
        _remove_stale(folder)
        if not overwrite and is_complete(folder, v):
            summary.resumed.append(v.name)
        else:
            todo.append(v)
    if todo and model is None:
        import stcn

        model = stcn.load_model(weights_path, device=_device(device, local_rank))
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


def _options(size: int, top_k: int, mem_every: int, include_last: bool, amp: bool) -> InferenceOptions:
    return InferenceOptions(top_k=top_k, mem_every=mem_every, include_last=include_last, size=size, amp=amp)


def run_davis(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    year: str | int = "2017",
    split: str = "val",
    weights=None,
    model=None,
    top_k: int = 20,
    mem_every: int | None = None,
    include_last: bool = False,
    size: int = -1,
    device: str | None = None,
    amp: bool = False,
    evaluate: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> RunSummary:
    """Segment DAVIS ``<year>/<split>`` into ``out/<seq>/<frame>.png`` (see the module docstring).

    ``mem_every`` defaults to 5, and 3 on test-dev (the paper's settings). ``evaluate=True`` scores
    the results with :func:`stcn.eval.davis_eval.evaluate_davis` once every sequence is written and
    stores its CSVs and results.json in ``out``.
    """
    year = str(year)
    if mem_every is None:
        mem_every = 3 if split == "test-dev" else 5
    options = _options(size, top_k, mem_every, include_last, amp)
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
    top_k: int = 20,
    mem_every: int = 5,
    include_last: bool = False,
    size: int = 480,
    device: str | None = None,
    amp: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> RunSummary:
    """Segment YouTube-VOS ``<split>`` into ``out/Annotations/<vid>/<frame>.png``.

    Writes the frames meta.json lists (from each video's first annotated frame on), or every frame
    from there with ``all_frames``. Once every video is written, also writes the zip the evaluation
    server expects, ``out/youtube-vos-<year>-<split>.zip`` holding ``Annotations/<vid>/<frame>.png``.
    """
    options = _options(size, top_k, mem_every, include_last, amp)
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
    tmp = path.parent / f".{path.name}{TEMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for v in sorted(videos, key=lambda v: v.name):
                for name in v.output_names():
                    zf.write(out / "Annotations" / v.name / name, f"Annotations/{v.name}/{name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def run_generic(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights=None,
    model=None,
    top_k: int = 20,
    mem_every: int = 5,
    include_last: bool = False,
    size: int = 480,
    device: str | None = None,
    amp: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> RunSummary:
    """Segment ``root/JPEGImages/<seq>/`` from the masks in ``root/Annotations/<seq>/`` (any frames,
    objects may first appear anywhere) into ``out/<seq>/<frame>.png``, every frame written."""
    options = _options(size, top_k, mem_every, include_last, amp)
    videos = generic_videos(root)
    out = Path(out)
    summary = run_videos(videos, lambda v: out / v.name, model=model, weights=weights, options=options,
                         device=device, progress=progress, overwrite=overwrite, label="generic")
    summary.out_dir = out
    return summary
