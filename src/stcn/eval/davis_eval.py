"""DAVIS semi-supervised evaluation (J, F, J&F) with the numbers of the official DAVIS 2017 toolkit.

``evaluate_davis(gt_root, results_dir)`` reads the DAVIS layout, scores every object of every
sequence on frames 2..N-1 (the semi-supervised protocol) with :mod:`stcn.eval.metrics`, in a process
pool, and returns an :class:`EvaluationResult`. Its ``global_csv()`` / ``per_sequence_csv()`` are
byte-identical to the toolkit's ``global_results-<split>.csv`` / ``per-sequence_results-<split>.csv``
and ``write()`` stores them (atomically) with ``results.json``. Malformed input raises
:class:`stcn.errors.DataError` with one line naming the sequence and frame. See docs/evaluation.md.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stcn.errors import DataError
from stcn.eval.metrics import BOUND_TH, frame_scores, object_statistics, tolerance_radius
from stcn.io.files import atomic_write
from stcn.io.masks import read_label_png

__all__ = [
    "GLOBAL_COLUMNS",
    "EvaluationResult",
    "ObjectResult",
    "SequenceResult",
    "evaluate_davis",
    "format_table",
]

#: Columns of ``global_results-<split>.csv``, in the toolkit's order.
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
STAT_NAMES = ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
RESOLUTION = "480p"
#: Frames per pool task: small enough to balance a few long sequences over the cores.
FRAMES_PER_TASK = 24


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def read_sequence_list(gt_root: Path, split: str, year: str) -> list[str]:
    """Sequence names of ``ImageSets/<year>/<split>.txt`` in file order (blank lines skipped)."""
    path = gt_root / "ImageSets" / str(year) / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"sequence list {path} not found (is --gt the DAVIS root, with ImageSets/{year}/?)")
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise DataError(f"sequence list {path} names no sequence")
    return names


def _gt_frame_ids(gt_root: Path, seq: str) -> tuple[Path, list[str]]:
    folder = gt_root / "Annotations" / RESOLUTION / seq
    if not folder.is_dir():
        raise DataError(f"{seq}: ground-truth folder {folder} not found")
    ids = sorted(p.name for p in folder.iterdir() if p.name.endswith(".png") and p.is_file())
    if not ids:
        raise DataError(f"{seq}: no annotation PNG in {folder}")
    if len(ids) < 3:
        raise DataError(
            f"{seq}: only {len(ids)} annotation frame(s) in {folder}; the semi-supervised protocol drops the "
            "first and last frames, so a sequence needs at least 3"
        )
    return folder, [n[: -len(".png")] for n in ids]


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------
@dataclass
class ObjectResult:
    """J and F of one object on every scored frame, and its statistics."""

    id: int
    key: str  # "<sequence>_<id>", the row name of the per-sequence CSV
    J: np.ndarray
    F: np.ndarray
    stats: dict[str, float]  # J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay
    f_counts: np.ndarray  # (n_frames, 4): n_res_boundary, n_gt_boundary, res_matched, gt_matched

    @property
    def jf_mean(self) -> float:
        return (self.stats["J-Mean"] + self.stats["F-Mean"]) / 2


@dataclass
class SequenceResult:
    name: str
    height: int
    width: int
    n_frames: int  # all GT frames
    frame_ids: list[str]  # scored frames only (first and last dropped)
    n_objects: int
    disk_radius: int
    objects: list[ObjectResult]

    @property
    def jf_mean(self) -> float:
        """Mean over the sequence's objects of (J-Mean + F-Mean) / 2; NaN without objects."""
        if not self.objects:
            return math.nan
        return float(np.mean([o.jf_mean for o in self.objects]))


def _fmt_csv(value: float) -> str:
    return "" if value is None or math.isnan(value) else "%.3f" % value


def _nan_to_none(value: float):
    return None if isinstance(value, float) and math.isnan(value) else value


@dataclass
class EvaluationResult:
    """Everything one evaluation computed. ``global_results`` holds the 7 numbers of the global CSV."""

    gt_root: str
    results_dir: str
    split: str
    year: str
    sequences: list[SequenceResult]
    global_results: dict[str, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def objects(self) -> list[ObjectResult]:
        return [o for s in self.sequences for o in s.objects]

    @property
    def n_objects(self) -> int:
        return len(self.objects)

    def per_sequence_jf(self) -> dict[str, float]:
        """J&F per sequence (mean over its objects), in sequence-list order."""
        return {s.name: s.jf_mean for s in self.sequences}

    # --- the toolkit's two CSV files ---
    def global_csv(self) -> str:
        values = ",".join(_fmt_csv(self.global_results[c]) for c in GLOBAL_COLUMNS)
        return ",".join(GLOBAL_COLUMNS) + "\n" + values + "\n"

    def per_sequence_csv(self) -> str:
        lines = ["Sequence,J-Mean,F-Mean"]
        for o in self.objects:
            lines.append(f"{o.key},{_fmt_csv(o.stats['J-Mean'])},{_fmt_csv(o.stats['F-Mean'])}")
        return "\n".join(lines) + "\n"

    # --- full-precision JSON ---
    def to_dict(self) -> dict:
        return {
            "about": {
                "tool": "stcn evaluate",
                "task": "semi-supervised",
                "split": self.split,
                "year": self.year,
                "gt_root": self.gt_root,
                "results_dir": self.results_dir,
                "bound_th": BOUND_TH,
                "frames": "J and F hold the scored frames only (first and last GT frames dropped), "
                          "aligned with frame_ids",
                "F_detail": "per scored frame: boundary pixels of result / GT, result boundary pixels within the "
                "dilated GT boundary, GT boundary pixels within the dilated result boundary",
                "decay": "exact for every length (the official toolkit gives NaN for 256 or more scored frames)",
                "nan": "null stands for NaN",
            },
            "global": {**{k: _nan_to_none(v) for k, v in self.global_results.items()}, "n_objects": self.n_objects},
            "sequences": [
                {
                    "name": s.name,
                    "height": s.height,
                    "width": s.width,
                    "n_frames": s.n_frames,
                    "frame_ids": s.frame_ids,
                    "n_objects": s.n_objects,
                    "disk_radius": s.disk_radius,
                    "J&F-Mean": _nan_to_none(s.jf_mean),
                    "objects": [
                        {
                            "id": o.id,
                            "key": o.key,
                            "J": o.J.tolist(),
                            "F": o.F.tolist(),
                            **{k: _nan_to_none(float(v)) for k, v in o.stats.items()},
                            "J&F-Mean": _nan_to_none(o.jf_mean),
                            "F_detail": {
                                name: o.f_counts[:, i].tolist()
                                for i, name in enumerate(
                                    ("n_res_boundary", "n_gt_boundary", "res_boundary_matched", "gt_boundary_matched")
                                )
                            },
                        }
                        for o in s.objects
                    ],
                }
                for s in self.sequences
            ],
            "warnings": list(self.warnings),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write results.json and the two CSVs into ``out_dir`` (each atomically: temp file + rename)."""
        out = Path(out_dir)
        paths = {
            "json": out / "results.json",
            "global_csv": out / f"global_results-{self.split}.csv",
            "per_sequence_csv": out / f"per-sequence_results-{self.split}.csv",
        }
        atomic_write(paths["json"], self.to_json())
        atomic_write(paths["global_csv"], self.global_csv())
        atomic_write(paths["per_sequence_csv"], self.per_sequence_csv())
        return paths


def _fmt_cell(value: float) -> str:
    return "NaN" if math.isnan(value) else f"{value:.6f}"


def format_table(result: EvaluationResult, *, per_sequence: bool = True) -> str:
    """The global table (and the per-object table), as fractions with 6 decimals, like the toolkit."""
    title = f" Global results for {result.split} "
    lines = [title.center(78, "-")]
    widths = [max(len(c), 9) for c in GLOBAL_COLUMNS]
    lines.append(" ".join(c.rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths)))
    lines.append(" ".join(_fmt_cell(result.global_results[c]).rjust(w) for c, w in zip(GLOBAL_COLUMNS, widths)))
    if per_sequence:
        lines.append("")
        lines.append(f" Per sequence results for {result.split} ".center(50, "-"))
        objs = result.objects
        key_w = max([len("Sequence")] + [len(o.key) for o in objs])
        lines.append(f"{'Sequence'.rjust(key_w)} {'J-Mean'.rjust(9)} {'F-Mean'.rjust(9)}")
        for o in objs:
            lines.append(
                f"{o.key.rjust(key_w)} {_fmt_cell(o.stats['J-Mean']).rjust(9)} {_fmt_cell(o.stats['F-Mean']).rjust(9)}"
            )
        if not objs:
            lines.append("(no object scored)")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Scoring (runs in the pool's worker processes)
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Task:
    index: int
    seq: str
    gt_dir: str
    res_dir: str
    frame_ids: tuple[str, ...]
    n_objects: int
    height: int
    width: int
    radius: int
    binary: bool  # DAVIS 2016: every non-zero value is the one object


def _score_task(task: _Task) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    k = task.n_objects
    m = len(task.frame_ids)
    j = np.empty((k, m), dtype=np.float64)
    f = np.empty((k, m), dtype=np.float64)
    counts = np.empty((k, m, 4), dtype=np.int64)
    for t, fid in enumerate(task.frame_ids):
        gt_path = os.path.join(task.gt_dir, fid + ".png")
        res_path = os.path.join(task.res_dir, fid + ".png")
        gt = read_label_png(gt_path, f"{task.seq} frame {fid}: ground truth")[0]
        if gt.shape != (task.height, task.width):
            raise DataError(
                f"{task.seq} frame {fid}: ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]} (WxH) but the "
                f"sequence's first frame is {task.width}x{task.height}"
            )
        res = read_label_png(res_path, f"{task.seq} frame {fid}: result")[0]
        if res.shape != gt.shape:
            raise DataError(
                f"{task.seq} frame {fid}: result {res_path} is {res.shape[1]}x{res.shape[0]} (WxH) but the "
                f"ground truth is {gt.shape[1]}x{gt.shape[0]}"
            )
        if task.binary:
            gt = (gt != 0).view(np.uint8)
            res = (res != 0).view(np.uint8)
        top = int(res.max())
        if top > k:
            void = " (255 is void in the ground truth, not a valid result label)" if top == 255 else ""
            raise DataError(
                f"{task.seq} frame {fid}: result {res_path} holds object id {top}{void} but the ground truth's "
                f"first frame has {k} object(s)"
            )
        if k:
            j[:, t], f[:, t] = frame_scores(gt, res, k, task.radius, counts_out=counts[:, t])
    return task.index, j, f, counts


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads would oversubscribe


#: The pool's start method; None picks ``fork`` where it exists (workers start in milliseconds and
#: inherit the imports), else ``forkserver`` / ``spawn``. The workers use numpy, Pillow and OpenCV
#: (single-threaded) only, which are safe in a forked child even when the parent has idle library
#: threads (OpenBLAS, OpenCV and PyTorch pools).
START_METHOD: str | None = None


def _start_method() -> str:
    methods = multiprocessing.get_all_start_methods()
    if START_METHOD is not None:
        return START_METHOD
    for name in ("fork", "forkserver", "spawn"):
        if name in methods:
            return name
    return methods[0]


#: Below this many scored pixels (about 10 frames of 480p) a pool costs more than it saves.
POOL_MIN_PIXELS = 4_000_000


def _run_tasks(tasks: list[_Task], workers: int, progress: bool) -> list[tuple]:
    """Score every task; on failure raise the error of the earliest failing task (deterministic)."""
    from tqdm import tqdm

    total = sum(len(t.frame_ids) for t in tasks)
    pixels = sum(len(t.frame_ids) * t.height * t.width for t in tasks)
    out: list[tuple | None] = [None] * len(tasks)
    if workers <= 1 or len(tasks) <= 1 or pixels < POOL_MIN_PIXELS:
        import cv2

        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        bar = tqdm(total=total, unit="frame", desc="evaluate", disable=None if progress else True, file=sys.stderr,
                   leave=False)
        try:
            for task in tasks:
                out[task.index] = _score_task(task)
                bar.update(len(task.frame_ids))
        finally:
            cv2.setNumThreads(threads)
            bar.close()
        return out  # type: ignore[return-value]

    ctx = multiprocessing.get_context(_start_method())
    errors: dict[int, BaseException] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx, initializer=_worker_init) as pool:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about fork() in a process with threads; see START_METHOD.
            warnings.filterwarnings("ignore", message=r".*fork\(\) may lead to deadlocks", category=DeprecationWarning)
            pending = {pool.submit(_score_task, t): t for t in tasks}
        bar = tqdm(total=total, unit="frame", desc="evaluate", disable=None if progress else True, file=sys.stderr,
                   leave=False)
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    task = pending.pop(fut)
                    if fut.cancelled():
                        continue
                    exc = fut.exception()
                    if exc is not None:
                        errors[task.index] = exc
                        # Later tasks cannot change which error is reported: drop those not started.
                        for other_fut, other in pending.items():
                            if other.index > task.index:
                                other_fut.cancel()
                        continue
                    out[task.index] = fut.result()
                    bar.update(len(task.frame_ids))
        finally:
            bar.close()
    if errors:
        raise errors[min(errors)]
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------------------
def _mean_or_nan(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def evaluate_davis(
    gt_root: str | os.PathLike,
    results_dir: str | os.PathLike,
    *,
    split: str = "val",
    year: str | int = "2017",
    workers: int | None = None,
    progress: bool = True,
    sequences: Sequence[str] | None = None,
) -> EvaluationResult:
    """Score the results under ``results_dir`` against the DAVIS ground truth at ``gt_root``.

    ``gt_root`` holds ``ImageSets/<year>/<split>.txt`` and ``Annotations/480p/<seq>/*.png``;
    ``results_dir`` holds ``<seq>/<frame id>.png``. ``year="2016"`` scores one object per sequence
    (every non-zero value, in GT and results). ``sequences`` overrides the sequence list.
    ``workers`` processes score the frames (default: all cores). Raises :class:`DataError` on
    malformed input.
    """
    gt = Path(gt_root)
    res = Path(results_dir)
    year = str(year)
    if year not in ("2016", "2017"):
        raise DataError(f"year must be 2016 or 2017, not {year}")
    if not gt.is_dir():
        raise DataError(f"ground-truth root {gt} is not a folder")
    if not res.is_dir():
        raise DataError(f"results folder {res} is not a folder")
    names = list(sequences) if sequences is not None else read_sequence_list(gt, split, year)
    binary = year == "2016"

    infos = []
    tasks: list[_Task] = []
    notes: list[str] = []
    for seq in names:
        gt_dir, ids = _gt_frame_ids(gt, seq)
        first = read_label_png(gt_dir / f"{ids[0]}.png", f"{seq} frame {ids[0]}: ground truth")[0]
        height, width = first.shape
        first = np.where(first == 255, 0, first)
        if binary:
            first = (first != 0).astype(np.uint8)
        n_obj = int(first.max())
        scored = ids[1:-1]
        res_dir = res / seq
        if not res_dir.is_dir():
            raise DataError(f"{seq}: results folder {res_dir} not found (first scored frame {scored[0]} missing)")
        for fid in scored:
            if not (res_dir / f"{fid}.png").is_file():
                raise DataError(f"{seq} frame {fid}: result {res_dir / (fid + '.png')} not found")
        if n_obj == 0:
            notes.append(f"{seq}: the first ground-truth frame {ids[0]} holds no object; the sequence is not scored")
        radius = tolerance_radius(height, width)
        infos.append((seq, height, width, len(ids), scored, n_obj, radius, len(tasks)))
        for start in range(0, len(scored), FRAMES_PER_TASK):
            tasks.append(
                _Task(
                    index=len(tasks),
                    seq=seq,
                    gt_dir=str(gt_dir),
                    res_dir=str(res_dir),
                    frame_ids=tuple(scored[start : start + FRAMES_PER_TASK]),
                    n_objects=n_obj,
                    height=height,
                    width=width,
                    radius=radius,
                    binary=binary,
                )
            )

    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise DataError(f"workers must be at least 1, not {workers}")
    scored_chunks = _run_tasks(tasks, workers, progress)

    seq_results: list[SequenceResult] = []
    for seq, height, width, n_frames, scored, n_obj, radius, first_task in infos:
        n_tasks = math.ceil(len(scored) / FRAMES_PER_TASK)
        chunks = scored_chunks[first_task : first_task + n_tasks]
        j = np.concatenate([c[1] for c in chunks], axis=1)
        f = np.concatenate([c[2] for c in chunks], axis=1)
        counts = np.concatenate([c[3] for c in chunks], axis=1)
        js, fs = object_statistics(j), object_statistics(f)
        objects = []
        for i in range(n_obj):
            stats = {
                "J-Mean": float(js["Mean"][i]),
                "J-Recall": float(js["Recall"][i]),
                "J-Decay": float(js["Decay"][i]),
                "F-Mean": float(fs["Mean"][i]),
                "F-Recall": float(fs["Recall"][i]),
                "F-Decay": float(fs["Decay"][i]),
            }
            objects.append(ObjectResult(i + 1, f"{seq}_{i + 1}", j[i].copy(), f[i].copy(), stats, counts[i].copy()))
        seq_results.append(SequenceResult(seq, height, width, n_frames, list(scored), n_obj, radius, objects))

    all_objects = [o for s in seq_results for o in s.objects]
    glob = {name: _mean_or_nan([o.stats[name] for o in all_objects]) for name in STAT_NAMES}
    glob = {"J&F-Mean": (glob["J-Mean"] + glob["F-Mean"]) / 2, **glob}
    return EvaluationResult(
        gt_root=str(gt),
        results_dir=str(res),
        split=split,
        year=year,
        sequences=seq_results,
        global_results=glob,
        warnings=notes,
    )
