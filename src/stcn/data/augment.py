"""The training augmentations of the paper, as pure functions of a numpy Generator.

Every random parameter is drawn from the item's own ``np.random.Generator`` (no global RNG, no
re-seeding), and the image and its mask go through the same geometric transform by calling
``torchvision.transforms.v2.functional`` with the same parameters on a ``tv_tensors.Image`` and a
``tv_tensors.Mask`` (label maps: nearest-neighbour, fill 0). The affine transforms sample one grid
for the image (bicubic) and the mask (nearest, or bicubic for the static grey-level mask), because
torchvision's tensor affine has no bicubic mode. The thin-plate spline is SciPy's
(``scipy.interpolate.RBFInterpolator`` with the ``thin_plate_spline`` kernel).

Images are float32 ``(3, H, W)`` in [0, 1] (bicubic interpolation overshoots, so results are
clamped, as PIL does); masks are ``uint8`` label maps ``(1, H, W)``, or, for the static pipeline's
per-frame affine (bicubic on the grey-level mask, as the original), float ``(1, H, W)`` in [0, 1].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

#: the fill colour of the original (ImageNet mean, 0..255) for pixels moved in from outside
IMAGE_FILL_255 = (124, 116, 104)
IMAGE_FILL = [c / 255 for c in IMAGE_FILL_255]

BICUBIC = InterpolationMode.BICUBIC
BILINEAR = InterpolationMode.BILINEAR
NEAREST = InterpolationMode.NEAREST


def as_image(array: np.ndarray) -> tv_tensors.Image:
    """(H, W, 3) uint8 -> float Image (3, H, W) in [0, 1]."""
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255))


def as_mask(labels: np.ndarray) -> tv_tensors.Mask:
    """(H, W) uint8 label map -> Mask (1, H, W) uint8."""
    return tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(labels, dtype=np.uint8)).unsqueeze(0))


def _clamped(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(0, 1)


# --------------------------------------------------------------------------------------------------
# Colour
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColourJitter:
    """torchvision's ColorJitter with its parameters drawn by hand: factors uniform in
    [1-b, 1+b], [1-c, 1+c], [1-s, 1+s], hue shift in [-h, h], applied in a random order."""

    order: tuple[int, ...]
    brightness: float | None
    contrast: float | None
    saturation: float | None
    hue: float | None

    @staticmethod
    def sample(rng: np.random.Generator, brightness: float = 0.0, contrast: float = 0.0,
               saturation: float = 0.0, hue: float = 0.0) -> ColourJitter:
        order = tuple(int(i) for i in rng.permutation(4))

        def factor(amount: float) -> float | None:
            return float(rng.uniform(max(0.0, 1 - amount), 1 + amount)) if amount > 0 else None

        b, c, s = factor(brightness), factor(contrast), factor(saturation)
        h = float(rng.uniform(-hue, hue)) if hue > 0 else None
        return ColourJitter(order, b, c, s, h)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for op in self.order:
            if op == 0 and self.brightness is not None:
                image = F.adjust_brightness(image, self.brightness)
            elif op == 1 and self.contrast is not None:
                image = F.adjust_contrast(image, self.contrast)
            elif op == 2 and self.saturation is not None:
                image = F.adjust_saturation(image, self.saturation)
            elif op == 3 and self.hue is not None:
                image = F.adjust_hue(image, self.hue)
        return image


def greyscale(image: torch.Tensor) -> torch.Tensor:
    return F.rgb_to_grayscale(image, num_output_channels=3)


# --------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Affine:
    """torchvision's RandomAffine parameters (about the image centre, no translation)."""

    angle: float = 0.0
    scale: float = 1.0
    shear: float = 0.0  # x shear in degrees (RandomAffine(shear=s) draws it in [-s, s], y shear 0)

    @staticmethod
    def sample(rng: np.random.Generator, degrees: float = 0.0, scale: tuple[float, float] | None = None,
               shear: float = 0.0) -> Affine:
        angle = float(rng.uniform(-degrees, degrees)) if degrees > 0 else 0.0
        s = float(rng.uniform(*scale)) if scale is not None else 1.0
        sh = float(rng.uniform(-shear, shear)) if shear > 0 else 0.0
        return Affine(angle, s, sh)

    @property
    def identity(self) -> bool:
        return self.angle == 0 and self.shear == 0 and self.scale == 1

    def grid(self, height: int, width: int) -> torch.Tensor:
        """The ``grid_sample`` grid (1, H, W, 2) of this affine about the image centre: output pixel
        p reads the input at M^-1 p, M = rotation(angle) . shear_x(shear) . scale (torchvision's
        RandomAffine, whose tensor kernel has no bicubic mode, hence this grid)."""
        a, sh = math.radians(self.angle), math.radians(self.shear)
        forward = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) \
            @ np.array([[1.0, -math.tan(sh)], [0.0, 1.0]]) * self.scale
        half = np.diag([width / 2, height / 2])
        theta = np.linalg.inv(half) @ np.linalg.inv(forward) @ half  # in normalised coordinates
        xs = (torch.arange(width, dtype=torch.float32) * 2 + 1) / width - 1  # pixel centres, align_corners=False
        ys = (torch.arange(height, dtype=torch.float32) * 2 + 1) / height - 1
        gx = float(theta[0, 0]) * xs[None, :] + float(theta[0, 1]) * ys[:, None]
        gy = float(theta[1, 0]) * xs[None, :] + float(theta[1, 1]) * ys[:, None]
        return torch.stack([gx, gy], dim=-1).unsqueeze(0)

    def __call__(self, x: torch.Tensor, interpolation: InterpolationMode, fill) -> torch.Tensor:
        if self.identity:
            return x
        return grid_warp(x, self.grid(*x.shape[-2:]), interpolation.value, fill)

    def pair(self, image: torch.Tensor, mask: torch.Tensor, image_mode: InterpolationMode,
             mask_mode: InterpolationMode, image_fill, mask_fill=(0.0,)) -> tuple[torch.Tensor, torch.Tensor]:
        """The image and its mask through the same grid (one sampling pass when the modes agree)."""
        if self.identity:
            return image, mask
        grid = self.grid(*image.shape[-2:])
        if image_mode == mask_mode and mask.is_floating_point():
            both = grid_warp(torch.cat([image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)]), grid,
                             image_mode.value, [*image_fill, *mask_fill])
            c = image.shape[0]
            return tv_tensors.wrap(both[:c], like=image), tv_tensors.wrap(both[c:], like=mask)
        return (grid_warp(image, grid, image_mode.value, image_fill),
                grid_warp(mask, grid, mask_mode.value, list(mask_fill)))


def sample_resized_crop(rng: np.random.Generator, height: int, width: int, scale: tuple[float, float],
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w): area fraction in ``scale``, log-uniform aspect
    ratio in ``ratio``; ten tries, then the largest centred box of an allowed aspect ratio."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(rng.uniform(*scale))
        aspect = math.exp(float(rng.uniform(*log_ratio)))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resize_shorter(x: torch.Tensor, size: int, interpolation: InterpolationMode) -> torch.Tensor:
    """Resize so that the shorter side is ``size`` (torchvision's Resize(int))."""
    out = F.resize(x, [size], interpolation=interpolation, antialias=True)
    return _clamped(out) if out.is_floating_point() and interpolation != NEAREST else out


def pad_to(x: torch.Tensor, size: int, fill) -> torch.Tensor:
    """RandomCrop(size, pad_if_needed=True)'s padding: a side shorter than ``size`` is padded by the
    difference on both ends (as torchvision does)."""
    h, w = x.shape[-2:]
    if h >= size and w >= size:
        return x
    ph, pw = max(size - h, 0), max(size - w, 0)
    return F.pad(x, [pw, ph, pw, ph], fill=fill)  # left, top, right, bottom


def crop_corner(rng: np.random.Generator, height: int, width: int, size: int) -> tuple[int, int]:
    """RandomCrop's top-left corner in an (already padded) ``height`` x ``width`` image."""
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


# --------------------------------------------------------------------------------------------------
# Thin-plate-spline warp
# --------------------------------------------------------------------------------------------------


def random_tps_grid(rng: np.random.Generator, height: int, width: int, points: int = 12,
                    sigma: float = 0.02, step: int = 4) -> torch.Tensor:
    """A ``grid_sample`` grid (1, H, W, 2) for a random thin-plate-spline warp.

    ``points`` control points uniform over the image move by N(0, sigma) of the image size; the
    output pixel at a moved point reads the input at its original place, and the thin-plate spline
    through these pairs (SciPy's ``RBFInterpolator(kernel="thin_plate_spline", degree=1)``: r² log r
    kernels plus an affine part) gives every other pixel's source. The spline is evaluated every
    ``step`` pixels and interpolated bilinearly in between (it is smooth: the difference stays far
    below a pixel, and it is several times faster).
    """
    from scipy.interpolate import RBFInterpolator

    src = rng.uniform(0.0, 1.0, size=(points, 2)) * 2 - 1  # (x, y) in grid_sample's [-1, 1]
    dst = src + rng.normal(0.0, sigma, size=(points, 2)) * 2
    spline = RBFInterpolator(dst, src, kernel="thin_plate_spline", degree=1)
    hc, wc = max(2, -(-(height - 1) // step) + 1), max(2, -(-(width - 1) // step) + 1)
    # the centres (align_corners=False) of the first and last pixel rows / columns, and between them
    ys = np.linspace(1 / height - 1, 1 - 1 / height, hc)
    xs = np.linspace(1 / width - 1, 1 - 1 / width, wc)
    gx, gy = np.meshgrid(xs, ys)
    coarse = spline(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(1, hc, wc, 2)
    coarse = torch.from_numpy(coarse).float().permute(0, 3, 1, 2)
    grid = nnf.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=True)
    return grid.permute(0, 2, 3, 1).contiguous()


def grid_warp(x: torch.Tensor, grid: torch.Tensor, mode: str, fill) -> torch.Tensor:
    """Sample ``x`` (C, H, W) at ``grid``; outside pixels take ``fill``."""
    like = x
    dtype = x.dtype
    xf = x.as_subclass(torch.Tensor).float().unsqueeze(0)
    fill_t = torch.tensor(fill if isinstance(fill, (list, tuple)) else [fill] * x.shape[0],
                          dtype=torch.float32).view(1, -1, 1, 1)
    out = nnf.grid_sample(xf - fill_t, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill_t
    out = out[0]
    if dtype == torch.uint8:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    elif mode != "nearest":
        out = out.clamp_(0, 1)  # bicubic / bilinear of values in [0, 1]
    return tv_tensors.wrap(out, like=like) if isinstance(like, tv_tensors.TVTensor) else out
