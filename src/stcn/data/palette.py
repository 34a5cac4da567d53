"""The DAVIS colour palette and reading/writing of indexed label PNGs.

Video-object-segmentation datasets (DAVIS 2017, YouTube-VOS) store masks as *palette* ("P" mode)
PNG files: each pixel holds an object id (0 = background, 1..K = objects) and the palette only
says how to display it.  :data:`DAVIS_PALETTE` is the standard one (the PASCAL VOC colour map):
the colour of index ``i`` is built by spreading the bits of ``i`` over the three channels, most
significant bit first, so index 1 is dark red ``(128, 0, 0)``, 2 is ``(0, 128, 0)``, 3 is
``(128, 128, 0)`` and so on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stcn.errors import DataError

__all__ = ["DAVIS_PALETTE", "davis_palette", "save_label_png", "load_label_png", "load_label_png_with_palette"]


def _build_palette() -> np.ndarray:
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        rgb = [0, 0, 0]
        code = index
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette[index] = rgb
    palette.flags.writeable = False
    return palette


#: The standard DAVIS / PASCAL VOC palette, a read-only ``(256, 3)`` uint8 array.
DAVIS_PALETTE: np.ndarray = _build_palette()


def davis_palette() -> bytes:
    """The DAVIS palette as 768 bytes ``r0 g0 b0 r1 g1 b1 ...``, the form ``Image.putpalette`` takes."""
    return DAVIS_PALETTE.tobytes()


def _palette_bytes(palette) -> bytes:
    if palette is None:
        return davis_palette()
    array = np.asarray(palette)
    if array.dtype.kind not in "ui" or array.size % 3 != 0 or array.size > 768:
        raise ValueError("palette must hold at most 256 RGB triples of integers in 0..255")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError("palette values must lie in 0..255")
    flat = array.astype(np.uint8).reshape(-1)
    if flat.size < 768:
        flat = np.concatenate([flat, np.zeros(768 - flat.size, dtype=np.uint8)])
    return flat.tobytes()


def save_label_png(path: str | os.PathLike, labels: np.ndarray, palette=None) -> None:
    """Write a label map as an indexed ("P" mode) PNG.

    Args:
        path: file to write (its folder must exist).
        labels: ``(H, W)`` integer array with values in 0..255; the pixel value is the object id.
        palette: ``(N, 3)`` or flat ``3N`` integers (N <= 256); defaults to :data:`DAVIS_PALETTE`.
    """
    array = np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(f"labels must be a 2-D (H, W) array, got shape {array.shape}")
    if array.dtype.kind not in "uib":
        raise ValueError(f"labels must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError("label values must lie in 0..255 to fit an indexed PNG")
    array = np.ascontiguousarray(array, dtype=np.uint8)
    height, width = array.shape
    image = Image.frombytes("P", (width, height), array.tobytes())
    image.putpalette(_palette_bytes(palette))
    image.save(os.fspath(path), format="PNG")


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as an ``(H, W)`` uint8 array of object ids (see :func:`load_label_png_with_palette`)."""
    return load_label_png_with_palette(path)[0]


def load_label_png_with_palette(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one label PNG: ``(HxW uint8 object ids, palette)``.

    Palette ("P") PNGs give their indices (not colours) and their palette as an ``(N, 3)`` uint8
    array; 8-bit greyscale (and 1-bit, and 16-bit with values up to 255) PNGs give their grey levels
    and ``None``. Colour images, ids above 255, unreadable or missing files raise
    :class:`stcn.errors.DataError` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "P":
                raw = image.getpalette() or []
                palette = np.array(raw, dtype=np.uint8).reshape(-1, 3) if raw else None
                return np.array(image, dtype=np.uint8), palette
            if mode in ("L", "1"):
                return np.array(image, dtype=np.uint8), None
            if mode.startswith("I"):
                values = np.array(image)
                if values.size and values.max() > 255:
                    raise DataError(
                        f"{path}: the mask holds ids up to {int(values.max())}; at most 255 objects "
                        "(ids 1..255) are supported"
                    )
                if values.size and values.min() < 0:
                    raise DataError(f"{path}: the mask holds negative values")
                return values.astype(np.uint8), None
    except FileNotFoundError:
        raise DataError(f"{path}: mask file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read mask image ({first})") from None
    raise DataError(
        f"{path}: mask is a {mode} colour image; masks must be palette (indexed) or greyscale PNGs "
        "whose pixel values are object ids"
    )
