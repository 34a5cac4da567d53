"""Small building blocks of STCN: residual block, CBAM attention, feature fusion, upsampling.

State-dict names (``conv1``, ``ChannelGate.mlp.1``, ``SpatialGate.spatial.conv`` ...) follow the
original implementation so that released checkpoints load strictly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def split_conv_weight(conv: nn.Conv2d, start: int, stop: int, cache: dict) -> torch.Tensor:
    """``conv.weight[:, start:stop]`` as a dense tensor in the weight's memory format, cached while the
    weight is unchanged (the cache is a plain dict, never part of the state dict)."""
    w = conv.weight
    if torch.compiler.is_compiling():  # traced: the slice is part of the graph (no Python cache)
        return w[:, start:stop]
    if w.is_inference():
        # A weight created under torch.inference_mode() has no version counter, so an in-place change
        # could not be seen: slice it afresh (correct, a little slower; stcn.load_model never makes one).
        return w.detach()[:, start:stop].contiguous(memory_format=_memory_format(w))
    fmt = _memory_format(w)
    key = (id(conv), start, stop, w.data_ptr(), w._version, w.dtype, w.device, fmt)
    part = cache.get(key)
    if part is None:
        for old in [k for k in cache if k[:3] == key[:3]]:
            del cache[old]
        part = cache[key] = w.detach()[:, start:stop].contiguous(memory_format=fmt)
    return part


def _memory_format(w: torch.Tensor) -> torch.memory_format:
    channels_last = w.dim() == 4 and not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


class ResBlock(nn.Module):
    """Pre-activation residual block: ``shortcut(x) + conv2(relu(conv1(relu(x))))``.

    The shortcut is a 3x3 conv (``downsample``) when the width changes, the identity otherwise.
    Input (B, in_dim, H, W) -> output (B, out_dim, H, W).

    Split form, for an input ``cat(x, shared)`` whose last channels are the same for every item of the
    batch (the decoder's f16_thin, the value fuser's key f16): a 3x3 conv over concatenated channels is
    the sum of the convs over each part, and relu acts per channel, so :meth:`shared_part` computes the
    shared channels' contributions once (batch 1) and :meth:`forward_split` adds each item's own.
    Equal to ``forward`` up to float summation order; no parameter changes names or shapes.
    """

    def __init__(self, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        self.downsample = None if in_dim == out_dim else nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.conv2(F.relu(self.conv1(F.relu(x))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return shortcut + r

    def _conv_part(self, conv: nn.Conv2d, x: torch.Tensor, start: int, stop: int, bias: bool) -> torch.Tensor:
        """``conv`` restricted to its input channels [start, stop), with or without its bias."""
        weight = split_conv_weight(conv, start, stop, self.__dict__.setdefault("_split_cache", {}))
        return F.conv2d(x, weight, conv.bias if bias else None, conv.stride, conv.padding, conv.dilation, conv.groups)

    def shared_part(self, shared: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The contributions of the shared input channels [start:] -- ``shared`` (1, in_dim - start, H, W)
        -- to conv1 (bias included) and to the shortcut: (1, out_dim, H, W) each, or ``shared`` itself
        as the shortcut part when the shortcut is the identity."""
        total = self.conv1.in_channels
        conv1 = self._conv_part(self.conv1, F.relu(shared), start, total, bias=True)
        if self.downsample is None:
            return conv1, shared
        return conv1, self._conv_part(self.downsample, shared, start, total, bias=True)

    def forward_split(self, x: torch.Tensor, shared: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """``forward(cat(x, s))`` for per-item channels x (B, start, H, W) and the :meth:`shared_part`
        of a shared s (broadcast over B) -> (B, out_dim, H, W)."""
        conv1, shortcut = shared
        own = x.shape[1]
        r = self._conv_part(self.conv1, F.relu(x), 0, own, bias=False) + conv1
        r = self.conv2(F.relu(r))
        if self.downsample is None:
            shortcut = torch.cat([x, shortcut.expand(x.shape[0], -1, -1, -1)], dim=1)
        else:
            shortcut = self._conv_part(self.downsample, x, 0, own, bias=False) + shortcut
        return shortcut + r


class ChannelGate(nn.Module):
    """CBAM channel attention: a shared MLP on the global average- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        # Index 0 is a flatten and 2 a ReLU: the Linear layers sit at 1 and 3 as in the checkpoints.
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, channels // reduction),
            nn.ReLU(),
            nn.Linear(channels // reduction, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Full-size pooling windows, as the original (same reduction order as its checkpoints saw).
        size = x.shape[-2:]
        avg = self.mlp(F.avg_pool2d(x, size, stride=size))
        mx = self.mlp(F.max_pool2d(x, size, stride=size))
        return x * torch.sigmoid(avg + mx)[:, :, None, None]


class _SpatialConv(nn.Module):
    """Holds the 7x7 conv under the name ``conv`` (checkpoint compatibility)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class SpatialGate(nn.Module):
    """CBAM spatial attention: a 7x7 conv over the channel-wise max and mean."""

    def __init__(self) -> None:
        super().__init__()
        self.spatial = _SpatialConv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel gate then spatial gate."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.SpatialGate(self.ChannelGate(x))


class FeatureFusion(nn.Module):
    """Fuses value-encoder features with the key encoder's f16: block2(b + CBAM(b)), b = block1([x, f16]).

    x (B, Cx, h, w), key_f16 (B, Ck, h, w) with Cx + Ck = in_dim -> (B, out_dim, h, w).
    """

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.block1 = ResBlock(in_dim, out_dim)
        self.attention = CBAM(out_dim)
        self.block2 = ResBlock(out_dim, out_dim)

    def forward(self, x: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        x = self.block1(torch.cat([x, key_f16], dim=1))
        return self.block2(x + self.attention(x))

    def forward_split(self, x: torch.Tensor, key_f16: torch.Tensor) -> torch.Tensor:
        """``forward`` for B items (objects) of one frame: x (B, Cx, h, w), key_f16 (1, Ck, h, w), whose
        half of block1 is computed once (:meth:`ResBlock.shared_part`). Equal up to float summation order."""
        y = self.block1.forward_split(x, self.block1.shared_part(key_f16, x.shape[1]))
        return self.block2(y + self.attention(y))


class UpsampleBlock(nn.Module):
    """Decoder stage: ``out_conv(skip_conv(skip) + bilinear_x2(up))``.

    skip (B, skip_dim, 2h, 2w), up (B, up_dim, h, w) -> (B, out_dim, 2h, 2w).
    """

    def __init__(self, skip_dim: int, up_dim: int, out_dim: int) -> None:
        super().__init__()
        self.skip_conv = nn.Conv2d(skip_dim, up_dim, 3, padding=1)
        self.out_conv = ResBlock(up_dim, out_dim)

    def forward(self, skip: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        x = self.skip_conv(skip) + F.interpolate(up, scale_factor=2, mode="bilinear", align_corners=False)
        return self.out_conv(x)


class KeyProjection(nn.Module):
    """3x3 conv from the key encoder's f16 to the 64-channel key (orthogonal init, zero bias)."""

    def __init__(self, in_dim: int, key_dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Conv2d(in_dim, key_dim, 3, padding=1)
        nn.init.orthogonal_(self.key_proj.weight)
        nn.init.zeros_(self.key_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.key_proj(x)
