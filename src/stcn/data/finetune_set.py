"""Your own videos for ``stcn train --stage finetune --data DIR``, sparse annotations allowed.

Layout: ``DIR/JPEGImages/<video>/*.jpg`` and ``DIR/Annotations/<video>/*.png`` (palette or greyscale
PNGs whose value is the object id, 0 background), the mask of ``x.jpg`` being ``x.png``. Only some
frames of a video need a mask.

Rules (docs/training.md, "Fine-tune on your own videos"):

* every video folder needs its ``Annotations/<video>`` folder with at least one mask of one of its
  frames (anything else is a mistake worth a one-line :class:`DataError`);
* a video is *used* (for training or validation) when at least :data:`MIN_ANNOTATED` of its frames
  are annotated: a training clip is 3 frames, each supervised, so it needs 3 masks; the others are
  left out and listed by :func:`describe`. No usable video at all is a :class:`DataError`;
* every mask has the size of its image (checked from the file headers up front, not mid-training).

Training clips are drawn from the annotated frames only: a video becomes a
:class:`stcn.data.video_training.Sequence` of its annotated frames, so every frame of a clip (its first one
included, whichever way the clip runs) has a ground-truth mask. The max skip of the curriculum counts
video frames: it is divided by the video's median gap between annotations (as YouTube-VOS's by 5).

``--val-fraction F`` holds out ``round(F * n)`` (at least 1, and leaving at least 1 for training) of
the ``n`` usable videos, chosen by a hash of their names, so the choice of one video does not depend
on which other videos are in DIR.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stcn.data.video_training import IMAGE_SUFFIXES, Sequence, VideoAugmentConfig, VideoClips
from stcn.errors import DataError

MIN_ANNOTATED = 3
EXPECTED = "DIR/JPEGImages/<video>/*.jpg and DIR/Annotations/<video>/*.png (masks of some or all frames)"


@dataclass(frozen=True)
class AnnotatedVideo:
    """One video of DIR: all its frames and which of them carry a mask."""

    name: str
    image_dir: Path
    mask_dir: Path
    frames: tuple[str, ...]  # every image file name, sorted
    annotated: tuple[int, ...]  # indices into ``frames`` of the frames with a mask, increasing

    def as_sequence(self) -> Sequence:
        """The annotated frames only, as a training sequence."""
        return Sequence(self.name, self.image_dir, self.mask_dir, tuple(self.frames[i] for i in self.annotated))

    @property
    def gap(self) -> int:
        """Median distance between consecutive annotated frames (>= 1)."""
        if len(self.annotated) < 2:
            return 1
        return max(1, int(np.median(np.diff(self.annotated))))


@dataclass(frozen=True)
class FinetuneSet:
    """The videos of DIR: ``train`` and ``val`` (held out) are usable, ``skipped`` had too few masks."""

    root: Path
    train: tuple[AnnotatedVideo, ...]
    val: tuple[AnnotatedVideo, ...]
    skipped: tuple[AnnotatedVideo, ...]


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def _read_video(name: str, image_dir: Path, mask_dir: Path) -> AnnotatedVideo:
    frames = tuple(sorted(f for f in os.listdir(image_dir) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES))
    if not frames:
        raise DataError(f"finetune data: {image_dir} holds no .jpg frames (expected {EXPECTED})")
    if not mask_dir.is_dir():
        raise DataError(f"finetune data: {mask_dir} not found (video {name} needs at least one annotated frame)")
    masks = {f for f in os.listdir(mask_dir) if f.lower().endswith(".png")}
    annotated = tuple(i for i, f in enumerate(frames) if os.path.splitext(f)[0] + ".png" in masks)
    if not annotated:
        raise DataError(f"finetune data: video {name} has no annotation ({mask_dir} holds no mask named after "
                        f"one of its frames, e.g. {os.path.splitext(frames[0])[0]}.png)")
    for i in annotated:
        image = image_dir / frames[i]
        mask = mask_dir / (os.path.splitext(frames[i])[0] + ".png")
        (iw, ih), (mw, mh) = _image_size(image), _image_size(mask)
        if (iw, ih) != (mw, mh):
            raise DataError(f"{mask}: mask is {mw}x{mh} but its image {image.name} is {iw}x{ih}")
    return AnnotatedVideo(name, image_dir, mask_dir, frames, annotated)


def _held_out_rank(name: str) -> str:
    return hashlib.sha1(name.encode("utf-8")).hexdigest()


def read_finetune_set(root: str | os.PathLike, *, val_fraction: float = 0.0) -> FinetuneSet:
    """Scan DIR (see the module's rules); raises :class:`DataError` with one line for a bad DIR."""
    root = Path(root).expanduser()
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    image_root, mask_root = root / "JPEGImages", root / "Annotations"
    if not root.is_dir():
        raise DataError(f"finetune data: {root} not found (expected {EXPECTED})")
    for folder in (image_root, mask_root):
        if not folder.is_dir():
            raise DataError(f"finetune data: {folder} not found (expected {EXPECTED})")
    names = sorted(d.name for d in os.scandir(image_root) if d.is_dir() and not d.name.startswith("."))
    if not names:
        raise DataError(f"finetune data: no video folder in {image_root} (expected {EXPECTED})")
    videos = [_read_video(n, image_root / n, mask_root / n) for n in names]
    usable = [v for v in videos if len(v.annotated) >= MIN_ANNOTATED]
    skipped = tuple(v for v in videos if len(v.annotated) < MIN_ANNOTATED)
    if not usable:
        raise DataError(f"finetune data: no video in {image_root} has at least {MIN_ANNOTATED} annotated frames "
                        f"(a training clip is {MIN_ANNOTATED} annotated frames)")
    held: set[str] = set()
    if val_fraction > 0:
        if len(usable) < 2:
            raise DataError(f"--val-fraction {val_fraction}: {root} has only one usable video (at least "
                            f"{MIN_ANNOTATED} annotated frames), none is left to hold out")
        count = min(max(1, round(val_fraction * len(usable))), len(usable) - 1)
        held = set(sorted((v.name for v in usable), key=_held_out_rank)[:count])
    return FinetuneSet(root, tuple(v for v in usable if v.name not in held),
                       tuple(v for v in usable if v.name in held), skipped)


def finetune_sources(videos: tuple[AnnotatedVideo, ...] | list[AnnotatedVideo],
                     config: VideoAugmentConfig = VideoAugmentConfig()) -> list[tuple[VideoClips, int]]:
    """One :class:`VideoClips` source per video (each with its own skip divisor, the video's median
    annotation gap), each counted once per epoch, for :class:`stcn.data.training.TrainingClips`."""
    return [(VideoClips([v.as_sequence()], name=f"finetune video {v.name}", config=config, skip_divisor=v.gap), 1)
            for v in videos]


def describe(data: FinetuneSet) -> str:
    """One line saying what was found (printed by ``stcn train``)."""
    frames = sum(len(v.annotated) for v in data.train)
    text = f"finetune data {data.root}: {len(data.train)} training videos ({frames} annotated frames)"
    if data.val:
        text += f", {len(data.val)} held out ({', '.join(v.name for v in data.val)})"
    if data.skipped:
        text += (f"; left out with fewer than {MIN_ANNOTATED} annotated frames: "
                 f"{', '.join(v.name for v in data.skipped)}")
    return text
