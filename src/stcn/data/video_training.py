"""Stage 1-3 training clips from video data sets (DAVIS 2017, YouTube-VOS, BL30K).

Layouts: a folder of sequences ``<images>/<seq>/*.jpg`` with masks ``<masks>/<seq>/*.png`` (palette
or greyscale PNGs whose value is the object id), one mask per image:

* DAVIS 2017 trainval: ``JPEGImages/480p/<seq>``, ``Annotations/480p/<seq>``; training uses the
  sequences of ``ImageSets/2017/train.txt`` when the file exists (the original's DAVIS subset).
* YouTube-VOS: ``train_480p/JPEGImages/<vid>``, ``train_480p/Annotations/<vid>`` (``stcn data
  resize-youtube`` makes ``train_480p`` from ``train``); frames are annotated every 5 frames, so the
  max skip is divided by 5.
* BL30K: ``JPEGImages/<seq>``, ``Annotations/<seq>``; objects too small are not picked.

A clip: three frames from :func:`stcn.data.synthetic_clips.sample_frame_indices`
(reversed with p = 0.5); per sequence a random-resized-crop to the crop size (area 36-100 %, 25-100 %
for BL30K; bicubic / nearest) and a horizontal flip, colour jitter (0.1, 0.03, 0.03) and 5 %
greyscale; per frame an affine (±15°, shear 10; bicubic / nearest) and colour jitter 0.01. Up to two
objects of the first frame are picked (``selector`` says whether there is a second); a clip whose
first frame shows no usable object is re-drawn up to 5 times, then kept empty.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from stcn.data import augment as A
from stcn.data.synthetic_clips import sample_frame_indices
from stcn.errors import DataError
from stcn.io.frames import read_rgb
from stcn.io.masks import load_label_png
from stcn.model.input import normalise

IMAGE_SUFFIXES = (".jpg", ".jpeg")
TRIALS = 5



@dataclass(frozen=True)
class VideoAugmentConfig:
    crop: int = 384
    crop_scale: tuple[float, float] = (0.36, 1.0)  # (0.25, 1.0) for BL30K
    sequence_jitter: tuple[float, float, float, float] = (0.1, 0.03, 0.03, 0.0)
    greyscale_p: float = 0.05
    frame_degrees: float = 15.0
    frame_shear: float = 10.0
    frame_jitter: tuple[float, float, float, float] = (0.01, 0.01, 0.01, 0.0)


@dataclass(frozen=True)
class Sequence:
    name: str
    image_dir: Path
    mask_dir: Path
    frames: tuple[str, ...]  # file names of the images; the mask of "x.jpg" is "x.png"


def find_sequences(image_root: Path, mask_root: Path, *, what: str, expected: str,
                   subset: set[str] | None = None, min_frames: int = 3) -> list[Sequence]:
    """The sequences under ``image_root`` whose every image has a mask under ``mask_root``.

    Sequences outside ``subset`` (when given) or with fewer than ``min_frames`` images are left out.
    Raises :class:`DataError` naming the path when a folder is missing, a mask is missing, or no
    sequence is left.
    """
    for folder in (image_root, mask_root):
        if not folder.is_dir():
            raise DataError(f"{what}: {folder} not found (expected {expected})")
    sequences = []
    names = sorted(d.name for d in os.scandir(image_root) if d.is_dir() and not d.name.startswith("."))
    for name in names:
        if subset is not None and name not in subset:
            continue
        image_dir, mask_dir = image_root / name, mask_root / name
        frames = sorted(f for f in os.listdir(image_dir) if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES)
        if len(frames) < min_frames:
            continue
        if not mask_dir.is_dir():
            raise DataError(f"{what}: {mask_dir} not found (every sequence in {image_root} needs its masks; "
                            f"expected {expected})")
        masks = set(os.listdir(mask_dir))
        for frame in frames:
            if os.path.splitext(frame)[0] + ".png" not in masks:
                raise DataError(f"{what}: {mask_dir / (os.path.splitext(frame)[0] + '.png')} not found "
                                f"(the mask of {image_dir / frame})")
        sequences.append(Sequence(name, image_dir, mask_dir, tuple(frames)))
    if not sequences:
        raise DataError(f"{what}: no sequence with at least {min_frames} annotated frames in {image_root} "
                        f"(expected {expected})")
    return sequences


class VideoClips:
    """3-frame training clips from a set of sequences (a source for
    :class:`stcn.data.training.TrainingClips`).

    Args:
        sequences: from :func:`find_sequences`.
        name: for messages (``"DAVIS"``, ``"YouTube-VOS"``, ``"BL30K"``).
        skip_divisor: the max skip is divided by this (5 for YouTube-VOS, annotated every 5 frames).
        small_object_filter: BL30K's rule: an object must cover more than 10x10 pixels of the first
            frame, and if it covers at most 30x30 there it must stay below 20x20 in both other frames
            (areas scaled by (crop / 384)^2).
    """

    def __init__(self, sequences: list[Sequence], *, name: str, config: VideoAugmentConfig = VideoAugmentConfig(),
                 skip_divisor: int = 1, small_object_filter: bool = False) -> None:
        self.sequences = sequences
        self.name = name
        self.config = config
        self.skip_divisor = skip_divisor
        self.small_object_filter = small_object_filter

    def __len__(self) -> int:
        return len(self.sequences)

    # ----------------------------------------------------------------------------------------------
    def _load(self, seq: Sequence, frame: str) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb(seq.image_dir / frame)
        mask_path = seq.mask_dir / (os.path.splitext(frame)[0] + ".png")
        labels = load_label_png(mask_path)
        if labels.shape != image.shape[:2]:
            raise DataError(f"{mask_path}: mask is {labels.shape[1]}x{labels.shape[0]} but its image is "
                            f"{image.shape[1]}x{image.shape[0]}")
        return image, labels

    def _augment(self, seq: Sequence, frame_ids: list[int], rng: np.random.Generator
                 ) -> tuple[list[torch.Tensor], list[np.ndarray]]:
        c = self.config
        size = c.crop
        loaded = [self._load(seq, seq.frames[i]) for i in frame_ids]
        height, width = loaded[0][0].shape[:2]
        for (image, _), i in zip(loaded, frame_ids):
            if image.shape[:2] != (height, width):
                raise DataError(f"{seq.image_dir / seq.frames[i]}: {image.shape[1]}x{image.shape[0]}, but "
                                f"{seq.frames[frame_ids[0]]} of the same sequence is {width}x{height}")
        top, left, h, w = A.sample_resized_crop(rng, height, width, c.crop_scale)
        flip = bool(rng.random() < 0.5)
        seq_jitter = A.ColourJitter.sample(rng, *c.sequence_jitter)
        grey = bool(rng.random() < c.greyscale_p)
        images, masks = [], []
        for image, labels in loaded:
            im = F.resized_crop(A.as_image(image), top, left, h, w, [size, size], interpolation=A.BICUBIC,
                                antialias=True).clamp_(0, 1)
            gt = F.resized_crop(A.as_mask(labels), top, left, h, w, [size, size])  # Mask: nearest
            if flip:
                im, gt = F.horizontal_flip(im), F.horizontal_flip(gt)
            im = seq_jitter(im)
            if grey:
                im = A.greyscale(im)
            affine = A.Affine.sample(rng, c.frame_degrees, None, c.frame_shear)
            im, gt = affine.pair(im, gt, A.BICUBIC, A.NEAREST, A.IMAGE_FILL)
            im = A.ColourJitter.sample(rng, *c.frame_jitter)(im)
            images.append(im.as_subclass(torch.Tensor))
            masks.append(gt.as_subclass(torch.Tensor)[0].numpy())
        return images, masks

    def _usable_objects(self, masks: list[np.ndarray]) -> list[int]:
        labels = [int(v) for v in np.unique(masks[0]) if v != 0]
        if not self.small_object_filter:
            return labels
        k = (self.config.crop / 384) ** 2
        keep = []
        for label in labels:
            area = int((masks[0] == label).sum())
            small_later = max(int((m == label).sum()) for m in masks[1:]) < 20 * 20 * k
            if area > 10 * 10 * k and (area > 30 * 30 * k or small_later):
                keep.append(label)
        return keep

    def clip(self, position: int, rng: np.random.Generator, max_skip: int) -> dict[str, torch.Tensor]:
        seq = self.sequences[position]
        skip = max(1, int(max_skip) // self.skip_divisor)
        objects: list[int] = []
        for _ in range(TRIALS):
            frame_ids = sample_frame_indices(rng, len(seq.frames), skip)
            images, masks = self._augment(seq, frame_ids, rng)
            objects = self._usable_objects(masks)
            if objects:
                break
        labels = torch.from_numpy(np.stack(masks))  # (3, S, S) uint8
        if objects:
            first = int(rng.choice(objects))
            others = [o for o in objects if o != first]
            second = int(rng.choice(others)) if others else None
        else:
            first, second = None, None  # an empty clip, as the original keeps after its trials
        gt = (labels == first).float().unsqueeze(1) if first is not None else torch.zeros(labels.shape).unsqueeze(1)
        sec_gt = (labels == second).float().unsqueeze(1) if second is not None else torch.zeros_like(gt)
        cls_gt = gt[:, 0].long() + 2 * sec_gt[:, 0].long()
        rgb = normalise(torch.stack(images))
        return {
            "rgb": rgb,
            "gt": gt,
            "sec_gt": sec_gt,
            "selector": torch.tensor([1.0, 1.0 if second is not None else 0.0]),
            "cls_gt": cls_gt,
        }


# --------------------------------------------------------------------------------------------------
# The three data sets
# --------------------------------------------------------------------------------------------------

DAVIS_EXPECTED = ("JPEGImages/480p/<sequence>/*.jpg and Annotations/480p/<sequence>/*.png, i.e. the extracted "
                  "DAVIS-2017-trainval-480p.zip (stcn data download davis --root DIR)")
YOUTUBE_EXPECTED = ("train_480p/JPEGImages/<video>/*.jpg and train_480p/Annotations/<video>/*.png "
                    "(stcn data download youtube --root DIR makes it)")
BL30K_EXPECTED = "JPEGImages/<sequence>/*.jpg and Annotations/<sequence>/*.png (the extracted BL30K)"


def _first_existing(candidates: list[Path], marker: str) -> Path | None:
    for c in candidates:
        if (c / marker).is_dir():
            return c
    return None


def davis_training_set(root: str | os.PathLike, config: VideoAugmentConfig = VideoAugmentConfig()) -> VideoClips:
    """DAVIS 2017 trainval under ``root`` (or ``root/trainval``, ``root/2017/trainval``)."""
    root = Path(root).expanduser()
    found = _first_existing([root, root / "trainval", root / "2017" / "trainval"], "JPEGImages/480p")
    if found is None:
        raise DataError(f"DAVIS root {root}: no JPEGImages/480p there or in {root}/trainval or "
                        f"{root}/2017/trainval (expected {DAVIS_EXPECTED})")
    subset = None
    train_list = found / "ImageSets" / "2017" / "train.txt"
    if train_list.is_file():
        subset = {line.strip() for line in train_list.read_text().splitlines() if line.strip()}
    sequences = find_sequences(found / "JPEGImages" / "480p", found / "Annotations" / "480p", what="DAVIS",
                               expected=DAVIS_EXPECTED, subset=subset)
    return VideoClips(sequences, name="DAVIS", config=config)


def youtube_training_set(root: str | os.PathLike, config: VideoAugmentConfig = VideoAugmentConfig()) -> VideoClips:
    """YouTube-VOS ``root/train_480p`` (or ``root`` itself when it holds JPEGImages/)."""
    root = Path(root).expanduser()
    found = _first_existing([root / "train_480p", root], "JPEGImages")
    if found is None:
        if (root / "train" / "JPEGImages").is_dir():
            raise DataError(f"YouTube-VOS root {root}: has train/ but not train_480p/; make it with "
                            f"`stcn data resize-youtube --in {root / 'train'} --out {root / 'train_480p'}`")
        raise DataError(f"YouTube-VOS root {root}: no train_480p/JPEGImages (expected {YOUTUBE_EXPECTED})")
    sequences = find_sequences(found / "JPEGImages", found / "Annotations", what="YouTube-VOS",
                               expected=YOUTUBE_EXPECTED)
    return VideoClips(sequences, name="YouTube-VOS", config=config, skip_divisor=5)


def bl30k_training_set(root: str | os.PathLike, config: VideoAugmentConfig | None = None) -> VideoClips:
    """BL30K under ``root`` (or ``root/BL30K``); random-resized-crop area 25-100 %, small objects filtered."""
    root = Path(root).expanduser()
    config = config or VideoAugmentConfig(crop_scale=(0.25, 1.0))
    found = _first_existing([root, root / "BL30K"], "JPEGImages")
    if found is None:
        raise DataError(f"BL30K root {root}: no JPEGImages folder (expected {BL30K_EXPECTED})")
    sequences = find_sequences(found / "JPEGImages", found / "Annotations", what="BL30K", expected=BL30K_EXPECTED)
    return VideoClips(sequences, name="BL30K", config=config, small_object_filter=True)


def write_sequence_folders(image_root: str | os.PathLike, mask_root: str | os.PathLike, videos, *,
                           step: int = 1, quality: int = 95) -> None:
    """Write synthetic videos (name -> :class:`stcn.data.synthetic.SyntheticVideo`) as training
    sequences: ``image_root/<name>/NNNNN.jpg`` and ``mask_root/<name>/NNNNN.png`` for every
    ``step``-th frame (the YouTube-VOS train and BL30K layouts; tests and benchmarks use it)."""
    from PIL import Image

    from stcn.io.masks import save_label_png

    for name, video in videos.items():
        (Path(image_root) / name).mkdir(parents=True, exist_ok=True)
        (Path(mask_root) / name).mkdir(parents=True, exist_ok=True)
        for t in range(0, video.num_frames, step):
            Image.fromarray(video.frames[t]).save(Path(image_root) / name / f"{t:05d}.jpg", quality=quality)
            save_label_png(Path(mask_root) / name / f"{t:05d}.png", video.labels[t])
