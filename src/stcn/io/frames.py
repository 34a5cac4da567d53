"""Frames in: probing, listing in natural order, the one RGB reader, iterating a folder or a video file.

Frames come from a folder of images (``.jpg``, ``.jpeg``, ``.png``, sorted by name with numbers
compared by value, so ``frame2`` precedes ``frame10``) or from a video file decoded by PyAV (frames
are then named ``00000``, ``00001``, ...). :func:`iter_frames` decodes on a background thread into a
small bounded queue, so nothing here holds a whole video in memory. Every problem raises
:class:`stcn.errors.DataError` with a one-line message that names the file.

    >>> for name, frame in iter_frames("video.mp4"):      # ("00000", HxWx3 uint8), ...
    ...     ...
"""
from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from stcn.errors import DataError
from stcn.io import background

__all__ = ["FRAME_EXTENSIONS", "VIDEO_EXTENSIONS", "DEFAULT_FPS", "VideoInfo", "natural_key", "list_files",
           "list_frames", "read_rgb", "probe", "iter_frames", "count_frames", "frame_name", "first_line"]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv")
DEFAULT_FPS = 24  # DAVIS and YouTube-VOS frame rate, used for frame folders


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (at most 300 characters), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def natural_key(name: str) -> list:
    """Sort key comparing the numbers in a name by value (``frame2`` before ``frame10``)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_name(index: int) -> str:
    """The name of frame ``index`` of a video file: ``00000``, ``00001``, ..."""
    return f"{index:05d}"


# --------------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns without decoding every frame.

    kind: ``"frames"`` (a folder of images) or ``"video"`` (a file PyAV reads). names: the frame names
    in order (for a video ``00000``, ``00001``, ... from the container's frame count). files: the image
    files of a frame folder (empty for a video). fps: the video's average frame rate (None for a folder).
    """

    path: Path
    kind: str
    names: tuple[str, ...]
    width: int
    height: int
    fps: Fraction | None = None
    files: tuple[Path, ...] = ()

    @property
    def num_frames(self) -> int:
        return len(self.names)


def list_files(folder: Path, extensions: tuple[str, ...] = FRAME_EXTENSIONS, what: str = "frames") -> list[Path]:
    """The files of ``folder`` with one of ``extensions`` (hidden files skipped), in natural name order."""
    try:
        entries = [p for p in folder.iterdir()
                   if p.suffix.lower() in extensions and not p.name.startswith(".") and p.is_file()]
    except OSError as exc:
        raise DataError(f"cannot list {what} in {folder}: {exc.strerror or first_line(exc)}") from None
    return sorted(entries, key=lambda p: natural_key(p.name))


def list_frames(folder: Path, extensions: tuple[str, ...] = FRAME_EXTENSIONS) -> list[Path]:
    """The image files of a frame folder in natural name order (the one frame listing); :class:`DataError`
    when two share a name (``a.jpg`` and ``a.png``: frames are known by name without extension)."""
    entries = list_files(folder, extensions)
    seen: dict[str, Path] = {}
    for p in entries:
        if p.stem in seen:
            raise DataError(f"{folder}: two frames are named {p.stem!r} ({seen[p.stem].name} and {p.name})")
        seen[p.stem] = p
    return entries


def _bomb_error(path: Path) -> DataError:
    from stcn.guards import image_pixel_limit

    return DataError(f"{path}: the image is larger than the {image_pixel_limit() / 1e6:.0f} megapixel limit "
                     "for images (a decompression bomb?)")


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image's header; refuses images beyond the decompression-bomb limit."""
    from stcn.guards import check_image_pixels

    try:
        # PIL warns (a second stderr line) between one and two times its limit and raises beyond:
        # both become the one-line refusal below.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                size = image.size
    except FileNotFoundError:
        raise DataError(f"{path}: frame not found") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb_error(path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({first_line(exc)})") from None
    check_image_pixels(*size, path)
    return size


def _open_container(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot open the video ({first_line(exc)}); is it truncated or corrupt?") from None
    if not container.streams.video:
        container.close()
        raise DataError(f"{path}: no video stream found; is the file a video, or is it truncated or corrupt?")
    return container


def _is_mp4_family(container) -> bool:
    return "mp4" in container.format.name or "mov" in container.format.name


def _count_packets(path: Path) -> int:
    import av

    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the video ({first_line(exc)}); is it truncated or corrupt?") from None
    finally:
        container.close()


def probe(path: str | os.PathLike, *, check_sizes: bool = True) -> VideoInfo:
    """Describe a frame folder or a video file without decoding its frames.

    For a folder, every image's header is read (cheap) and ``check_sizes`` refuses frames of mixed
    sizes up front.  Raises :class:`DataError` for a missing path, an empty folder, an unreadable image
    header, a file that is not a video, or a video without a video stream.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        files = list_frames(path)
        if not files:
            raise DataError(f"{path}: no frames (expected {', '.join(FRAME_EXTENSIONS)} images)")
        width, height = _image_size(files[0])
        if check_sizes:
            for f in files[1:]:
                size = _image_size(f)
                if size != (width, height):
                    raise DataError(
                        f"{f}: frame is {size[0]}x{size[1]} but {files[0].name} is {width}x{height}; "
                        "all frames of a video must have the same size"
                    )
        return VideoInfo(path, "frames", tuple(f.stem for f in files), width, height, None, tuple(files))
    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        count = int(stream.frames or 0)
        rate = stream.average_rate or stream.guessed_rate
    finally:
        container.close()
    if width <= 0 or height <= 0:
        raise DataError(f"{path}: the video stream has no frame size; is the file corrupt?")
    if count <= 0:
        count = _count_packets(path)
    if count <= 0:
        raise DataError(f"{path}: the video holds no frames")
    fps = Fraction(rate) if rate else None
    return VideoInfo(path, "video", tuple(frame_name(i) for i in range(count)), width, height, fps)


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames of a frame folder or a video (the container's count, else its packets)."""
    return probe(path, check_sizes=False).num_frames


# --------------------------------------------------------------------------------------------------
# Reading frames
# --------------------------------------------------------------------------------------------------


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as an HxWx3 uint8 RGB array (decoded by content; grey, palette and RGBA converted).
    The one RGB reader of the package: inference, evaluation and the training sets all use it."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: frame not found") from None
    except Image.DecompressionBombError:
        raise _bomb_error(path) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the frame ({first_line(exc)}); is it truncated or corrupt?") from None


def _folder_frames(files: Iterable[Path]) -> Iterator[tuple[str, np.ndarray]]:
    for f in files:
        yield f.stem, read_rgb(f)


def _video_frames(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    import av

    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        promised = int(stream.frames or 0) if _is_mp4_family(container) else 0
        packets = index = 0
        try:
            for packet in container.demux(stream):
                if packet.size:
                    packets += 1
                for frame in packet.decode():
                    yield frame_name(index), frame.to_ndarray(format="rgb24")
                    index += 1
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise DataError(
                f"{path}: cannot decode frame {index} ({first_line(exc)}); is the video truncated or corrupt?"
            ) from None
        if promised and packets < promised:
            raise DataError(
                f"{path}: the video is truncated: its header lists {promised} frames but only {packets} "
                "could be read"
            )
        if index == 0:
            raise DataError(f"{path}: no frame could be decoded")
    finally:
        container.close()


def _same_size(frames: Iterator[tuple[str, np.ndarray]], where: Path) -> Iterator[tuple[str, np.ndarray]]:
    first: tuple[str, tuple[int, int]] | None = None
    for name, frame in frames:
        h, w = frame.shape[:2]
        if first is None:
            first = (name, (w, h))
        elif (w, h) != first[1]:
            fw, fh = first[1]
            raise DataError(
                f"{where}: frame {name} is {w}x{h} but frame {first[0]} is {fw}x{fh}; "
                "all frames of a video must have the same size"
            )
        yield name, frame


def iter_frames(path: str | os.PathLike | VideoInfo, *, prefetch: int = 4) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, HxWx3 uint8 RGB frame)`` for a frame folder or a video file, one at a time.

    Folder frames are named after their files (without extension), video frames ``00000``,
    ``00001``, ...  Decoding runs on a background thread that keeps at most ``prefetch`` frames
    ahead (``prefetch=0``: decode in the caller's thread).  Raises :class:`DataError` (when the
    frame is reached) for a corrupt or truncated image or video, or frames of mixed sizes.
    """
    info = path if isinstance(path, VideoInfo) else probe(path, check_sizes=False)

    def make() -> Iterator[tuple[str, np.ndarray]]:
        source = _folder_frames(info.files) if info.kind == "frames" else _video_frames(info.path)
        return _same_size(source, info.path)

    if prefetch <= 0:
        return make()
    return background.prefetch(make, prefetch, "stcn-frame-reader")
