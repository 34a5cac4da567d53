"""S2M, the interaction-to-mask network of MiVOS: DeepLabV3+ on a ResNet-50 with 6 input channels.

Input (B, 6, H, W) = [normalised padded frame (3), this object's previous hard mask, positive
scribbles, negative scribbles]; output: one logit map (B, 1, H, W) (the caller takes the sigmoid).
State-dict names are those of the released ``s2m.pth`` (368 keys: ``backbone.*`` + ``classifier.*``),
so it loads strictly. torchvision provides the blocks: a ResNet-50 whose layer4 is dilated instead of
strided (output stride 16) and DeepLabV3's ASPP (rates 6, 12, 18 + image pooling).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet50
from torchvision.models.segmentation.deeplabv3 import ASPP

from stcn.interactive.aggregate import aggregate_wbg
from stcn.interactive.checkpoint import load_network

S2M_IN_CHANNELS = 6  # image (3) + previous mask + positive + negative scribbles


class S2MBackbone(nn.Module):
    """ResNet-50 v1.5 without avgpool/fc; conv1 takes 6 channels; layer4 dilated (stays at 1/16).

    Returns (low_level = layer1 output, 256 ch at 1/4; out = layer4 output, 2048 ch at 1/16).
    """

    def __init__(self, in_channels: int = S2M_IN_CHANNELS) -> None:
        super().__init__()
        # replace_stride_with_dilation on layer4: its first block has stride 1 and dilation 1 (also the
        # 1x1 downsample), blocks 2-3 dilation 2: exactly DeepLabV3+'s output stride 16.
        resnet = resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1, self.relu, self.maxpool = resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor, features: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low_level = self.layer1(x)
        x2 = self.layer2(low_level)
        x3 = self.layer3(x2)
        out = self.layer4(x3)
        if features is not None:
            features.update(layer1=low_level, layer2=x2, layer3=x3, layer4=out)
        return low_level, out


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ decoder: ASPP on the 1/16 features, 48-channel projection of the 1/4 features,
    concat (304 ch) -> 3x3 conv + BN + ReLU -> 1x1 conv (with bias) -> logits at 1/4."""

    def __init__(
        self, in_channels: int = 2048, low_level_channels: int = 256, num_classes: int = 1,
        atrous_rates: tuple[int, int, int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.project = nn.Sequential(
            nn.Conv2d(low_level_channels, 48, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True)
        )
        self.aspp = ASPP(in_channels, list(atrous_rates), 256)
        self.aspp.project[3] = nn.Dropout(0.1)  # the original's rate (identity at inference anyway)
        self.classifier = nn.Sequential(
            nn.Conv2d(304, 256, 3, padding=1, bias=False),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, num_classes, 1),
        )

    def forward(self, low_level: torch.Tensor, out: torch.Tensor, features: dict | None = None) -> torch.Tensor:
        low = self.project(low_level)
        if features is None:
            aspp = self.aspp(out)
        else:
            branches = torch.cat([conv(out) for conv in self.aspp.convs], dim=1)
            aspp = self.aspp.project(branches)
            features.update(aspp_branches=branches, aspp=aspp, low_level_project=low)
        aspp = F.interpolate(aspp, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(torch.cat([low, aspp], dim=1))


class S2M(nn.Module):
    """DeepLabV3+ ResNet-50, output stride 16, one output channel (``deeplabv3plus_resnet50``)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = S2MBackbone()
        self.classifier = DeepLabV3PlusHead()

    def forward(self, x: torch.Tensor, features: dict | None = None) -> torch.Tensor:
        """x (B, 6, H, W) -> logits (B, 1, H, W) (bilinear from 1/4). Pass a dict as ``features`` to
        receive the intermediates (layer1..4, aspp_branches, aspp, low_level_project, logits_quarter)."""
        low_level, out = self.backbone(x, features)
        logits = self.classifier(low_level, out, features)
        if features is not None:
            features["logits_quarter"] = logits
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def load_s2m(path: str | os.PathLike, device: str | torch.device = "cpu") -> S2M:
    """S2M from a checkpoint (weights-only ``.pth`` or ``.safetensors``; e.g. the released ``s2m.pth``),
    loaded strictly, in eval mode on ``device``."""
    return load_network(S2M, path, device, "S2M")


def s2m_input(
    image: torch.Tensor, prev_labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """The K inputs of S2M: image (1, 3, H, W) normalised and padded; prev_labels (H, W) the label map
    currently held for the frame (hard: channel 3 of object k = prev_labels == k); pos, neg (K, H, W)
    -> (K, 6, H, W) float32."""
    k = pos.shape[0]
    dtype = image.dtype
    ids = torch.arange(1, k + 1, device=image.device).view(k, 1, 1)
    prev = (prev_labels.to(image.device).unsqueeze(0) == ids).to(dtype)
    guide = torch.stack([prev, pos.to(image.device, dtype), neg.to(image.device, dtype)], dim=1)
    return torch.cat([image.expand(k, -1, -1, -1), guide], dim=1)


@torch.no_grad()
def s2m_mask(
    s2m: S2M, image: torch.Tensor, prev_labels: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run S2M for the K objects of one frame and aggregate: image (1, 3, H, W) normalised and padded,
    prev_labels (H, W) the frame's current label map, pos / neg (K, H, W) scribble maps.

    Returns (mask, logits): mask (K+1, 1, H, W) = aggregate_wbg(sigmoid(logits), hard=True) (a
    near-one-hot mask: what the propagation receives), logits (K, 1, H, W). The K objects run as one batch.
    """
    logits = s2m(s2m_input(image, prev_labels, pos, neg))
    return aggregate_wbg(torch.sigmoid(logits), keep_bg=True, hard=True), logits
