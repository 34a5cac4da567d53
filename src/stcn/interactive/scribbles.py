"""Scribbles -> the positive / negative maps S2M reads, for the two paths of MiVOS.

DAVIS-interactive path (robot or recorded human scribbles):
    a scribble is the benchmark's dict ``{'scribbles': [frame -> [{'path': [[x, y], ...] normalised to
    [0, 1], 'object_id': id (0 = background)}, ...]], ...}``. Only the first frame holding a path is used.
    :func:`rasterize_paths` draws the paths as 1-px 8-connected Bresenham lines (coordinates multiplied
    by (W-1, H-1) and truncated), later paths overwriting earlier ones, -1 elsewhere;
    :func:`davis_pos_neg` dilates ``raster == k`` and ``raster not in {k, -1}`` with a 3x3 square.
    MiVOS draws on the *padded* canvas, stretching the scribble over the padding (up to ``pad`` pixels
    off at the edges): :func:`davis_scribble_maps` does the same by default (``padded_canvas=True``);
    ``padded_canvas=False`` draws at the true size and pads (the geometrically correct placement).

Interactive (GUI / browser) path: strokes are point lists in image coordinates (x, y) at the true
size with an object id (0 = background); consecutive points are joined by OpenCV lines of thickness 3
(endpoints rounded with Python's ``round``) on a uint8 canvas initialised to 255 (no label); a stroke
of a single point draws nothing. pos = canvas == k, neg = canvas not in {k, 255}, no dilation; both
are zero-padded to the padded size. :class:`ScribbleInteraction` keeps one such interaction: all its
strokes are re-encoded against the previous label map frozen when it started.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import pairwise

import cv2
import numpy as np
import torch

from stcn.interactive.s2m import s2m_mask

NO_SCRIBBLE = -1  # DAVIS raster: pixels no path touches
NO_LABEL = 255  # GUI canvas: pixels no stroke touches
SCRIBBLE_THICKNESS = 3  # GUI scribble strokes (MiVOS)
FREE_THICKNESS = 9  # GUI free-hand brush used by the reference (a user setting in MiVOS: 1-100)

Point = Sequence[float]
Stroke = tuple[int, Sequence[Point]]  # (object id, [(x, y), ...])


# ---- DAVIS-interactive path ------------------------------------------------------------------------

def bresenham(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Integer points (n, 2) as (x, y) of the 8-connected Bresenham line from (x0, y0) to (x1, y1),
    both ends included. On an exact tie the minor coordinate steps (as the benchmark's rasteriser)."""
    dx, dy = abs(x1 - x0), abs(y1 - y0)
    sx, sy = (1 if x1 > x0 else -1), (1 if y1 > y0 else -1)
    steep = dy > dx
    major, minor = (dy, dx) if steep else (dx, dy)
    points = np.empty((major + 1, 2), dtype=np.int64)
    decision = 2 * minor - major
    m = 0  # steps taken along the minor axis
    for i in range(major + 1):
        points[i] = (x0 + m * sx, y0 + i * sy) if steep else (x0 + i * sx, y0 + m * sy)
        if decision >= 0:
            m += 1
            decision -= 2 * major
        decision += 2 * minor
    return points


def path_pixels(path: Sequence[Point], size: tuple[int, int]) -> np.ndarray:
    """A normalised path -> the (n, 2) integer (x, y) pixels it covers on a canvas of ``size`` (H, W)."""
    h, w = size
    pts = (np.asarray(path, dtype=np.float64).reshape(-1, 2) * np.array([w - 1, h - 1], dtype=np.float64))
    pts = pts.astype(np.int64)  # truncation, as the benchmark
    if len(pts) < 2:
        return pts
    return np.concatenate([bresenham(*a, *b) for a, b in zip(pts[:-1].tolist(), pts[1:].tolist())])


def rasterize_paths(paths: Iterable[dict], size: tuple[int, int], default: int = NO_SCRIBBLE) -> np.ndarray:
    """Paths of one frame (``[{'path': ..., 'object_id': ...}, ...]``) -> (H, W) int16 raster of object
    ids (``default`` elsewhere); later paths overwrite earlier ones."""
    raster = np.full(size, default, dtype=np.int16)
    for p in paths:
        xy = path_pixels(p["path"], size)
        if len(xy):
            raster[xy[:, 1], xy[:, 0]] = int(p["object_id"])
    return raster


def scribbled_frame(scribble: dict) -> int | None:
    """Index of the first frame of a benchmark scribble dict that holds a path (None if none does)."""
    for t, paths in enumerate(scribble["scribbles"]):
        if paths:
            return t
    return None


def davis_pos_neg(raster: np.ndarray, num_objects: int, dilate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Raster (H, W) of ids (-1 = none) -> pos, neg (K, H, W) uint8 for objects 1..K: pos = raster == k,
    neg = any other scribbled pixel (another object or background), each dilated with a 3x3 square
    (cv2.dilate: nothing grows in from outside the image). pos and neg may overlap after dilation."""
    kernel = np.ones((3, 3), np.uint8)
    scribbled = raster != NO_SCRIBBLE
    pos, neg = [], []
    for k in range(1, num_objects + 1):
        p = (raster == k).astype(np.uint8)
        n = (scribbled & (raster != k)).astype(np.uint8)
        if dilate:
            p, n = cv2.dilate(p, kernel), cv2.dilate(n, kernel)
        pos.append(p)
        neg.append(n)
    return np.stack(pos), np.stack(neg)


def davis_scribble_maps(
    scribble: dict,
    image_size: tuple[int, int],
    pad: tuple[int, int, int, int],
    num_objects: int,
    *,
    padded_canvas: bool = True,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """A benchmark scribble dict -> (frame, raster, pos, neg), all at the padded size.

    image_size: the true (H, W); pad: (left, right, top, bottom). ``padded_canvas=True`` reproduces
    MiVOS (paths stretched over the padded canvas); False draws at the true size and pads with -1.
    Raises ValueError when the scribble holds no path.
    """
    frame = scribbled_frame(scribble)
    if frame is None:
        raise ValueError("the scribble holds no path")
    left, right, top, bottom = pad
    h, w = image_size
    paths = scribble["scribbles"][frame]
    if padded_canvas:
        raster = rasterize_paths(paths, (h + top + bottom, w + left + right))
    else:
        raster = np.pad(rasterize_paths(paths, (h, w)), ((top, bottom), (left, right)), constant_values=NO_SCRIBBLE)
    pos, neg = davis_pos_neg(raster, num_objects)
    return frame, raster, pos, neg


# ---- interactive (GUI) path ------------------------------------------------------------------------

def _pixel(p: Point) -> tuple[int, int]:
    return round(float(p[0])), round(float(p[1]))  # Python rounding: halves to even


def draw_stroke(canvas: np.ndarray, points: Sequence[Point], value: int, thickness: int) -> np.ndarray:
    """Join consecutive points of a stroke with OpenCV lines (LINE_8, round caps) on ``canvas`` (in place)."""
    for a, b in pairwise(points):
        cv2.line(canvas, _pixel(a), _pixel(b), color=int(value), thickness=int(thickness))
    return canvas


def strokes_canvas(strokes: Iterable[Stroke], size: tuple[int, int], thickness: int = SCRIBBLE_THICKNESS) -> np.ndarray:
    """Strokes [(object id, [(x, y), ...]), ...] -> (H, W) uint8 canvas of ids, 255 where nothing is drawn."""
    canvas = np.full(size, NO_LABEL, dtype=np.uint8)
    for object_id, points in strokes:
        draw_stroke(canvas, points, object_id, thickness)
    return canvas


def canvas_pos_neg(canvas: np.ndarray, num_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """GUI canvas (H, W) -> pos, neg (K, H, W) uint8: pos = canvas == k, neg = canvas not in {k, 255}."""
    drawn = canvas != NO_LABEL
    pos = np.stack([canvas == k for k in range(1, num_objects + 1)]).astype(np.uint8)
    neg = np.stack([drawn & (canvas != k) for k in range(1, num_objects + 1)]).astype(np.uint8)
    return pos, neg


def free_hand(objects_prob: np.ndarray, strokes: Iterable[Stroke], thickness: int = FREE_THICKNESS) -> np.ndarray:
    """MiVOS's free-hand painting on the un-padded objects-only probabilities (K, 1, H, W) or (K, H, W):
    each stroke sets its object's channel to 1 and every other channel to 0 under the brush (a
    background stroke, id 0, zeroes all channels). Returns a new array."""
    out = np.array(objects_prob, dtype=np.float32, copy=True)
    planes = out.reshape(out.shape[0], *out.shape[-2:])
    for object_id, points in strokes:
        brush = draw_stroke(np.zeros(planes.shape[-2:], np.uint8), points, 1, thickness).astype(bool)
        planes[:, brush] = 0
        if object_id > 0:
            planes[object_id - 1, brush] = 1
    return out


# ---- S2M inputs -------------------------------------------------------------------------------------

class ScribbleInteraction:
    """One scribble interaction of the GUI path on one frame (MiVOS's ScribbleInteraction + S2M
    controller): the strokes accumulate on a true-size canvas; every :meth:`predict` re-runs S2M with
    all of them against the label map frozen at construction. Start a new interaction to "commit".

    prev_labels: (Hp, Wp) label map of the frame at the padded size (numpy or tensor);
    image_size: the true (H, W); pad: (left, right, top, bottom); num_objects: K.
    """

    def __init__(
        self, prev_labels, image_size: tuple[int, int], pad: tuple[int, int, int, int], num_objects: int,
        thickness: int = SCRIBBLE_THICKNESS,
    ) -> None:
        self.prev_labels = torch.as_tensor(np.asarray(prev_labels)).clone()
        self.image_size = tuple(image_size)
        self.pad = tuple(pad)
        self.num_objects = num_objects
        self.thickness = thickness
        self.canvas = np.full(self.image_size, NO_LABEL, dtype=np.uint8)
        self.strokes: list[Stroke] = []

    def add_stroke(self, object_id: int, points: Sequence[Point]) -> None:
        """A stroke (image coordinates at the true size); id 0 = background, 1..K = objects."""
        if not 0 <= int(object_id) <= self.num_objects:
            raise ValueError(f"object id {object_id} outside 0..{self.num_objects}")
        points = [tuple(map(float, p)) for p in points]
        self.strokes.append((int(object_id), points))
        draw_stroke(self.canvas, points, object_id, self.thickness)

    def pos_neg(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, Hp, Wp) uint8 tensors: the canvas encoded, then zero-padded."""
        left, right, top, bottom = self.pad
        pos, neg = canvas_pos_neg(self.canvas, self.num_objects)
        widths = ((0, 0), (top, bottom), (left, right))
        return torch.from_numpy(np.pad(pos, widths)), torch.from_numpy(np.pad(neg, widths))

    def predict(self, s2m: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
        """S2M on the padded normalised frame (1, 3, Hp, Wp) -> the hard (K+1, 1, Hp, Wp) mask."""
        pos, neg = self.pos_neg()
        return s2m_mask(s2m, image, self.prev_labels, pos, neg)[0]
