"""Streaming readers and writers for inference: frames in, label PNGs / probabilities / overlays out.

Frames come from a folder of images (``.jpg``, ``.jpeg``, ``.png``, sorted by name with numbers
compared by value, so ``frame2`` precedes ``frame10``) or from a video file decoded by PyAV (frames
are then named ``00000``, ``00001``, ...).  Nothing here holds a whole video in memory:

* :func:`iter_frames` decodes on a background thread into a small bounded queue;
* :class:`LabelWriter` and :class:`OverlayWriter` encode and write on background threads, each fed
  through a bounded queue (the producer waits when the writer falls behind);
* :func:`staged_output` writes a run's files into a hidden sibling folder and moves them into place
  only when the run succeeds, so an interrupted or failed run leaves nothing half-written.

Every problem with the inputs or outputs raises :class:`stcn.errors.DataError` with a one-line message
that names the file.

    >>> from stcn.inference.io import iter_frames, read_masks
    >>> for name, frame in iter_frames("video.mp4"):      # ("00000", HxWx3 uint8), ...
    ...     ...
    >>> masks = read_masks("Annotations/bike")            # {"00000": (HxW uint8, palette or None)}
"""
from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from stcn.data.palette import DAVIS_PALETTE, load_label_png_with_palette, save_label_png
from stcn.errors import DataError

__all__ = [
    "FRAME_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "VideoInfo",
    "probe",
    "iter_frames",
    "count_frames",
    "frame_name",
    "read_mask",
    "read_masks",
    "LabelWriter",
    "OverlayWriter",
    "overlay_frame",
    "pick_video_encoder",
    "staged_output",
]

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".m4v", ".avi", ".webm", ".mkv")
#: Encoders tried in order for overlay videos (the first one this FFmpeg build has wins).
VIDEO_ENCODERS = ("libx264", "h264", "libopenh264", "mpeg4")
DEFAULT_FPS = 24  # DAVIS and YouTube-VOS frame rate, used for frame folders


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def _natural_key(name: str):
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


def _list_frame_files(folder: Path) -> list[Path]:
    try:
        entries = [p for p in folder.iterdir()
                   if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".") and p.is_file()]
    except OSError as exc:
        raise DataError(f"cannot list frames in {folder}: {exc.strerror or _first_line(exc)}") from None
    entries.sort(key=lambda p: _natural_key(p.name))
    seen: dict[str, Path] = {}
    for p in entries:
        if p.stem in seen:
            raise DataError(f"{folder}: two frames are named {p.stem!r} ({seen[p.stem].name} and {p.name})")
        seen[p.stem] = p
    return entries


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise DataError(f"{path}: frame not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({_first_line(exc)})") from None


def _open_container(path: Path):
    import av

    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot open the video ({_first_line(exc)}); is it truncated or corrupt?") from None
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
        raise DataError(f"{path}: cannot read the video ({_first_line(exc)}); is it truncated or corrupt?") from None
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
        files = _list_frame_files(path)
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


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode != "RGB":
                image = image.convert("RGB")
            return np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: frame not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the frame ({_first_line(exc)}); is it truncated or corrupt?") from None


def _folder_frames(files: Iterable[Path]) -> Iterator[tuple[str, np.ndarray]]:
    for f in files:
        yield f.stem, _read_image(f)


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
                f"{path}: cannot decode frame {index} ({_first_line(exc)}); is the video truncated or corrupt?"
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


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def _in_background(make: Callable[[], Iterator], maxsize: int, name: str) -> Iterator:
    """Run the iterator ``make()`` on a daemon thread, handing items over through a bounded queue.

    Exceptions in the thread are re-raised here; closing this generator stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        source = None
        try:
            source = make()
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed over to the consumer
            put(_Failure(exc))
        finally:
            if source is not None and hasattr(source, "close"):
                source.close()

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


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
    return _in_background(make, prefetch, "stcn-frame-reader")


# --------------------------------------------------------------------------------------------------
# Reading masks
# --------------------------------------------------------------------------------------------------


def read_mask(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read one label PNG: ``(HxW uint8 object ids, palette or None)``; see
    :func:`stcn.data.palette.load_label_png_with_palette`."""
    return load_label_png_with_palette(path)


def read_masks(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Read a mask PNG or a folder of mask PNGs: ``{name: (HxW uint8 ids, palette or None)}``.

    Names are file names without ``.png``, in natural order.  Other files in a folder are ignored.
    Raises :class:`DataError` for a missing path, a folder without PNGs or an unreadable mask.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such mask file or folder")
    if path.is_dir():
        try:
            files = [p for p in path.iterdir()
                     if p.suffix.lower() == ".png" and not p.name.startswith(".") and p.is_file()]
        except OSError as exc:
            raise DataError(f"cannot list masks in {path}: {exc.strerror or _first_line(exc)}") from None
        if not files:
            raise DataError(f"{path}: no mask PNGs in the folder")
        files.sort(key=lambda p: _natural_key(p.name))
    else:
        files = [path]
    return {f.stem: read_mask(f) for f in files}


# --------------------------------------------------------------------------------------------------
# Background writers
# --------------------------------------------------------------------------------------------------


class _BackgroundWorker:
    """Runs submitted calls in order on one daemon thread, fed through a bounded queue.

    The first exception stops further calls; it is re-raised by the next :meth:`submit` or by
    :meth:`close`.
    """

    def __init__(self, name: str, maxsize: int) -> None:
        self._queue: queue.Queue = queue.Queue(max(1, maxsize))
        self._error: BaseException | None = None
        self._aborted = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None and not self._aborted:
                fn, args = item
                try:
                    fn(*args)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the submitting thread
                    self._error = exc

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, fn: Callable, *args) -> None:
        self._raise_error()
        while True:
            try:
                self._queue.put((fn, args), timeout=0.1)
                return
            except queue.Full:
                self._raise_error()
                if not self._thread.is_alive():
                    raise RuntimeError("the writer thread stopped") from None

    def close(self) -> None:
        """Wait for every submitted call, then re-raise the first failure."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise_error()

    def abort(self) -> None:
        """Skip what is still queued and stop the thread (for a run that failed)."""
        self._aborted = True
        if self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=5)
            self._thread.join(timeout=30)


_W = TypeVar("_W", bound="_Writer")


class _Writer:
    """A background writer as a context manager: ``close()`` (flush, raise failures) on success,
    ``abort()`` (drop what is queued, leave nothing half-written) when the block raises."""

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _W) -> _W:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class LabelWriter(_Writer):
    """Write label maps as palette PNGs (and optionally probabilities) on a background thread.

    ``write(name, labels)`` saves ``folder/<name>.png``; with ``probs`` also
    ``folder/probs/<name>.npz`` holding ``probs`` (float32, (K+1)xHxW, background first) and
    ``object_ids`` (int32, the ids of rows 1..K).  At most ``queue_size`` frames wait in memory.
    Use as a context manager, or call :meth:`close` (which re-raises a failed write as
    :class:`DataError`).  The palette defaults to the DAVIS palette.
    """

    def __init__(self, folder: str | os.PathLike, palette=None, *, queue_size: int = 8) -> None:
        self.folder = Path(folder)
        self.palette = DAVIS_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
        self.count = 0
        self._probs_ready = False
        self._worker = _BackgroundWorker("stcn-label-writer", queue_size)

    def _save(self, name: str, labels: np.ndarray, probs: np.ndarray | None, object_ids) -> None:
        path = self.folder / f"{name}.png"
        try:
            save_label_png(path, labels, self.palette)
            if probs is not None:
                probs_dir = self.folder / "probs"
                if not self._probs_ready:
                    probs_dir.mkdir(parents=True, exist_ok=True)
                    self._probs_ready = True
                path = probs_dir / f"{name}.npz"
                with open(path, "wb") as f:
                    np.savez(f, probs=probs, object_ids=object_ids)
        except OSError as exc:
            raise DataError(f"cannot write {path}: {exc.strerror or _first_line(exc)}") from None

    def write(self, name: str, labels: np.ndarray, probs=None, object_ids=None) -> None:
        """Queue one frame: ``labels`` HxW ids (0..255); ``probs`` (K+1)xHxW (numpy or tensor)."""
        labels = np.ascontiguousarray(labels, dtype=np.uint8)
        ids = None
        if probs is not None:
            if hasattr(probs, "detach"):
                probs = probs.detach().float().cpu().numpy()
            probs = np.array(probs, dtype=np.float32, copy=True)  # the caller may reuse its buffer
            ids = np.asarray(list(object_ids or ()), dtype=np.int32)
            if probs.ndim != 3 or probs.shape[0] != ids.size + 1:
                raise ValueError(f"probs must be (K+1)xHxW with K = {ids.size} object ids, got {probs.shape}")
        self._worker.submit(self._save, name, labels, probs, ids)
        self.count += 1

    def close(self) -> None:
        self._worker.close()

    def abort(self) -> None:
        self._worker.abort()


def overlay_frame(frame: np.ndarray, labels: np.ndarray, palette=None, alpha: float = 0.5) -> np.ndarray:
    """``frame`` (HxWx3 uint8) with each object's pixels blended with its palette colour."""
    colours = np.asarray(DAVIS_PALETTE if palette is None else palette, dtype=np.uint8).reshape(-1, 3)
    if colours.shape[0] < 256:
        colours = np.concatenate([colours, np.zeros((256 - colours.shape[0], 3), np.uint8)])
    labels = np.asarray(labels)
    blended = frame.astype(np.float32) * (1 - alpha) + colours[labels].astype(np.float32) * alpha
    out = np.where((labels > 0)[..., None], blended + 0.5, frame)
    return out.astype(np.uint8)


def pick_video_encoder(candidates: Iterable[str] = VIDEO_ENCODERS) -> str:
    """The first of ``candidates`` (H.264 first, then MPEG-4 part 2) this FFmpeg build can encode."""
    import av

    for name in candidates:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - UnknownCodecError and friends: try the next one
            continue
        return name
    raise DataError("cannot write the overlay video: this FFmpeg build has no H.264 or MPEG-4 encoder")


class OverlayWriter(_Writer):
    """Encode frames with their masks blended in (``alpha``) into a video file, on a background thread.

    The container follows the file's extension (``.mp4``, ``.mov``, ``.mkv``, ``.avi``); the codec is
    H.264 if available, else MPEG-4 part 2; pixels are yuv420p, so odd frame sizes are padded by one
    pixel (edge copied) to even ones.  ``close()`` flushes the encoder and re-raises a failure as
    :class:`DataError`; ``abort()`` stops without flushing (delete the file yourself).

    ``atomic=True``: the video is encoded into a hidden file next to ``path`` and renamed to ``path``
    by a successful ``close()``; ``abort()`` (or any failure) deletes it, so ``path`` is never left
    half-written and an existing file there stays intact until the new one is complete.
    """

    def __init__(self, path: str | os.PathLike, *, width: int, height: int, fps=DEFAULT_FPS, palette=None,
                 alpha: float = 0.5, codec: str | None = None, queue_size: int = 8, atomic: bool = False) -> None:
        import av

        self.final = Path(path)
        self.path = self.final
        if atomic:
            tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
            self.path = self.final.with_name(f".{self.final.stem}.stcn-tmp-{tag}{self.final.suffix}")
        self.atomic = atomic
        self.palette = DAVIS_PALETTE if palette is None else np.asarray(palette, dtype=np.uint8)
        self.alpha = float(alpha)
        self.width, self.height = int(width), int(height)
        self.count = 0
        self.codec = codec or pick_video_encoder()
        rate = Fraction(fps).limit_denominator(1001) if fps else Fraction(DEFAULT_FPS)
        try:
            self._container = av.open(str(self.path), mode="w")
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise DataError(f"cannot write the overlay video {self.final}: {_first_line(exc)}") from None
        try:
            self._stream = self._container.add_stream(self.codec, rate=rate)
            self._stream.width = self.width + self.width % 2
            self._stream.height = self.height + self.height % 2
            self._stream.pix_fmt = "yuv420p"
            self._container.start_encoding()  # opens the file now: a bad path fails here, not later
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            with contextlib.suppress(Exception):
                self._container.close()
            self._discard()
            raise DataError(
                f"cannot write the overlay video {self.final} with {self.codec}: {_first_line(exc)}"
            ) from None
        self._worker = _BackgroundWorker("stcn-overlay-writer", queue_size)

    def _encode(self, frame: np.ndarray, labels: np.ndarray) -> None:
        import av

        image = overlay_frame(frame, labels, self.palette, self.alpha)
        pad_h, pad_w = self.height % 2, self.width % 2
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        try:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise DataError(f"cannot write the overlay video {self.final}: {_first_line(exc)}") from None

    def _finish(self) -> None:
        import av

        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise DataError(f"cannot write the overlay video {self.final}: {_first_line(exc)}") from None

    def write(self, frame: np.ndarray, labels: np.ndarray) -> None:
        """Queue one HxWx3 uint8 frame and its HxW label map."""
        if frame.shape[:2] != (self.height, self.width) or np.shape(labels) != (self.height, self.width):
            raise ValueError(
                f"overlay frames must be {self.width}x{self.height}, got frame {frame.shape} labels {np.shape(labels)}"
            )
        self._worker.submit(self._encode, frame, np.asarray(labels))
        self.count += 1

    def close(self) -> None:
        import av

        try:
            self._worker.submit(self._finish)
            self._worker.close()
        except BaseException:
            self.abort()
            raise
        try:
            self._container.close()
            if self.atomic:
                os.replace(self.path, self.final)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise DataError(f"cannot write the overlay video {self.final}: {_first_line(exc)}") from None

    def abort(self) -> None:
        self._worker.abort()
        with contextlib.suppress(Exception):
            self._container.close()
        self._discard()

    def _discard(self) -> None:
        if self.atomic:
            self.path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Staged (all-or-nothing) output folders
# --------------------------------------------------------------------------------------------------


def _check_target(final: Path, force: bool) -> bool:
    """Whether ``final`` exists (as a folder we may write into); raises if we may not."""
    if final.is_symlink() and not final.exists():
        raise DataError(f"{final}: is a broken symbolic link")
    if not final.exists():
        return False
    if not final.is_dir():
        raise DataError(f"{final}: exists and is not a folder")
    try:
        non_empty = any(final.iterdir())
    except OSError as exc:
        raise DataError(f"cannot read the output folder {final}: {exc.strerror or _first_line(exc)}") from None
    if non_empty and not force:
        raise DataError(
            f"{final}: the output folder exists and is not empty; pass --force to write into it "
            "(files of the same name are replaced) or choose another folder"
        )
    return True


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p ``folder``; return the folders created (deepest last)."""
    created: list[Path] = []
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        p.mkdir()
        created.append(p)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()


def _move_into(src: Path, dst: Path) -> None:
    """Move every file under ``src`` to the same place under ``dst`` (each by an atomic rename)."""
    for root, _dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            os.replace(Path(root) / name, dst / rel / name)


@contextlib.contextmanager
def staged_output(final: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a hidden, empty sibling folder of ``final`` to write into; publish it on success.

    * ``final`` missing: its parents are created, and on success the staging folder is renamed to
      ``final`` (one atomic rename);
    * ``final`` an empty folder, or a non-empty one with ``force=True``: on success each staged file
      replaces the file of the same name in ``final`` (an atomic rename per file); other files in
      ``final`` are left alone;
    * ``final`` non-empty without ``force``, or not a folder: :class:`DataError`, nothing created.

    On any exception (including KeyboardInterrupt) the staging folder, and any parent folder this
    call created, are removed and ``final`` is untouched.
    """
    final = Path(final)
    exists = _check_target(final, force)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    created: list[Path] = []
    try:
        if not exists:
            created = _make_parents(final.parent)
        staging = final.parent / f".{final.name}.stcn-tmp-{tag}"
        staging.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise DataError(f"cannot create the output folder {final}: {exc.strerror or _first_line(exc)}") from None
    try:
        yield staging
        try:
            if exists:
                _move_into(staging, final)
                shutil.rmtree(staging, ignore_errors=True)
            else:
                os.replace(staging, final)
        except OSError as exc:
            raise DataError(f"cannot move the outputs into {final}: {exc.strerror or _first_line(exc)}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
