"""Masks in and out: the DAVIS palette, label PNGs (the one reader and the one writer), reading a mask
file or folder, and matching masks to the frames they annotate.

Video-object-segmentation datasets (DAVIS 2017, YouTube-VOS) store masks as *palette* ("P" mode)
PNG files: each pixel holds an object id (0 = background, 1..K = objects) and the palette only
says how to display it.  :data:`DAVIS_PALETTE` is the standard one (the PASCAL VOC colour map):
the colour of index ``i`` is built by spreading the bits of ``i`` over the three channels, most
significant bit first, so index 1 is dark red ``(128, 0, 0)``, 2 is ``(0, 128, 0)``, 3 is
``(128, 128, 0)`` and so on.

    >>> masks = read_masks("Annotations/bike")            # {"00000": (HxW uint8, palette or None)}
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stcn.errors import DataError
from stcn.io.frames import first_line, frame_name, list_files

__all__ = ["DAVIS_PALETTE", "davis_palette", "save_label_png", "read_label_png", "load_label_png",
           "read_masks", "match_masks"]


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


def read_label_png(path: str | os.PathLike, what: str = "mask") -> tuple[np.ndarray, np.ndarray | None]:
    """Read one label PNG: ``(HxW uint8 object ids, palette)``. The one label-PNG reader of the package.

    Palette ("P") PNGs give their indices (never their colours, as the DAVIS toolkit) and their palette
    as an ``(N, 3)`` uint8 array; 8-bit greyscale (and 1-bit, and 16-bit with values up to 255) PNGs give
    their grey levels and ``None``. Colour images, ids above 255, files that are not PNG (a lossy JPEG's
    compression noise would become dozens of object ids, even when it is named ``.png``), images beyond
    the decompression-bomb limit, unreadable or missing files raise :class:`stcn.errors.DataError`
    whose message starts with ``what`` and the file.
    """
    from stcn.guards import check_image_pixels, image_pixel_limit

    path = Path(path)
    where = f"{what} {path}"
    try:
        with warnings.catch_warnings():  # PIL's bomb warning would be a second stderr line
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
        with image:
            if image.format != "PNG":
                kind = f"a {image.format} image" if image.format else "not a PNG"
                raise DataError(f"{where} is {kind}; masks must be PNG files (lossless) whose pixel values "
                                "are object ids")
            check_image_pixels(*image.size, where)
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
                        f"{where}: holds ids up to {int(values.max())}; at most 255 objects "
                        "(ids 1..255) are supported"
                    )
                if values.size and values.min() < 0:
                    raise DataError(f"{where}: holds negative values")
                return values.astype(np.uint8), None
    except FileNotFoundError:
        raise DataError(f"{where} not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{where}: the image is larger than the {image_pixel_limit() / 1e6:.0f} megapixel "
                        "limit for images (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{where} cannot be read as a PNG ({first_line(exc)[:200]})") from None
    raise DataError(
        f"{where} is a colour image (mode {mode}); masks must be palette (P) or greyscale (L) PNGs "
        "whose pixel values are object ids"
    )


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG as an ``(H, W)`` uint8 array of object ids (see :func:`read_label_png`)."""
    return read_label_png(path)[0]


def read_masks(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Read a mask PNG or a folder of mask PNGs: ``{name: (HxW uint8 ids, palette or None)}``.

    Names are file names without ``.png``, in natural order.  Other files in a folder are ignored.
    Raises :class:`DataError` for a missing path, a folder without PNGs or an unreadable mask.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such mask file or folder")
    if path.is_dir():
        files = list_files(path, (".png",), "masks")
        if not files:
            raise DataError(f"{path}: no mask PNGs in the folder")
    else:
        files = [path]
    return {f.stem: read_label_png(f) for f in files}


def _normalise_mask_name(name: str, kind: str) -> str:
    # A video's frames are 00000, 00001, ...: also accept masks named 0.png, 12.png, 000012.png.
    if kind == "video" and name.isdigit():
        return frame_name(int(name))
    return name


def match_masks(masks: dict, info, mask_path: Path, warn: Callable[[str], None] | None = None):
    """Map masks to frames and check them.

    Returns ``({frame name: (labels, object ids)}, palette or None)``. A single mask file applies to
    the first frame; a folder's masks apply to the frames they are named after. Raises DataError for a
    mask of another size than the frames, a single mask with no objects, no mask with any object, or no
    mask named after any frame. Empty masks in a folder and masks named after no frame are skipped with
    a warning.
    """
    warn = warn or (lambda message: None)
    single = mask_path.is_file()
    if single:
        ((name, entry),) = masks.items()
        named = {info.names[0]: (entry, str(mask_path))}
    else:
        named = {}
        for name, entry in masks.items():
            key = _normalise_mask_name(name, info.kind)
            named.setdefault(key, (entry, f"{mask_path / name}.png"))
        frames = set(info.names)
        unmatched = [n for n in named if n not in frames]
        if len(unmatched) == len(named):
            first, last = info.names[0], info.names[-1]
            shown = ", ".join(sorted(named)[:3]) + (", ..." if len(named) > 3 else "")
            raise DataError(
                f"{mask_path}: no mask is named after a frame of {info.path} (masks: {shown}; frames: "
                f"{first} .. {last}); name each mask after the frame it annotates"
            )
        if unmatched:
            shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
            warn(f"{mask_path}: {len(unmatched)} mask(s) named after no frame, ignored: {shown}")
        named = {n: v for n, v in named.items() if n in frames}

    order = {n: i for i, n in enumerate(info.names)}
    matched: dict[str, tuple[np.ndarray, list[int]]] = {}
    palette = None
    empty: list[str] = []
    for name in sorted(named, key=order.__getitem__):
        (labels, mask_palette), where = named[name]
        h, w = labels.shape
        if (w, h) != (info.width, info.height):
            raise DataError(
                f"{where}: the mask is {w}x{h} but the frames of {info.path} are {info.width}x{info.height}"
            )
        ids = [int(i) for i in np.unique(labels) if i != 0]
        if not ids:
            if single:
                raise DataError(f"{where}: the mask has no objects (every pixel is 0, the background)")
            empty.append(name)
            continue
        if palette is None and mask_palette is not None:
            palette = mask_palette
        matched[name] = (labels, ids)
    if not matched:
        raise DataError(f"{mask_path}: no mask has any object (every pixel of every mask is 0)")
    if empty:
        warn(f"{mask_path}: mask(s) with no objects ignored: {', '.join(empty[:5])}")
    return matched, palette
