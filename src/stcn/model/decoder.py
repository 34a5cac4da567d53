"""STCN's decoder: memory read-out + query features -> one logit map per object.

Besides ``forward`` (the original's computation on ``cat(readout, f16_thin)``), the decoder offers a
split form for inference with several objects: :meth:`Decoder.query_features` computes once per frame
everything that depends on the query frame only -- the f16_thin half of the first block's two 3x3
convs (``compress.conv1`` acts on ``relu(cat(r, q)) = cat(relu(r), relu(q))``, ``compress.downsample``
on ``cat(r, q)``, and a conv over concatenated channels is the sum of the convs over each part) and
both skip convolutions of f8 and f4 -- and :meth:`Decoder.decode_objects` adds the per-object rest.
The result equals ``forward`` up to float summation order. No parameter changes names or shapes.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from stcn.model.modules import ResBlock, UpsampleBlock


class DecoderQuery(NamedTuple):
    """The per-frame, object-independent part of the decoder (batch 1)."""

    conv1: torch.Tensor  # compress.conv1's f16_thin half, bias included: (1, hidden, h, w)
    shortcut: torch.Tensor  # compress.downsample's f16_thin half with bias, or f16_thin (identity shortcut)
    skip8: torch.Tensor  # up_16_8.skip_conv(f8): (1, hidden, 2h, 2w)
    skip4: torch.Tensor  # up_8_4.skip_conv(f4): (1, hidden/2, 4h, 4w)


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


def _conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias: bool) -> torch.Tensor:
    return F.conv2d(x, weight, conv.bias if bias else None, conv.stride, conv.padding, conv.dilation, conv.groups)


class Decoder(nn.Module):
    """compress at 1/16, upsample with skips f8 and f4, 3x3 conv to 1 logit, bilinear x4.

    readout (B, V, h, w), f16_thin (B, V, h, w), f8 (B, C8, 2h, 2w), f4 (B, C4, 4h, 4w)
    -> logits (B, 1, 16h, 16w). The paper: V = 512, C8 = 512, C4 = 256, hidden = 512, i.e.
    compress 1024 -> 512, up_16_8 -> 256, up_8_4 -> 256.
    """

    def __init__(self, value_dim: int = 512, f8_dim: int = 512, f4_dim: int = 256, hidden: int = 512) -> None:
        super().__init__()
        half = hidden // 2
        self.compress = ResBlock(2 * value_dim, hidden)
        self.up_16_8 = UpsampleBlock(f8_dim, hidden, half)
        self.up_8_4 = UpsampleBlock(f4_dim, half, half)
        self.pred = nn.Conv2d(half, 1, 3, padding=1)

    def forward(
        self, readout: torch.Tensor, f16_thin: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        x = self.compress(torch.cat([readout, f16_thin], dim=1))
        x = self.up_16_8(f8, x)
        x = self.up_8_4(f4, x)
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)

    # ---- split form (inference) ------------------------------------------------------------------
    def _split(self, conv: nn.Conv2d, start: int, stop: int) -> torch.Tensor:
        cache = self.__dict__.setdefault("_split_cache", {})
        return split_conv_weight(conv, start, stop, cache)

    def query_features(self, f16_thin: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor) -> DecoderQuery:
        """The object-independent part, once per frame: f16_thin (1, V, h, w), f8, f4 (batch 1)."""
        c = self.compress
        v, total = f16_thin.shape[1], c.conv1.in_channels
        r = total - v  # readout channels
        conv1 = _conv(c.conv1, F.relu(f16_thin), self._split(c.conv1, r, total), bias=True)
        if c.downsample is None:
            shortcut = f16_thin
        else:
            shortcut = _conv(c.downsample, f16_thin, self._split(c.downsample, r, total), bias=True)
        return DecoderQuery(conv1, shortcut, self.up_16_8.skip_conv(f8), self.up_8_4.skip_conv(f4))

    def decode_objects(self, readout: torch.Tensor, query: DecoderQuery) -> torch.Tensor:
        """Logits (O, 1, 16h, 16w) of O objects from their read-outs (O, V, h, w) and the frame's
        :meth:`query_features`; equals ``forward(readout, f16_thin, f8, f4)`` with the query
        features broadcast over the objects (up to float summation order)."""
        c = self.compress
        r = readout.shape[1]
        x = _conv(c.conv1, F.relu(readout), self._split(c.conv1, 0, r), bias=False) + query.conv1
        x = c.conv2(F.relu(x))
        if c.downsample is None:
            shortcut = torch.cat([readout, query.shortcut.expand(readout.shape[0], -1, -1, -1)], dim=1)
        else:
            shortcut = _conv(c.downsample, readout, self._split(c.downsample, 0, r), bias=False) + query.shortcut
        x = shortcut + x
        x = self.up_16_8.out_conv(query.skip8 + F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.up_8_4.out_conv(query.skip4 + F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
