"""Stage-0 training clips from static image+mask pairs (FSS-1000, DUTS-TR/TE, ECSSD, BIG, HRSOD).

Layouts (both found by walking the root): FSS-1000 ``<class>/<N>.jpg`` + ``<class>/<N>.png``; the
saliency sets ``<name>.jpg`` + ``<name>.png`` side by side. ``--static-root`` is the folder the
original's ``static_data.zip`` extracts to (``fss/``, ``DUTS-TR/``, ``DUTS-TE/``, ``ecssd/``,
``BIG_small/``, ``HRSOD_small/``), or any one of those sets. Every top-level folder is one set; the
high-resolution sets (names starting with ``BIG`` or ``HRSOD``) count 5 times, as in the original.

One image becomes a 3-frame clip: per sequence an affine scale 0.8-1.5 (nearest) and a
horizontal flip, colour jitter (0.1, 0.05, 0.05, 0.05) and 5 % greyscale; per frame an affine
(±20°, scale 0.9-1.1, shear 10; bicubic for the image *and* the grey-level mask), resize of the
shorter side to the crop (bicubic / nearest), a random crop (padded with the mean colour / 0),
colour jitter (0.1, 0.05, 0.05) and with probability 1/3 a thin-plate-spline warp (12 points,
σ = 0.02; bilinear / nearest). ``gt`` keeps the soft edges of the bicubic mask; ``cls_gt`` is
``gt > 0.5``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors

from stcn.data import augment as A
from stcn.errors import DataError
from stcn.io.frames import read_rgb
from stcn.model.input import normalise

IMAGE_SUFFIXES = (".jpg", ".jpeg")
HIGH_RESOLUTION_PREFIXES = ("big", "hrsod")  # repeated 5x (the original's "use them more")
HIGH_RESOLUTION_REPEAT = 5
EXPECTED_STATIC = ("image+mask pairs: FSS-1000 <class>/<N>.jpg + <N>.png, or <name>.jpg + <name>.png "
                   "(DUTS-TR/TE, ECSSD, BIG, HRSOD)")



@dataclass(frozen=True)
class StaticAugmentConfig:
    crop: int = 384
    sequence_scale: tuple[float, float] = (0.8, 1.5)
    sequence_jitter: tuple[float, float, float, float] = (0.1, 0.05, 0.05, 0.05)
    greyscale_p: float = 0.05
    frame_degrees: float = 20.0
    frame_scale: tuple[float, float] = (0.9, 1.1)
    frame_shear: float = 10.0
    frame_jitter: tuple[float, float, float, float] = (0.1, 0.05, 0.05, 0.0)
    tps_p: float = 1 / 3
    tps_points: int = 12
    tps_sigma: float = 0.02


def static_clip(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                config: StaticAugmentConfig = StaticAugmentConfig(), frames: int = 3
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Deform one image (H, W, 3) uint8 and its mask (H, W) uint8 (0..255, 255 = object) into a
    clip: images (T, 3, S, S) float in [0, 1] and masks (T, 1, S, S) float in [0, 1]."""
    c = config
    size = c.crop
    # ---- per sequence: the same for every frame
    seq_affine = A.Affine.sample(rng, scale=c.sequence_scale)
    flip = bool(rng.random() < 0.5)
    seq_jitter = A.ColourJitter.sample(rng, *c.sequence_jitter)
    grey = bool(rng.random() < c.greyscale_p)

    base_image, base_mask = seq_affine.pair(A.as_image(image), A.as_mask(mask), A.NEAREST, A.NEAREST, A.IMAGE_FILL)
    if flip:
        base_image, base_mask = A.F.horizontal_flip(base_image), A.F.horizontal_flip(base_mask)
    base_image = seq_jitter(base_image)
    if grey:
        base_image = A.greyscale(base_image)
    # the grey-level mask, as a one-channel image, so that the per-frame affine can be bicubic
    base_mask = tv_tensors.Image(base_mask.as_subclass(torch.Tensor).float().div_(255))

    images, masks = [], []
    for _ in range(frames):
        affine = A.Affine.sample(rng, c.frame_degrees, c.frame_scale, c.frame_shear)
        im, gt = affine.pair(base_image, base_mask, A.BICUBIC, A.BICUBIC, A.IMAGE_FILL)
        gt = tv_tensors.wrap(gt.mul(255).round_().div_(255), like=gt)  # 8-bit grey levels, as the PIL original
        im = A.resize_shorter(im, size, A.BICUBIC)
        gt = A.resize_shorter(gt, size, A.NEAREST)
        im, gt = A.pad_to(im, size, A.IMAGE_FILL), A.pad_to(gt, size, [0.0])
        top, left = A.crop_corner(rng, im.shape[-2], im.shape[-1], size)
        im, gt = A.F.crop(im, top, left, size, size), A.F.crop(gt, top, left, size, size)
        im = A.ColourJitter.sample(rng, *c.frame_jitter)(im)
        if rng.random() < c.tps_p:
            grid = A.random_tps_grid(rng, size, size, c.tps_points, c.tps_sigma)
            im = A.grid_warp(im, grid, "bilinear", A.IMAGE_FILL)
            gt = A.grid_warp(gt, grid, "nearest", [0.0])
        images.append(im.as_subclass(torch.Tensor))
        masks.append(gt.as_subclass(torch.Tensor))
    return torch.stack(images), torch.stack(masks)


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def load_binary_mask(path: Path) -> np.ndarray:
    """A static-set mask as (H, W) uint8 with 255 = object: greyscale masks as they are (the
    original's ``convert('L')``), palette masks by index (non-zero = object), 0/1 masks scaled."""
    try:
        with Image.open(path) as im:
            if im.mode == "P":
                mask = (np.asarray(im) != 0).astype(np.uint8) * 255
            else:
                mask = np.array(im.convert("L"))
    except FileNotFoundError:
        raise DataError(f"{path}: mask not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from None
    if mask.size and mask.max() == 1:
        mask = mask * np.uint8(255)
    return mask


@dataclass(frozen=True)
class StaticImageSet:
    """One static data set: its name (top-level folder) and sorted (image, mask) pairs."""

    name: str
    pairs: tuple[tuple[Path, Path], ...]

    @property
    def repeat(self) -> int:
        return HIGH_RESOLUTION_REPEAT if self.name.lower().startswith(HIGH_RESOLUTION_PREFIXES) else 1


def find_static_sets(root: str | os.PathLike) -> list[StaticImageSet]:
    """The static sets under ``root`` (see the module docstring). Raises :class:`DataError` when the
    root is missing, holds no pair, or an image has no mask."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"static dataset root {root}: not a folder (expected {EXPECTED_STATIC})")
    groups: dict[str, list[tuple[Path, Path]]] = {}
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        names = set(files)
        folder_path = Path(folder)
        rel = folder_path.relative_to(root)
        group = rel.parts[0] if rel.parts else root.name
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES or name.startswith("."):
                continue
            mask = stem + ".png"
            if mask not in names:
                raise DataError(f"{folder_path / name}: no mask {mask} beside it (expected {EXPECTED_STATIC})")
            groups.setdefault(group, []).append((folder_path / name, folder_path / mask))
    if not groups:
        raise DataError(f"static dataset root {root}: no .jpg images found (expected {EXPECTED_STATIC})")
    return [StaticImageSet(name, tuple(pairs)) for name, pairs in sorted(groups.items())]


class StaticClips:
    """Clips from the images of one :class:`StaticImageSet` (a source for
    :class:`stcn.data.training.TrainingClips`)."""

    def __init__(self, image_set: StaticImageSet, config: StaticAugmentConfig = StaticAugmentConfig()) -> None:
        self.image_set = image_set
        self.config = config
        self.name = image_set.name

    def __len__(self) -> int:
        return len(self.image_set.pairs)

    def clip(self, position: int, rng: np.random.Generator, max_skip: int | None = None) -> dict[str, torch.Tensor]:
        image_path, mask_path = self.image_set.pairs[position]
        image, mask = read_rgb(image_path), load_binary_mask(mask_path)
        if image.shape[:2] != mask.shape:
            raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but {image_path.name} is "
                            f"{image.shape[1]}x{image.shape[0]}")
        images, masks = static_clip(image, mask, rng, self.config)
        gt = masks
        cls_gt = (gt[:, 0] > 0.5).long()
        return {
            "rgb": normalise(images),
            "gt": gt,
            "sec_gt": torch.zeros_like(gt),
            "selector": torch.tensor([1.0, 0.0]),
            "cls_gt": cls_gt,
        }
