"""The network's input contract: RGB in [0, 1], normalised with the ImageNet statistics its ResNet
backbones were trained with. Defined here once; inference, the training sets and the trainer's
image summaries all use it."""
from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # (3, 1, 1) broadcasts over the channel dimension -3 of any (..., 3, H, W) tensor
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return mean, std


def normalise(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float RGB in [0, 1] -> the network's input, ``(x - mean) / std`` per channel."""
    mean, std = _stats(x)
    return (x - mean) / std


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalise`: the network's input back to RGB in [0, 1] (not clamped)."""
    mean, std = _stats(x)
    return x * std + mean
