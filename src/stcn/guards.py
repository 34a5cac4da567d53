"""Checks made before any work starts: image sizes, processing sizes and memory, each a one-line error.

``segment``, ``demo``, ``ui`` and ``eval`` call these before a network is loaded or a file created,
so a request that cannot succeed is refused at once with a message naming the option to change,
instead of ending minutes later in an allocator error, an overflow or a traceback.

* :func:`check_size_option`: ``--size`` is -1 (native) or a shorter side up to :data:`MAX_SIZE`;
* :func:`check_image_pixels`: an image's header size against PIL's decompression-bomb limit;
* :func:`check_frame_fits`: the processed size of the first frame against :data:`MAX_PROCESSED_PIXELS`
  and its estimated peak memory against what the machine has available;
* :func:`check_port`, :func:`check_object_count`: the UI's numeric options.

Writable output folders are checked by :func:`stcn.io.files.check_output_folder`.
"""
from __future__ import annotations

import os
from pathlib import Path

from stcn.errors import DataError, UserError

__all__ = ["MAX_SIZE", "MAX_PROCESSED_PIXELS", "MAX_OBJECTS", "MEMORY_LIMIT_ENV", "check_size_option",
           "image_pixel_limit", "check_image_pixels", "estimate_peak_bytes", "available_bytes",
           "check_frame_fits", "check_image_file_fits", "check_port", "check_object_count"]

#: Largest shorter side ``--size`` accepts (the shorter side of 8K video is 4320).
MAX_SIZE = 8192
#: Largest frame the network processes, in pixels (8K UHD, 7680x4320 = 33.2 M, fits).
MAX_PROCESSED_PIXELS = 2**25
#: Object ids are palette indices of the saved PNGs: 1..255.
MAX_OBJECTS = 255
#: Environment variable capping the memory (MiB) stcn plans for, below what the machine reports.
MEMORY_LIMIT_ENV = "STCN_MEMORY_LIMIT_MB"

# Measured peak bytes of one frame's working memory above the loaded model (CPU, fp32, the `small`
# network: ResNet-18 keys, 128-channel values and decoder; benchmarks/bench_memory_budget.py): a fixed
# part, per processed pixel, and per processed pixel and object decoded / encoded in one batch (480x864:
# 2 objects 230 MB, 5 objects 428 MB; 240x432, 2 objects: 82 MB). The --max-memory planner
# (stcn.inference.budget) scales them to the network it runs.
FRAME_FIXED_BYTES = 40 * 2**20
FRAME_BYTES_PER_PIXEL = 160
FRAME_BYTES_PER_OBJECT_PIXEL = 170
_GIB = 2**30


def check_size_option(size: int, option: str = "--size") -> None:
    """``size`` is -1 (native size) or a shorter side in 1..:data:`MAX_SIZE`; else :class:`UserError`."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise UserError(f"{option} must be an integer, not {size!r}")
    if size == 0 or size < -1:
        raise UserError(f"{option} must be a positive shorter side or -1 (native size), not {size}")
    if size > MAX_SIZE:
        raise UserError(f"{option} {size} is larger than {MAX_SIZE}; use a smaller {option}")


def image_pixel_limit() -> int:
    """PIL's decompression-bomb limit in pixels (``Image.MAX_IMAGE_PIXELS``)."""
    from PIL import Image

    return int(Image.MAX_IMAGE_PIXELS or 2**62)


def check_image_pixels(width: int, height: int, where: str | os.PathLike) -> None:
    """Refuse an image whose header promises more pixels than PIL's decompression-bomb limit
    (:class:`DataError` naming ``where``)."""
    limit = image_pixel_limit()
    if width * height > limit:
        raise DataError(f"{where}: the image is {width}x{height} ({width * height / 1e6:.0f} megapixels), more "
                        f"than the {limit / 1e6:.0f} megapixel limit for images (a decompression bomb?)")


def frame_work_bytes(pixels: int, objects_in_batch: int = 1, scale: float = 1.0) -> int:
    """Working memory (bytes) of one frame of ``pixels`` processed pixels with ``objects_in_batch``
    objects decoded at once, for a network ``scale`` times the small one's channel width."""
    return int(scale * (FRAME_FIXED_BYTES + (FRAME_BYTES_PER_PIXEL + FRAME_BYTES_PER_OBJECT_PIXEL * objects_in_batch)
                        * pixels))


def estimate_peak_bytes(height: int, width: int, num_objects: int) -> int:
    """The least one frame processed at ``height`` x ``width`` needs (bytes): the smallest network with
    its objects decoded one at a time, plus every object's float32 probabilities, which are held together.
    A lower bound, so that only what cannot fit is refused before work starts."""
    pixels = ((height + 15) // 16 * 16) * ((width + 15) // 16 * 16)  # padded to the network's stride
    return frame_work_bytes(pixels) + 4 * (max(1, num_objects) + 1) * pixels


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """Room left under a cgroup v2 memory limit (containers), or None without one."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_bytes(device=None) -> int | None:
    """Memory a new allocation on ``device`` can get, or None when unknown (then nothing is refused).
    :data:`MEMORY_LIMIT_ENV` lowers it."""
    found: list[int] = []
    kind = str(getattr(device, "type", device or "cpu")).split(":")[0]
    if kind == "cuda":
        try:
            import torch

            found.append(int(torch.cuda.mem_get_info(device)[0]))
        except Exception:  # noqa: BLE001 - no driver or no device: unknown rather than refused
            pass
    elif kind == "cpu":
        found += [b for b in (_meminfo_available(), _cgroup_available()) if b is not None]
    limit = os.environ.get(MEMORY_LIMIT_ENV)
    if limit:
        try:
            found.append(int(float(limit) * 2**20))
        except ValueError:
            raise UserError(f"{MEMORY_LIMIT_ENV}={limit!r}: expected a number of MiB") from None
    return min(found) if found else None


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) with the shorter side ``size`` and the longer int(size * long / short) (torchvision's
    rule); ``size <= 0`` keeps the native size."""
    if size <= 0:
        return height, width
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def check_frame_fits(width: int, height: int, size: int, num_objects: int = 1, *, device=None,
                     option: str = "--size", where: str = "the frames") -> tuple[int, int]:
    """Refuse frames of ``width`` x ``height`` that cannot be processed at ``size`` (too many pixels,
    or more memory than available on ``device``). Returns the processed ``(height, width)``."""
    check_size_option(size, option)
    ph, pw = resized_size(height, width, size)
    at = f"{option} {size}" if size > 0 else f"the native size ({option} -1)"
    if ph < 1 or pw < 1:
        raise UserError(f"{where} ({width}x{height}) become empty at {at}; use a larger {option}")
    if ph * pw > MAX_PROCESSED_PIXELS:
        raise UserError(
            f"{where} ({width}x{height}) would be processed at {pw}x{ph} ({ph * pw / 1e6:.0f} megapixels) at "
            f"{at}, more than the {MAX_PROCESSED_PIXELS / 1e6:.1f} megapixel limit; use a smaller {option}"
        )
    need = estimate_peak_bytes(ph, pw, num_objects)
    have = available_bytes(device)
    if have is not None and need > have:
        objects = f" with {num_objects} objects" if num_objects > 1 else ""
        raise UserError(
            f"{where} ({width}x{height}, processed at {pw}x{ph}{objects}) need about {need / _GIB:.1f} GiB of "
            f"memory, but {have / _GIB:.1f} GiB are available; use a smaller {option}"
        )
    return ph, pw


def check_image_file_fits(path: str | os.PathLike, size: int, num_objects: int = 1, *, device=None,
                          option: str = "--size") -> None:
    """:func:`check_frame_fits` for an image file, from its header (nothing is decoded). A file that
    cannot be read is left to the reader, which reports it with its own message when it is reached."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{path}: the image is larger than the {image_pixel_limit() / 1e6:.0f} megapixel limit "
                        "for images (a decompression bomb?)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return
    check_image_pixels(width, height, path)
    check_frame_fits(width, height, size, num_objects, device=device, option=option, where=f"frame {path}")


def check_port(port: int, option: str = "--port") -> None:
    """A TCP port: 0 (any free one) to 65535."""
    if not 0 <= port <= 65535:
        raise UserError(f"{option} must be 0..65535 (0 picks a free port), not {port}")


def check_object_count(count: int, option: str = "--objects") -> None:
    """1..:data:`MAX_OBJECTS` objects (ids beyond 255 cannot be stored in a palette PNG)."""
    if not 1 <= count <= MAX_OBJECTS:
        raise UserError(f"{option} must be 1..{MAX_OBJECTS} (saved masks hold object ids 1..255), not {count}")
