"""STCN's decoder: memory read-out + query features -> one logit map per object."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stcn.model.modules import ResBlock, UpsampleBlock


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
