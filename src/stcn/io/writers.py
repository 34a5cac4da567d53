"""Outputs on a background thread: label PNGs (and probabilities) and overlay videos.

:class:`LabelWriter` and :class:`OverlayWriter` encode and write on a
:class:`~stcn.io.background.BackgroundWorker`, each fed through a bounded queue (the producer waits
when the writer falls behind). Both are context managers: ``close()`` on success, ``abort()`` when
the block raises.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

from stcn.errors import DataError
from stcn.io.background import BackgroundWorker
from stcn.io.files import move, os_error, remove_quietly, sweep_stale, temp_path
from stcn.io.frames import DEFAULT_FPS, first_line
from stcn.io.masks import DAVIS_PALETTE, save_label_png

__all__ = ["VIDEO_ENCODERS", "LabelWriter", "OverlayWriter", "overlay_frame", "pick_video_encoder"]

#: Encoders tried in order for overlay videos (the first one this FFmpeg build has wins).
VIDEO_ENCODERS = ("libx264", "h264", "libopenh264", "mpeg4")


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
        self._worker = BackgroundWorker("stcn-label-writer", queue_size)

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
            raise os_error(exc, "write", path) from None

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

    def flush(self) -> None:
        """Wait until every frame written so far is on disk (a resumable run's checkpoint needs it)."""
        self._worker.flush()

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
        if atomic:  # a hidden sibling named after this process; those of dead runs are swept first
            sweep_stale(self.final)
            self.path = temp_path(self.final)
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
            raise DataError(f"cannot write the overlay video {self.final}: {first_line(exc)}") from None
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
                f"cannot write the overlay video {self.final} with {self.codec}: {first_line(exc)}"
            ) from None
        self._worker = BackgroundWorker("stcn-overlay-writer", queue_size)

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
            raise DataError(f"cannot write the overlay video {self.final}: {first_line(exc)}") from None

    def _finish(self) -> None:
        import av

        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise DataError(f"cannot write the overlay video {self.final}: {first_line(exc)}") from None

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
                move(self.path, self.final)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._discard()
            raise DataError(f"cannot write the overlay video {self.final}: {first_line(exc)}") from None

    def abort(self) -> None:
        self._worker.abort()
        with contextlib.suppress(Exception):
            self._container.close()
        self._discard()

    def _discard(self) -> None:
        if self.atomic:  # never raises: it runs while another error is being reported
            remove_quietly(self.path)
