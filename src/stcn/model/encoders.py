"""The two ResNet encoders of STCN.

Neither downloads anything: ImageNet initialisation is a training concern (``pretrained=True`` here
loads torchvision's weights, which the trainer asks for explicitly).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from stcn.model.modules import FeatureFusion


def _with_conv_bias(module: nn.Module) -> nn.Module:
    """Replace every bias-free Conv2d of ``module`` (recursively) by the same conv with a bias.

    The original value encoder is a ResNet-18 whose convolutions all carry biases.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.Conv2d) and child.bias is None:
            conv = nn.Conv2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride,
                child.padding, child.dilation, child.groups, bias=True,
            )
            with torch.no_grad():
                conv.weight.copy_(child.weight)
                conv.bias.zero_()
            setattr(module, name, conv)
        else:
            _with_conv_bias(child)
    return module


def _widen_first_conv(conv: nn.Conv2d, extra_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``extra_channels`` more inputs, the new input weights set to zero."""
    wide = nn.Conv2d(
        conv.in_channels + extra_channels, conv.out_channels, conv.kernel_size, conv.stride,
        conv.padding, bias=conv.bias is not None,
    )
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None:
            wide.bias.copy_(conv.bias)
    return wide


_BACKBONES = {
    # name: (builder, ImageNet weights, channels of f16, f8, f4)
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V1, (1024, 512, 256)),
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, (256, 128, 64)),
}


class KeyEncoder(nn.Module):
    """A torchvision ResNet up to layer3 (the paper: ResNet-50).

    Image (B, 3, H, W) -> f16 (B, C16, H/16, W/16), f8 (B, C8, H/8, W/8), f4 (B, C4, H/4, W/4), with
    (C16, C8, C4) = ``self.channels`` ((1024, 512, 256) for ResNet-50).
    """

    def __init__(self, backbone: str = "resnet50", pretrained: bool = False) -> None:
        super().__init__()
        if backbone not in _BACKBONES:
            raise ValueError(f"unknown key backbone {backbone!r} (expected one of {sorted(_BACKBONES)})")
        build, weights, self.channels = _BACKBONES[backbone]
        resnet = build(weights=weights if pretrained else None)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.res2 = resnet.layer1  # named res2 in the released checkpoints
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        f4 = self.res2(x)
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        return f16, f8, f4


class ValueEncoder(nn.Module):
    """ResNet-18 (biased convs) up to layer3 on [image, mask(s)], fused with the key encoder's f16.

    image (B, 3, H, W), mask (B, 1, H, W), others (B, 1, H, W) -- the sum of the other objects'
    masks, absent in the single-object network -- key_f16 (B, key_f16_dim, H/16, W/16)
    -> value (B, value_dim, H/16, W/16) (the paper: 1024 and 512).
    """

    def __init__(
        self,
        *,
        key_f16_dim: int = 1024,
        value_dim: int = 512,
        single_object: bool = False,
        pretrained: bool = False,
    ) -> None:
        super().__init__()
        self.single_object = single_object
        resnet = models.resnet18(weights=models.ResNet18_Weights.IMAGENET1K_V1 if pretrained else None)
        resnet.conv1 = _widen_first_conv(resnet.conv1, 1 if single_object else 2)
        _with_conv_bias(resnet)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.fuser = FeatureFusion(key_f16_dim + 256, value_dim)

    def features(self, image: torch.Tensor, mask: torch.Tensor, others: torch.Tensor | None = None) -> torch.Tensor:
        """The ResNet part: image (B, 3, H, W), mask, others (B, 1, H, W) -> (B, 256, H/16, W/16)."""
        inputs = [image, mask] if self.single_object else [image, mask, others]
        x = self.maxpool(self.relu(self.bn1(self.conv1(torch.cat(inputs, dim=1)))))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(
        self,
        image: torch.Tensor,
        key_f16: torch.Tensor,
        mask: torch.Tensor,
        others: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.fuser(self.features(image, mask, others), key_f16)

    def forward_split(
        self,
        image: torch.Tensor,
        key_f16: torch.Tensor,
        mask: torch.Tensor,
        others: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``forward`` for B objects of one frame whose key_f16 (1, C, h, w) is shared: the fuser's
        key-feature half is computed once (:meth:`FeatureFusion.forward_split`); equal up to float
        summation order. image (B, 3, H, W) (an expanded view is fine), mask, others (B, 1, H, W)."""
        return self.fuser.forward_split(self.features(image, mask, others), key_f16)
