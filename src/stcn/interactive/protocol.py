"""The DAVIS-interactive benchmark's measurements (davisinteractive 1.0.4, rebuilt from its description):
per-frame J and F, the choice of the next scribbled frame, and the summary (AUC, J&F at 60 s).

* :func:`batched_jaccard` / :func:`batched_f_measure`: (T, K) per frame and object 1..K over **all**
  frames (no first/last-frame exclusion); J = 1 and F = 1 where an object is absent from both masks.
  F is the DAVIS boundary F (tolerance ``ceil(0.008 * |(H, W)|)``), from :mod:`stcn.eval.metrics`.
* :func:`next_frame`: the frame with the lowest mean (over objects) metric among the candidates, the
  frames the robot already annotated in this sample removed (unless that leaves none).
* :func:`summarize_report`: average each (interaction, sequence, scribble, object) over frames; fill
  the interactions a timed-out sample is missing (the previous one's values, timing 0); curve =
  object-weighted mean J&F per interaction against the cumulated sample-weighted mean timing, with
  (0, 0) prepended and (avg objects per sequence * max_time, last value) appended; AUC = trapezoidal
  integral / the curve's last time; J&F@60s = linear interpolation at 60 s.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from stcn.eval.metrics import frame_scores, tolerance_radius

__all__ = [
    "REPORT_COLUMNS",
    "batched_f_measure",
    "batched_jaccard",
    "batched_scores",
    "frame_metric",
    "next_frame",
    "summarize_report",
]

#: Columns of the benchmark's report (one row per interaction, object and frame).
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

REPORT_COLUMNS = ("sequence", "scribble_idx", "interaction", "object_id", "frame",
                  "jaccard", "contour", "j_and_f", "timing")


def _check(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} must be the same (T, H, W)")
    return gt, pred


def batched_scores(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """J and F (T, K) float64 of objects 1..K for label maps gt, pred (T, H, W)."""
    gt, pred = _check(gt, pred)
    radius = tolerance_radius(*gt.shape[-2:])
    j = np.empty((len(gt), num_objects))
    f = np.empty((len(gt), num_objects))
    for t in range(len(gt)):
        j[t], f[t] = frame_scores(gt[t], pred[t], num_objects, radius)
    return j, f


def batched_jaccard(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> np.ndarray:
    """J (T, K): |GT & P| / |GT | P| per frame and object 1..K, 1 where both are empty."""
    gt, pred = _check(gt, pred)
    ids = np.arange(1, num_objects + 1).reshape(1, -1, 1, 1)
    g, p = gt[:, None] == ids, pred[:, None] == ids
    inter = np.count_nonzero(g & p, axis=(2, 3)).astype(np.float64)
    union = np.count_nonzero(g | p, axis=(2, 3)).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union == 0, 1.0, inter / union)


def batched_f_measure(gt: np.ndarray, pred: np.ndarray, num_objects: int) -> np.ndarray:
    """F (T, K): the DAVIS boundary F-measure per frame and object 1..K."""
    return batched_scores(gt, pred, num_objects)[1]


def frame_metric(jaccard: np.ndarray, contour: np.ndarray, metric: str = "J_AND_F") -> np.ndarray:
    """Per-frame metric (T,) the next frame is chosen by: mean over objects of J, F or 0.5 J + 0.5 F."""
    values = {"J": jaccard, "F": contour, "J_AND_F": 0.5 * jaccard + 0.5 * contour}[metric]
    return values.mean(axis=1)


def next_frame(per_frame: np.ndarray, candidates: Sequence[int] | None, annotated: Iterable[int]) -> int:
    """The frame to scribble next: the candidate (all frames when None) with the lowest metric,
    frames already annotated by the robot removed unless that leaves none; first one on ties."""
    given = list(range(len(per_frame))) if candidates is None else [int(c) for c in candidates]
    done = set(annotated)
    left = [c for c in given if c not in done] or given
    return left[int(np.argsort(np.asarray(per_frame)[left])[0])]


def summarize_report(
    rows: Iterable[Mapping],
    *,
    max_time: float,
    max_interactions: int,
    avg_num_objects: float,
    metric: str = "J_AND_F",
    threshold: float = 60.0,
) -> dict:
    """AUC and the metric at ``threshold`` seconds from report rows (dicts with the report columns).

    Returns ``{'auc', 'metric_at_threshold': {'threshold', metric}, 'curve': {'time', metric}}``.
    """
    column = {"J": "jaccard", "F": "contour", "J_AND_F": "j_and_f"}[metric]
    # 1. average each (interaction, sequence, scribble, object) over its frames
    sums: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        key = (int(r["interaction"]), str(r["sequence"]), int(r["scribble_idx"]), int(r["object_id"]))
        acc = sums[key]
        acc[0] += float(r[column])
        acc[1] += float(r["timing"])
        acc[2] += 1
    per_object = {k: (v[0] / v[2], v[1] / v[2]) for k, v in sums.items()}
    if not per_object:
        raise ValueError("the report holds no row")
    objects = sorted({k[1:] for k in per_object})
    # 2. a sample that timed out misses its last interactions: repeat the previous values, timing 0
    for obj in objects:
        for i in range(1, max_interactions + 1):
            if (i, *obj) not in per_object:
                prev = per_object.get((i - 1, *obj), (0.0, 0.0))
                per_object[(i, *obj)] = (prev[0], 0.0)
    # 3. object-weighted metric, sample-weighted timing (every object of a sample has its timing)
    samples = sorted({o[:2] for o in objects})
    values, times = [], []
    for i in range(1, max_interactions + 1):
        values.append(float(np.mean([per_object[(i, *o)][0] for o in objects])))
        per_sample = [np.mean([per_object[(i, *o)][1] for o in objects if o[:2] == s]) for s in samples]
        times.append(float(np.mean(per_sample)))
    time_axis = np.concatenate([[0.0], np.cumsum(times), [avg_num_objects * max_time]])
    curve = np.concatenate([[0.0], values, [values[-1]]])
    auc = float(_trapezoid(curve, x=time_axis) / time_axis.max())
    at = float(np.interp(threshold, time_axis, curve))
    return {
        "auc": auc,
        "metric_at_threshold": {"threshold": threshold, metric: at},
        "curve": {"time": time_axis.tolist(), metric: curve.tolist()},
    }
