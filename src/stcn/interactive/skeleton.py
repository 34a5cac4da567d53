"""Medial-axis skeleton with deterministic tie-breaking (the DAVIS-interactive robot's skeleton).

The robot skeletonises its smoothed error masks with scikit-image's ``medial_axis``. Up to
scikit-image 0.18 that function broke ties between equally ranked pixels with a fixed
``np.random.RandomState(0)`` permutation; from 0.19 on the generator is unseeded and the robot stops
being deterministic. The benchmark's numbers (and our reference) were made with the old behaviour,
which this module rebuilds (our own implementation of the published algorithm, no scikit-image):

1. distance = Euclidean distance transform of the mask (``scipy.ndimage.distance_transform_edt``);
2. every foreground pixel gets a *cornerness* = number of background pixels in its 3x3 neighbourhood
   (outside the image counts as background);
3. the foreground pixels are visited once, ordered by (distance, cornerness, tie-breaker) ascending,
   where the tie-breaker of the i-th foreground pixel in row-major order is
   ``RandomState(0).permutation(n)[i]``;
4. a visited pixel is removed unless it is needed: removing it would change the number of
   8-connected components of its 3x3 neighbourhood, or the neighbourhood (itself included) holds at
   most 2 foreground pixels. Removals take effect immediately for the pixels visited later.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage as ndi

# bit b of a neighbourhood code <-> 3x3 position (b // 3, b % 3); bit 4 is the centre pixel
_CENTRE_BIT = 1 << 4
_EIGHT = ndi.generate_binary_structure(2, 2)


def _pattern(code: int) -> np.ndarray:
    return np.array([bool(code & (1 << b)) for b in range(9)]).reshape(3, 3)


@lru_cache(maxsize=1)
def _tables() -> tuple[tuple[int, ...], np.ndarray]:
    """(keep, cornerness) over the 512 neighbourhood codes: keep[code] = 1 when a foreground centre
    must stay (see the module docstring), cornerness[code] = background pixels among the 9."""
    keep, corner = [], np.empty(512, np.int64)
    for code in range(512):
        p = _pattern(code)
        corner[code] = 9 - int(p.sum())
        if not code & _CENTRE_BIT:
            keep.append(0)
            continue
        with_centre = ndi.label(p, _EIGHT)[1]
        without = ndi.label(_pattern(code & ~_CENTRE_BIT), _EIGHT)[1]
        keep.append(int(with_centre != without or p.sum() < 3))
    return tuple(keep), corner


def neighbourhood_codes(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) int64 3x3 neighbourhood codes (bit 3*dy + dx for offset (dy-1, dx-1));
    pixels outside the image count as background."""
    padded = np.pad(np.asarray(mask, bool), 1)
    h, w = mask.shape
    code = np.zeros((h, w), np.int64)
    for b in range(9):
        dy, dx = divmod(b, 3)
        code |= padded[dy:dy + h, dx:dx + w].astype(np.int64) << b
    return code


def medial_axis(mask: np.ndarray) -> np.ndarray:
    """Medial axis of a 2-D mask (H, W) -> (H, W) bool skeleton (scikit-image <= 0.18 tie-breaking)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"medial_axis needs a 2-D mask, got shape {mask.shape}")
    keep, cornerness = _tables()
    n = int(mask.sum())
    if n == 0:
        return np.zeros_like(mask)
    distance = ndi.distance_transform_edt(mask)[mask]
    corner = cornerness[neighbourhood_codes(mask)][mask]
    tiebreaker = np.random.RandomState(0).permutation(np.arange(n))
    order = np.lexsort((tiebreaker, corner, distance))
    rows, cols = np.nonzero(mask)  # row-major, as the tie-breaker indices
    h, w = mask.shape
    wp = w + 2  # work on a flat copy with a 1-pixel background border: no bound checks in the loop
    result = bytearray(np.pad(mask, 1).astype(np.uint8).tobytes())
    flat = ((rows + 1) * wp + cols + 1)[order].tolist()
    offsets = [(-wp - 1, 1), (-wp, 2), (-wp + 1, 4), (-1, 8), (1, 32), (wp - 1, 64), (wp, 128), (wp + 1, 256)]
    for p in flat:
        code = _CENTRE_BIT
        for off, bit in offsets:
            if result[p + off]:
                code |= bit
        result[p] = keep[code]
    out = np.frombuffer(bytes(result), np.uint8).reshape(h + 2, wp)[1:-1, 1:-1]
    return out.astype(bool)
