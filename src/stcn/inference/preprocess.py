"""Frame and mask preparation: normalisation, resizing, padding to a multiple of 16, and back."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from stcn.guards import resized_size  # noqa: F401 - the size rule lives with the size checks
from stcn.model.input import normalise


def to_normalised_tensor(image: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """HxWx3 uint8 numpy (what users have) or 3xHxW float tensor in [0, 1] -> (1, 3, H, W) normalised."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 image, got {image.dtype} array of shape {image.shape}")
        x = torch.from_numpy(np.ascontiguousarray(image)).to(device).permute(2, 0, 1).float() / 255
    else:
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3xHxW tensor, got shape {tuple(image.shape)}")
        x = image.to(device, torch.float32)
    return normalise(x).unsqueeze(0)


def resize_image(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Bicubic (a = -0.75), no antialiasing, no clamping, on the normalised tensor: the behaviour of
    torchvision 0.9.1's tensor Resize that the original evaluation used. (N, C, H, W) -> (N, C, *hw)."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    return F.interpolate(x, size=hw, mode="bicubic", align_corners=False, antialias=False)


def resize_labels(labels: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize (source index floor(dst * in / out)) of an (H, W) label map."""
    if tuple(labels.shape[-2:]) == tuple(hw):
        return labels
    return F.interpolate(labels[None, None].float(), size=hw, mode="nearest")[0, 0].to(labels.dtype)


def pad_amounts(height: int, width: int, multiple: int = 16) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding up to a multiple; the odd pixel goes right / bottom."""
    ph = (multiple - height % multiple) % multiple
    pw = (multiple - width % multiple) % multiple
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


def pad(x: torch.Tensor, amounts: tuple[int, int, int, int]) -> torch.Tensor:
    """Zero-pad the last two dims by (left, right, top, bottom)."""
    return F.pad(x, amounts) if any(amounts) else x


def unpad(x: torch.Tensor, amounts: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of :func:`pad`."""
    left, right, top, bottom = amounts
    return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]
