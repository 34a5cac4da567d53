"""STCN's decoder: memory read-out + query features -> one logit map per object.

Besides ``forward`` (the original's computation on ``cat(readout, f16_thin)``), the decoder offers a
split form for inference with several objects: :meth:`Decoder.query_features` computes once per frame
everything that depends on the query frame only -- the f16_thin half of the first block's two 3x3
convs (``compress.conv1`` acts on ``relu(cat(r, q)) = cat(relu(r), relu(q))``, ``compress.downsample``
on ``cat(r, q)``, and a conv over concatenated channels is the sum of the convs over each part) and
both skip convolutions of f8 and f4 -- and :meth:`Decoder.decode_objects` adds the per-object rest.
The block's split is :meth:`stcn.model.modules.ResBlock.shared_part` / ``forward_split``, which the
value encoder's fuser uses too. The result equals ``forward`` up to float summation order. No
parameter changes names or shapes.
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
    def query_features(self, f16_thin: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor) -> DecoderQuery:
        """The object-independent part, once per frame: f16_thin (1, V, h, w), f8, f4 (batch 1)."""
        c = self.compress
        conv1, shortcut = c.shared_part(f16_thin, c.conv1.in_channels - f16_thin.shape[1])
        return DecoderQuery(conv1, shortcut, self.up_16_8.skip_conv(f8), self.up_8_4.skip_conv(f4))

    def decode_objects(self, readout: torch.Tensor, query: DecoderQuery) -> torch.Tensor:
        """Logits (O, 1, 16h, 16w) of O objects from their read-outs (O, V, h, w) and the frame's
        :meth:`query_features`; equals ``forward(readout, f16_thin, f8, f4)`` with the query
        features broadcast over the objects (up to float summation order)."""
        x = self.compress.forward_split(readout, (query.conv1, query.shortcut))
        x = self.up_16_8.out_conv(query.skip8 + F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.up_8_4.out_conv(query.skip4 + F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
