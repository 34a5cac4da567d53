"""Frames in reverse order without holding the video in memory (the backward pass of ``stcn segment``).

* a frame folder is simply read from its last file to its first;
* a video file is decoded in chunks from its end to its start: the packets are demuxed once (no
  decoding) to learn each frame's presentation timestamp and where the keyframes are; then, for each
  chunk from the last, the decoder seeks back to the keyframe at or before the chunk's first frame,
  decodes forward to the chunk's last frame, and the chunk is handed out last frame first. A chunk is
  one group of pictures (keyframe to keyframe) when it fits ``chunk_bytes``, else a slice of one, so
  at most about ``chunk_bytes`` of decoded frames are held at a time, whatever the video's length.

    >>> for name, frame in iter_frames_reversed("clip.mp4", start=120):   # "00120", "00119", ..., "00000"
    ...     ...

Like :func:`stcn.io.frames.iter_frames`, decoding runs on a background thread (``prefetch`` frames
ahead) and every problem is a :class:`~stcn.errors.DataError` with a one-line message.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from stcn.errors import DataError
from stcn.io import background
from stcn.io.frames import VideoInfo, _open_container, first_line, frame_name, probe, read_rgb

__all__ = ["DEFAULT_CHUNK_BYTES", "iter_frames_reversed", "video_timestamps"]

#: Decoded frames held at a time by the reverse video reader (about 40 frames of 1080p RGB).
DEFAULT_CHUNK_BYTES = 256 * 2**20


def video_timestamps(path: Path) -> tuple[list[int], list[int]]:
    """``(pts of each frame in presentation order, indices of the keyframes)`` from demuxing ``path``
    (packets only, nothing decoded). Raises :class:`DataError` when a packet has no timestamp (the
    video cannot then be sought in) or the file is unreadable."""
    import av

    container = _open_container(path)
    try:
        stream = container.streams.video[0]
        packets = [(p.pts, bool(p.is_keyframe)) for p in container.demux(stream) if p.size]
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the video ({first_line(exc)}); is it truncated or corrupt?") from None
    finally:
        container.close()
    if any(pts is None for pts, _ in packets):
        raise DataError(f"{path}: the video's packets have no timestamps, so it cannot be read backwards; "
                        "convert it to a frame folder or use --direction forward")
    packets.sort()  # decode order -> presentation order (B-frames)
    pts = [p for p, _ in packets]
    keys = [i for i, (_, key) in enumerate(packets) if key] or [0]
    if keys[0] != 0:
        keys.insert(0, 0)
    return pts, keys


def _chunks(count: int, keys: list[int], per_chunk: int) -> list[tuple[int, int]]:
    """``[(first, end)]`` frame ranges covering ``0..count``: each group of pictures, split into pieces
    of at most ``per_chunk`` frames. Every piece starts decoding at its group's keyframe."""
    bounds = [k for k in keys if k < count] + [count]
    out = []
    for g0, g1 in zip(bounds, bounds[1:]):
        for s in range(g0, g1, per_chunk):
            out.append((s, min(g1, s + per_chunk)))
    return out


def _video_reversed(info: VideoInfo, start: int, chunk_bytes: int) -> Iterator[tuple[str, np.ndarray]]:
    import av

    pts, keys = video_timestamps(info.path)
    count = min(start + 1, len(pts))
    if count < start + 1:
        raise DataError(f"{info.path}: the video is truncated: frame {start} cannot be read (only {len(pts)} "
                        "frames hold data)")
    per_chunk = max(1, chunk_bytes // max(1, info.width * info.height * 3))
    container = _open_container(info.path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for first, end in reversed(_chunks(count, keys, per_chunk)):
            wanted = {p: i for i, p in enumerate(pts[first:end], first)}
            got: dict[int, np.ndarray] = {}
            try:
                # backward=True: the keyframe at or before the chunk's first frame; decoding restarts there
                container.seek(pts[first], stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts in wanted:
                        got[wanted[frame.pts]] = frame.to_ndarray(format="rgb24")
                    if frame.pts is not None and frame.pts >= pts[end - 1]:
                        break
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                raise DataError(f"{info.path}: cannot decode frames {first}-{end - 1} ({first_line(exc)}); "
                                "is the video truncated or corrupt?") from None
            for i in range(end - 1, first - 1, -1):
                if i not in got:
                    raise DataError(f"{info.path}: frame {i} could not be decoded when reading backwards; "
                                    "is the video truncated or corrupt?")
                frame = got.pop(i)
                if frame.shape[:2] != (info.height, info.width):
                    h, w = frame.shape[:2]
                    raise DataError(f"{info.path}: frame {i} is {w}x{h} but the video is "
                                    f"{info.width}x{info.height}")
                yield frame_name(i), frame
    finally:
        container.close()


def _folder_reversed(info: VideoInfo, start: int) -> Iterator[tuple[str, np.ndarray]]:
    first = None
    for f in reversed(info.files[: start + 1]):
        frame = read_rgb(f)
        if first is None:
            first = frame.shape
        elif frame.shape != first:
            raise DataError(f"{info.path}: frame {f.stem} is {frame.shape[1]}x{frame.shape[0]} but frame "
                            f"{info.files[start].stem} is {first[1]}x{first[0]}; all frames of a video must "
                            "have the same size")
        yield f.stem, frame


def iter_frames_reversed(path: str | os.PathLike | VideoInfo, *, start: int | None = None, prefetch: int = 4,
                         chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(name, HxWx3 uint8 RGB frame)`` for frames ``start, start-1, ..., 0`` (default: from the
    last frame), holding at most about ``chunk_bytes`` of decoded video frames (plus ``prefetch``
    frames in the queue). Names as :func:`stcn.io.frames.iter_frames`."""
    info = path if isinstance(path, VideoInfo) else probe(path, check_sizes=False)
    start = info.num_frames - 1 if start is None else int(start)
    if not 0 <= start < info.num_frames:
        raise ValueError(f"start must be a frame index in 0..{info.num_frames - 1}, not {start}")

    def make() -> Iterator[tuple[str, np.ndarray]]:
        if info.kind == "frames":
            return _folder_reversed(info, start)
        return _video_reversed(info, start, chunk_bytes)

    if prefetch <= 0:
        return make()
    return background.prefetch(make, prefetch, "stcn-reverse-reader")
