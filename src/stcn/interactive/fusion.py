"""Difference-aware fusion (MiVOS): FusionNet, the alignment of the mask difference, one fused frame.

At interaction round r the user corrected frame ``tr``; a target frame ``ti`` re-propagated from ``tr``
towards the nearest previously interacted frame ``tc`` gets, per object k,

    fused_k = sigmoid(FusionNet(image_ti, seg1 = prob_before[k, ti], seg2 = propagated[k, ti],
                                attn = aligned [D+, D-][k], time = [nc, nr]))

with D = new mask - previous probability at ``tr`` (all K+1 channels), D+/- its positive/negative
parts aligned to ``ti`` through a full-softmax affinity between the STCN keys of ``tr`` and ``ti``
(:func:`align_difference`), nc = |tc - ti| / |tc - tr| and nr = |tr - ti| / |tc - tr|. The fused
objects are soft-aggregated (with background) into the new K+1 probabilities (:func:`fuse_frame`).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from stcn.interactive.aggregate import aggregate_wbg
from stcn.interactive.checkpoint import load_network
from stcn.model.memory import get_similarity, softmax

FUSION_IN_CHANNELS = 9  # image (3) + seg1 + seg2 + attn (2) + time (2)


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class FusionNet(nn.Module):
    """conv1 (3x3 9->32 + ReLU), two residual blocks (3x3 + ReLU + 3x3; x = relu(x + r)), final 3x3
    conv 32->1 -> logit of the fused probability. State-dict names are those of ``fusion_stcn.pth``."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(_conv3x3(FUSION_IN_CHANNELS, width), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(_conv3x3(width, width), nn.ReLU(inplace=True), _conv3x3(width, width))
        self.conv3 = nn.Sequential(_conv3x3(width, width), nn.ReLU(inplace=True), _conv3x3(width, width))
        self.relu = nn.ReLU()
        self.final_conv = _conv3x3(width, 1)

    def forward(
        self,
        image: torch.Tensor,
        seg1: torch.Tensor,
        seg2: torch.Tensor,
        attn: torch.Tensor,
        time: torch.Tensor,
        features: dict | None = None,
    ) -> torch.Tensor:
        """image (B, 3, H, W), seg1 / seg2 (B, 1, H, W), attn (B, 2, H, W), time (B, 2) = [nc, nr]
        -> logits (B, 1, H, W). ``features`` (a dict) receives conv1, conv2_branch, conv3_branch."""
        b, _, h, w = image.shape
        time_maps = time.to(image.dtype).view(time.shape[0], 2, 1, 1).expand(b, 2, h, w)
        x = self.conv1(torch.cat([image, seg1, seg2, attn, time_maps], dim=1))
        r2 = self.conv2(x)
        x2 = self.relu(x + r2)
        r3 = self.conv3(x2)
        x3 = self.relu(x2 + r3)
        if features is not None:
            features.update(conv1=x, conv2_branch=r2, conv3_branch=r3)
        return self.final_conv(x3)


def load_fusion(path: str | os.PathLike, device: str | torch.device = "cpu") -> FusionNet:
    """FusionNet from a checkpoint (weights-only ``.pth`` or ``.safetensors``), strict, eval, on ``device``."""
    return load_network(FusionNet, path, device, "FusionNet")


def mask_difference(new_mask: torch.Tensor, old_prob: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D = new - old over the K+1 channels -> (D+, D-) = (clamp(D, 0, 1), clamp(-D, 0, 1))."""
    diff = new_mask - old_prob
    return diff.clamp(0, 1), (-diff).clamp(0, 1)


def attention_weights(mem_key: torch.Tensor, query_key: torch.Tensor) -> torch.Tensor:
    """Full softmax over the memory positions of the L2 affinity between the key of the interacted
    frame (1, C, h, w) or (1, C, 1, h, w) and the key of the target frame (1, C, h, w) -> (1, hw, hw)
    (rows: interacted-frame positions, columns: target-frame positions). The query-norm term of the
    negative squared distance cancels in this softmax and is left out (STCN's affinity)."""
    c = mem_key.shape[1]
    return softmax(get_similarity(mem_key.reshape(1, c, -1), query_key.reshape(1, c, -1)))[0]


def align_difference(
    mem_key: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, query_key: torch.Tensor,
    *, weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Move the mask difference of the interacted frame onto the target frame (MiVOS ``get_attention``).

    pos, neg: (K+1, 1, H, W) at the padded size (H, W multiples of the key stride); keys as in
    :func:`attention_weights`. D+/- are area-averaged to the key resolution, multiplied by the attention
    weights, reshaped and upsampled bilinearly (align_corners=False) -> (K+1, 2, H, W) = [D+, D-] aligned.
    """
    h, w = query_key.shape[-2:]
    if weights is None:
        weights = attention_weights(mem_key, query_key)
    size = pos.shape[-2:]
    out = []
    for d in (pos, neg):
        small = F.interpolate(d, size=(h, w), mode="area")  # mean over each stride x stride block
        aligned = torch.bmm(small.flatten(start_dim=2), weights.expand(small.shape[0], -1, -1))
        out.append(F.interpolate(aligned.view(-1, 1, h, w), size=size, mode="bilinear", align_corners=False))
    return torch.cat(out, dim=1)


def distances(tc: int, tr: int, ti: int) -> tuple[float, float]:
    """(nc, nr) = (|tc - ti|, |tr - ti|) / |tc - tr|: the normalised distances of the target frame ti to
    the previously interacted frame tc (where the pass stops) and to the interacted frame tr."""
    span = abs(tc - tr)
    return abs(tc - ti) / span, abs(tr - ti) / span


def fuse_frame(
    fusion: FusionNet,
    image: torch.Tensor,
    prev_prob: torch.Tensor,
    curr_prob: torch.Tensor,
    attn: torch.Tensor,
    tc: int,
    tr: int,
    ti: int,
) -> torch.Tensor:
    """One fused frame: image (1, 3, H, W); prev_prob = the buffer's K+1 probabilities at ti before this
    round, curr_prob = this round's propagated K+1 probabilities at ti (both (K+1, 1, H, W));
    attn = :func:`align_difference` output (K+1, 2, H, W) -> fused (K+1, 1, H, W) (soft aggregation).
    FusionNet runs once per object (batched over the K objects)."""
    k = curr_prob.shape[0] - 1
    nc, nr = distances(tc, tr, ti)
    time = torch.tensor([[nc, nr]], dtype=torch.float32, device=image.device)
    logits = fusion(
        image.expand(k, -1, -1, -1), prev_prob[1:], curr_prob[1:], attn[1:], time.expand(k, -1)
    )
    return aggregate_wbg(torch.sigmoid(logits), keep_bg=True)
