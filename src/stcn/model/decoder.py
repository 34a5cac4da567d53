"""STCN's decoder: memory read-out + query features -> one logit map per object."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stcn.model.modules import ResBlock, UpsampleBlock


class Decoder(nn.Module):
    """compress (1024 -> 512) at 1/16, upsample with skips f8 and f4, 3x3 conv to 1 logit, bilinear x4.

    readout (B, 512, h, w), f16_thin (B, 512, h, w), f8 (B, 512, 2h, 2w), f4 (B, 256, 4h, 4w)
    -> logits (B, 1, 16h, 16w).
    """

    def __init__(self) -> None:
        super().__init__()
        self.compress = ResBlock(1024, 512)
        self.up_16_8 = UpsampleBlock(512, 512, 256)
        self.up_8_4 = UpsampleBlock(256, 256, 256)
        self.pred = nn.Conv2d(256, 1, 3, padding=1)

    def forward(
        self, readout: torch.Tensor, f16_thin: torch.Tensor, f8: torch.Tensor, f4: torch.Tensor
    ) -> torch.Tensor:
        x = self.compress(torch.cat([readout, f16_thin], dim=1))
        x = self.up_16_8(f8, x)
        x = self.up_8_4(f4, x)
        x = self.pred(F.relu(x))
        return F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False)
