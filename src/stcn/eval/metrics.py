"""DAVIS region similarity J and boundary F-measure, exactly as the DAVIS 2017 toolkit computes them.

The conventions (boundary rule, tolerance disk, empty-mask and empty-boundary cases, the
semi-supervised protocol, Mean / Recall / Decay) are written out in ``docs/evaluation.md``. This
module is pure numpy + OpenCV and knows nothing about files; :mod:`stcn.eval.davis_eval` reads the
DAVIS layout and calls it.

Two entry points score masks:

* :func:`frame_scores` -- the fast path used by the evaluator: J and F of every object of one frame,
  given the two label maps. Each object is scored on the crop around it (the bounding box of its GT
  and result masks), so the boundary maps and the two disk dilations touch only the pixels near the
  object, not the whole frame. Cropping is exact, see :func:`_object_scores`.
* :func:`region_similarity` / :func:`boundary_f_measure` -- the same numbers for arbitrary stacks of
  binary masks ``(..., H, W)``: vectorised over the leading axes for J and the boundary maps.

Per-object statistics (:func:`object_statistics`) are vectorised across objects and frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

__all__ = [
    "BOUND_TH",
    "BoundaryDetail",
    "boundary_f_measure",
    "boundary_map",
    "decay_bin_edges",
    "disk",
    "frame_scores",
    "object_statistics",
    "region_similarity",
    "tolerance_radius",
]

#: The toolkit's boundary tolerance, a fraction of the image diagonal.
BOUND_TH = 0.008


# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------
def tolerance_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """The F tolerance radius in pixels: ``ceil(bound_th * sqrt(H**2 + W**2))`` in float64.

    A ``bound_th`` of 1 or more is taken as a radius in pixels (as in the toolkit, which never uses it).
    """
    if bound_th >= 1:
        return int(math.ceil(bound_th))
    return int(np.ceil(np.float64(bound_th) * np.sqrt(np.float64(height) ** 2 + np.float64(width) ** 2)))


@lru_cache(maxsize=64)
def _disk_cached(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    footprint = ((xx * xx + yy * yy) <= r * r).astype(np.uint8)
    footprint.setflags(write=False)
    return footprint


def disk(radius: int) -> np.ndarray:
    """The ``(2r+1, 2r+1)`` uint8 footprint of every integer offset with ``dx**2 + dy**2 <= r**2``."""
    return _disk_cached(int(radius)).copy()


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of binary masks ``(..., H, W)`` (David Martin's ``seg2bmap`` at native size).

    A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour; on the
    last row only the right neighbour is compared, in the last column only the lower one, and the
    bottom-right pixel never is. Nothing outside the image is compared.
    """
    m = np.asarray(mask).astype(bool, copy=False)
    if m.ndim < 2:
        raise ValueError(f"boundary_map needs (..., H, W) masks, got shape {m.shape}")
    b = np.zeros(m.shape, dtype=bool)
    inner = m[..., :-1, :-1]
    b[..., :-1, :-1] = (inner != m[..., :-1, 1:]) | (inner != m[..., 1:, :-1]) | (inner != m[..., 1:, 1:])
    b[..., -1, :-1] = m[..., -1, :-1] != m[..., -1, 1:]  # last row: right neighbour only
    b[..., :-1, -1] = m[..., :-1, -1] != m[..., 1:, -1]  # last column: lower neighbour only
    b[..., -1, -1] = False
    return b


def region_similarity(gt: np.ndarray, res: np.ndarray) -> np.ndarray:
    """J = |GT & R| / |GT | R| for masks ``(..., H, W)``; 1 where both masks are empty."""
    g = np.asarray(gt).astype(bool, copy=False)
    r = np.asarray(res).astype(bool, copy=False)
    if g.shape != r.shape:
        raise ValueError(f"GT shape {g.shape} and result shape {r.shape} differ")
    inter = np.count_nonzero(g & r, axis=(-2, -1))
    union = np.count_nonzero(g | r, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.asarray(inter, dtype=np.float64) / np.asarray(union, dtype=np.float64)
    return np.where(np.asarray(union) == 0, 1.0, j)


@dataclass(frozen=True)
class BoundaryDetail:
    """The stages of F for one mask pair (the names of the reference's ``F_detail``)."""

    n_res_boundary: int
    n_gt_boundary: int
    res_boundary_matched: int
    gt_boundary_matched: int
    precision: float
    recall: float
    f: float


def _f_from_counts(n_res: int, n_gt: int, res_matched: int, gt_matched: int) -> tuple[float, float, float]:
    """Precision, recall and F with the toolkit's empty-boundary rules."""
    if n_res == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_res > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_res == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision = res_matched / float(n_res)
        recall = gt_matched / float(n_gt)
    if precision + recall == 0:
        f = 0.0
    else:
        f = 2 * precision * recall / (precision + recall)
    return precision, recall, f


def _dilate(bmap: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary dilation of a bool map by the disk; nothing outside the array contributes."""
    out = cv2.dilate(bmap.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.view(bool)


def _boundary_counts(g: np.ndarray, r: np.ndarray, kernel: np.ndarray) -> tuple[int, int, int, int]:
    """Boundary pixel counts and matched counts of two bool masks of one crop."""
    gb = boundary_map(g)
    rb = boundary_map(r)
    n_gt = int(np.count_nonzero(gb))
    n_res = int(np.count_nonzero(rb))
    if n_gt == 0 or n_res == 0:  # the counts alone decide F; matched counts are 0
        return n_res, n_gt, 0, 0
    res_matched = int(np.count_nonzero(rb & _dilate(gb, kernel)))
    gt_matched = int(np.count_nonzero(gb & _dilate(rb, kernel)))
    return n_res, n_gt, res_matched, gt_matched


def _crop_slices(box: tuple[int, int, int, int], height: int, width: int) -> tuple[slice, slice]:
    """The crop around a bounding box ``(y0, x0, y1, x1)`` (inclusive) grown by one pixel each side.

    Why this crop is exact: every boundary pixel of a mask lies in its bounding box or in the row
    above / column to the left of it, so the crop holds all boundary pixels of both masks. Its extra
    bottom row / right column (when not the image's last) is all background, so the crop's own
    "last row / last column" rule gives the same answer there as the full image. The dilations only
    need to be right at boundary pixels, and every boundary pixel within the disk radius of one of
    them is inside the crop, so dilating the crop with nothing outside it is exact as well.
    """
    y0, x0, y1, x1 = box
    return slice(max(y0 - 1, 0), min(y1 + 2, height)), slice(max(x0 - 1, 0), min(x1 + 2, width))


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Inclusive bounding box ``(y0, x0, y1, x1)`` of a 2-D bool mask, or None when it is empty."""
    x, y, w, h = cv2.boundingRect(np.ascontiguousarray(mask).view(np.uint8))
    if w == 0 or h == 0:
        return None
    return y, x, y + h - 1, x + w - 1


def _union_box(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _object_scores(
    g_full: np.ndarray, r_full: np.ndarray, kernel: np.ndarray
) -> tuple[float, tuple[int, int, int, int]]:
    """J and the four F counts of one GT / result mask pair (2-D bool), computed on their crop."""
    box = _union_box(_bbox(g_full), _bbox(r_full))
    if box is None:  # both empty: J = 1, no boundary on either side
        return 1.0, (0, 0, 0, 0)
    sy, sx = _crop_slices(box, *g_full.shape)
    g = g_full[sy, sx]
    r = r_full[sy, sx]
    inter = int(np.count_nonzero(g & r))
    union = int(np.count_nonzero(g)) + int(np.count_nonzero(r)) - inter
    j = inter / union  # union > 0 since one mask is not empty
    return j, _boundary_counts(g, r, kernel)


def boundary_f_measure(
    gt: np.ndarray,
    res: np.ndarray,
    bound_th: float = BOUND_TH,
    *,
    return_detail: bool = False,
):
    """Boundary F-measure for masks ``(..., H, W)``; the tolerance disk comes from ``H`` and ``W``.

    With ``return_detail=True`` returns ``(F, details)`` where ``details`` is a flat list of
    :class:`BoundaryDetail` in C order of the leading axes.
    """
    g = np.asarray(gt).astype(bool, copy=False)
    r = np.asarray(res).astype(bool, copy=False)
    if g.shape != r.shape:
        raise ValueError(f"GT shape {g.shape} and result shape {r.shape} differ")
    if g.ndim < 2:
        raise ValueError(f"boundary_f_measure needs (..., H, W) masks, got shape {g.shape}")
    height, width = g.shape[-2:]
    kernel = _disk_cached(tolerance_radius(height, width, bound_th))
    lead = g.shape[:-2]
    g2 = g.reshape((-1, height, width))
    r2 = r.reshape((-1, height, width))
    f = np.empty(g2.shape[0], dtype=np.float64)
    details = []
    for i in range(g2.shape[0]):
        _, counts = _object_scores(g2[i], r2[i], kernel)
        p, rc, fi = _f_from_counts(*counts)
        f[i] = fi
        if return_detail:
            details.append(BoundaryDetail(*counts, p, rc, fi))
    f = f.reshape(lead) if lead else f[0]
    return (f, details) if return_detail else f


def frame_scores(
    gt_labels: np.ndarray,
    res_labels: np.ndarray,
    n_objects: int,
    radius: int | None = None,
    *,
    counts_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """J and F of objects ``1..n_objects`` for one frame, from two label maps of the same size.

    Object k is the set of pixels equal to k in each map; GT values outside ``1..n_objects`` (void
    255, ids above the first frame's) belong to no object. The caller checks the result's ids.
    ``counts_out``, when given, is an ``(n_objects, 4)`` int array that receives the F counts
    ``(n_res_boundary, n_gt_boundary, res_boundary_matched, gt_boundary_matched)``.
    """
    if gt_labels.shape != res_labels.shape:
        raise ValueError(f"GT shape {gt_labels.shape} and result shape {res_labels.shape} differ")
    height, width = gt_labels.shape
    if radius is None:
        radius = tolerance_radius(height, width)
    kernel = _disk_cached(int(radius))
    j = np.empty(n_objects, dtype=np.float64)
    f = np.empty(n_objects, dtype=np.float64)
    for k in range(1, n_objects + 1):
        jk, counts = _object_scores(gt_labels == k, res_labels == k, kernel)
        j[k - 1] = jk
        f[k - 1] = _f_from_counts(*counts)[2]
        if counts_out is not None:
            counts_out[k - 1] = counts
    return j, f


# --------------------------------------------------------------------------------------------------
# Per-object statistics
# --------------------------------------------------------------------------------------------------
def decay_bin_edges(n: int) -> np.ndarray:
    """The 5 Decay bin edges ``floor(k (n-1) / 4 + 1/2)``, k = 0..4, as int64 (no 8-bit wrap-around)."""
    k = np.arange(5, dtype=np.float64)
    return np.floor(k * (n - 1) / 4.0 + 0.5).astype(np.int64)


def object_statistics(values: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, Recall and Decay of per-frame values ``(..., n)``, vectorised over the leading axes.

    Mean is the NaN-ignoring mean, Recall the fraction of frames strictly above 0.5, Decay the mean of
    frames ``0..e1`` minus the mean of frames ``e3..n-1`` (inclusive bins, :func:`decay_bin_edges`).
    Unlike the toolkit, Decay is right for sequences of 256 or more frames (the toolkit stores the
    edges in 8 bits and gets NaN there).
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.shape[-1]
    if n == 0:
        nan = np.full(v.shape[:-1], np.nan)
        return {"Mean": nan, "Recall": nan.copy(), "Decay": nan.copy()}
    with np.errstate(invalid="ignore"):
        if np.isnan(v).any():
            mean = np.nanmean(v, axis=-1)
            recall = np.nanmean((v > 0.5).astype(np.float64), axis=-1)
        else:
            mean = np.mean(v, axis=-1)
            recall = np.mean(v > 0.5, axis=-1)
        e = decay_bin_edges(n)
        first = v[..., e[0] : e[1] + 1]
        last = v[..., e[3] : e[4] + 1]
        if np.isnan(v).any():
            decay = np.nanmean(first, axis=-1) - np.nanmean(last, axis=-1)
        else:
            decay = np.mean(first, axis=-1) - np.mean(last, axis=-1)
    return {"Mean": np.asarray(mean), "Recall": np.asarray(recall), "Decay": np.asarray(decay)}


def clip_jf(gt: np.ndarray, pred: np.ndarray, object_ids: list[int]) -> tuple[float, float, float]:
    """DAVIS-protocol J, F and J&F (first and last frames excluded) of (T, H, W) label maps in the ids
    ``object_ids`` (the demo's and synthetic validation's score)."""
    dense_gt = np.zeros_like(gt)
    dense_pred = np.zeros_like(pred)
    for i, oid in enumerate(object_ids, start=1):
        dense_gt[gt == oid] = i
        dense_pred[pred == oid] = i
    scored = range(1, len(gt) - 1) if len(gt) > 2 else range(len(gt))
    js, fs = zip(*(frame_scores(dense_gt[t], dense_pred[t], len(object_ids)) for t in scored))
    j = float(np.nanmean(np.stack(js), axis=0).mean())
    f = float(np.nanmean(np.stack(fs), axis=0).mean())
    return j, f, (j + f) / 2
