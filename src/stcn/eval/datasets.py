"""Benchmark-set layouts as lists of videos to segment: DAVIS 2016/2017, YouTube-VOS, generic folders.

Each reader checks the layout up front and raises :class:`stcn.errors.DataError` with one line naming
what is missing. A :class:`Video` says which frames to read, which masks to give the engine on which
frames, and which frames to write; :mod:`stcn.eval.runners` does the rest.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from stcn.errors import DataError
from stcn.io.frames import list_files, list_frames, natural_key

__all__ = ["Video", "davis_videos", "youtube_videos", "generic_videos", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass(frozen=True)
class Video:
    """One video of a benchmark set.

    Attributes:
        name: the sequence / video name (the output sub-folder).
        frames: every frame file, in order; frame ``t`` is ``frames[t]``.
        annotations: ``{t: mask PNG}`` given to the engine at frame ``t``.
        outputs: the frame indices written, ascending; the others are skipped when possible.
        mode: ``"ids"`` (masks hold object ids, written as palette PNGs in the same ids) or
            ``"binary"`` (DAVIS 2016: every non-zero value is one object, written as 0/255 greyscale).
    """

    name: str
    frames: tuple[Path, ...]
    annotations: dict[int, Path]
    outputs: tuple[int, ...]
    mode: str = "ids"

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def output_name(self, t: int) -> str:
        return self.frames[t].stem + ".png"

    def output_names(self) -> list[str]:
        return [self.output_name(t) for t in self.outputs]


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} {path} not found")
    return path


def video_frames(folder: Path, what: str) -> list[Path]:
    """A benchmark video's frame files (:func:`stcn.io.frames.list_frames`); DataError if none."""
    files = list_frames(_need_dir(folder, what), IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{what} {folder} holds no image (.jpg/.png)")
    return files


def _list_masks(folder: Path) -> list[Path]:
    return list_files(folder, (".png",), "masks")


def _annotated_video(name: str, img_root: Path, ann_root: Path) -> tuple[list[Path], dict[str, int], dict[int, Path]]:
    """A video's frames, ``{frame name: t}`` and ``{t: mask PNG}`` (masks named after their frames)."""
    frames = video_frames(img_root / name, f"{name}: frame folder")
    index = _frame_index(frames)
    ann_dir = _need_dir(ann_root / name, f"{name}: annotation folder")
    annotations = {}
    for m in _list_masks(ann_dir):
        if m.stem not in index:
            raise DataError(f"{name}: annotation {m.name} has no frame {m.stem} in {img_root / name}")
        annotations[index[m.stem]] = m
    if not annotations:
        raise DataError(f"{name}: no annotation PNG in {ann_dir}")
    return frames, index, annotations


def _frame_index(frames: list[Path]) -> dict[str, int]:
    index: dict[str, int] = {}
    for t, f in enumerate(frames):
        if f.stem in index:
            raise DataError(f"{f.parent}: two frames are named {f.stem} ({frames[index[f.stem]].name}, {f.name})")
        index[f.stem] = t
    return index


# --------------------------------------------------------------------------------------------------
# DAVIS
# --------------------------------------------------------------------------------------------------
def resolve_davis_root(root: Path, year: str, split: str) -> Path:
    """The folder holding ``ImageSets/<year>/<split>.txt``: ``root`` itself, or its ``trainval`` /
    ``test-dev`` sub-folder (the original's ``--davis_path .../2017`` layout)."""
    listing = Path("ImageSets") / str(year) / f"{split}.txt"
    if (root / listing).is_file():
        return root
    for sub in (("test-dev", "test-challenge", "trainval") if split != "val" else ("trainval",)):
        if (root / sub / listing).is_file():
            return root / sub
    raise DataError(
        f"sequence list {root / listing} not found (--root must be the DAVIS folder holding "
        f"ImageSets/{year}/, JPEGImages/480p/ and Annotations/480p/)"
    )


def davis_videos(root: str | os.PathLike, *, year: str = "2017", split: str = "val",
                 resolution: str = "480p") -> list[Video]:
    """The sequences of ``ImageSets/<year>/<split>.txt``, each segmented from its first frame's mask.

    Every frame is written. ``year="2016"`` treats all non-zero values as one object (as the
    original's eval_davis_2016.py) and writes 0/255 greyscale PNGs.
    """
    root = _need_dir(Path(root), "DAVIS root")
    year = str(year)
    if year not in ("2016", "2017"):
        raise DataError(f"DAVIS year must be 2016 or 2017, not {year}")
    base = resolve_davis_root(root, year, split)
    listing = base / "ImageSets" / year / f"{split}.txt"
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"sequence list {listing} names no sequence")
    for n in names:
        if "/" in n or n in (".", ".."):
            raise DataError(f"sequence list {listing}: {n!r} is not a sequence name")
    images = _need_dir(base / "JPEGImages" / resolution, "DAVIS frame folder")
    masks = _need_dir(base / "Annotations" / resolution, "DAVIS annotation folder")
    videos = []
    for name in names:
        frames = video_frames(images / name, f"{name}: frame folder")
        ann = masks / name / (frames[0].stem + ".png")
        if not ann.is_file():
            raise DataError(f"{name}: first-frame annotation {ann} not found")
        videos.append(Video(name, tuple(frames), {0: ann}, tuple(range(len(frames))),
                            "binary" if year == "2016" else "ids"))
    return videos


# --------------------------------------------------------------------------------------------------
# YouTube-VOS
# --------------------------------------------------------------------------------------------------
def read_youtube_meta(path: Path) -> dict[str, dict[str, list[str]]]:
    """meta.json -> ``{video: {object id: [frame names]}}``; DataError when missing or malformed."""
    if not path.is_file():
        raise DataError(f"YouTube-VOS meta file {path} not found")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        videos = meta["videos"]
        out = {}
        for vid, info in videos.items():
            out[str(vid)] = {str(k): [str(f) for f in o["frames"]] for k, o in info["objects"].items()}
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except (KeyError, TypeError, AttributeError):
        expected = '{"videos": {video: {"objects": {id: {"frames": [...]}}}}}'
        raise DataError(f"{path}: expected {expected}") from None
    return out


def youtube_videos(root: str | os.PathLike, *, split: str = "valid", all_frames: bool = False) -> list[Video]:
    """The videos of ``<split>/meta.json``, read from ``all_frames/<split>_all_frames/JPEGImages``.

    Objects may first appear on any frame: each annotation PNG in ``<split>/Annotations/<vid>/`` is
    given to the engine at its frame. Written frames: those at or after the first annotated frame
    that meta.json lists (every such frame with ``all_frames``), as the original's eval_youtube.py.
    """
    root = _need_dir(Path(root), "YouTube-VOS root")
    split_dir = _need_dir(root / split, "YouTube-VOS split folder")
    meta = read_youtube_meta(split_dir / "meta.json")
    ann_root = _need_dir(split_dir / "Annotations", "YouTube-VOS annotation folder")
    img_root = _need_dir(root / "all_frames" / f"{split}_all_frames" / "JPEGImages",
                         "YouTube-VOS all-frames folder")
    videos = []
    for vid in sorted(meta):
        frames, index, annotations = _annotated_video(vid, img_root, ann_root)
        first = min(annotations)
        if all_frames:
            outputs = tuple(range(first, len(frames)))
        else:
            listed = {f for names in meta[vid].values() for f in names}
            missing = sorted(listed - set(index))
            if missing:
                raise DataError(f"{vid}: meta.json lists frame {missing[0]}, not found in {img_root / vid}")
            outputs = tuple(sorted(t for t in (index[f] for f in listed) if t >= first))
        videos.append(Video(vid, tuple(frames), dict(sorted(annotations.items())), outputs))
    return videos


# --------------------------------------------------------------------------------------------------
# Generic
# --------------------------------------------------------------------------------------------------
def generic_videos(root: str | os.PathLike) -> list[Video]:
    """``JPEGImages/<seq>/`` + ``Annotations/<seq>/`` of any data: masks (named like their frames) on
    any frames, objects first appearing anywhere. Every frame is written (frames before the first
    mask as background)."""
    root = _need_dir(Path(root), "dataset root")
    img_root = _need_dir(root / "JPEGImages", "frame folder")
    ann_root = _need_dir(root / "Annotations", "annotation folder")
    names = sorted((p.name for p in img_root.iterdir() if p.is_dir() and not p.name.startswith(".")),
                   key=natural_key)
    if not names:
        raise DataError(f"{img_root} holds no sequence folder")
    videos = []
    for name in names:
        frames, index, annotations = _annotated_video(name, img_root, ann_root)
        videos.append(Video(name, tuple(frames), dict(sorted(annotations.items())), tuple(range(len(frames)))))
    return videos
