"""The training forward pass on a clip (the paper's §3 training scheme: 3 frames; longer clips extend it).

Frame 0 carries the ground truth; frame 1 is segmented from frame 0's memory; frame 1's *predicted*
mask (not detached) is encoded as a value; frame 2 is segmented from frames 0 and 1, and so on. Multi-object
clips carry up to two objects (``selector`` marks whether the second exists) predicted together with
soft aggregation. The memory read is the same function inference uses, with a full softmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stcn.model.aggregation import aggregate_logits
from stcn.model.memory import read_memory
from stcn.model.network import STCN


def segment(
    net: STCN,
    key: torch.Tensor,
    f16_thin: torch.Tensor,
    f8: torch.Tensor,
    f4: torch.Tensor,
    mem_key: torch.Tensor,
    mem_value: torch.Tensor,
    selector: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment one query frame per sample from its memory with the training (full-softmax) read.

    key (B, 64, h, w), f16_thin (B, 512, h, w), f8, f4 of the query; mem_key (B, 64, T, h, w);
    mem_value (B, 512, T, h, w) single-object, or (B, O, 512, T, h, w) with O = 2 objects.
    Returns the aggregated log-odds (B, O+1, H, W) (background first) and the object probabilities
    softmax(log-odds)[:, 1:] (B, O, H, W). ``selector`` (B, O) zeroes absent objects before aggregation.
    """
    b, _, h, w = key.shape
    single = mem_value.dim() == 5
    values = mem_value.unsqueeze(1) if single else mem_value  # (B, O, C, T, h, w)
    objects = values.shape[1]
    readouts = torch.stack(
        [read_memory(mem_key[i:i + 1].flatten(2), values[i].flatten(2), key[i:i + 1].flatten(2), top_k=None)
         for i in range(b)]
    )  # (B, O, C, h*w)
    readouts = readouts.view(b * objects, -1, h, w)

    def per_object(x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(-1, objects, -1, -1, -1).reshape(b * objects, *x.shape[1:])

    logits = net.decode(readouts, per_object(f16_thin), per_object(f8), per_object(f4))
    logits = logits.view(b, objects, *logits.shape[-2:])
    prob = torch.sigmoid(logits)
    if selector is not None:
        prob = prob * selector[:, :, None, None]
    agg = aggregate_logits(prob, dim=1)
    return agg, F.softmax(agg, dim=1)[:, 1:]


def forward_clip(
    net: STCN,
    frames: torch.Tensor,
    first_mask: torch.Tensor,
    second_mask: torch.Tensor | None = None,
    selector: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The whole clip pass. frames (B, T, 3, H, W) normalised, T >= 2 (the paper's clips have T = 3);
    first_mask (B, T, 1, H, W) the first object's ground truth (only frame 0 is used); multi-object:
    second_mask likewise and selector (B, 2).

    Frame i (1 <= i < T) is segmented from the memory of frames 0..i-1: frame 0 with the ground truth,
    the later ones with their *predicted* masks (not detached), so a long clip's loss sees drift.
    Returns, for every i, ``logits_i`` (aggregated log-odds, (B, O+1, H, W)), ``mask_i`` (B, 1, H, W)
    and, multi-object, ``sec_mask_i``.
    """
    b, t = frames.shape[:2]
    if t < 2:
        raise ValueError(f"a training clip needs at least 2 frames, got {t}")
    feats = net.encode_key(frames.flatten(0, 1))
    key, f16_thin, f16, f8, f4 = (x.view(b, t, *x.shape[1:]) for x in feats)
    mem_key = key.transpose(1, 2)  # (B, 64, T, h, w)
    single = second_mask is None

    def values_of(i: int, masks: torch.Tensor) -> torch.Tensor:
        """Frame i's value(s) from masks (B, O, H, W): (B, C, 1, h, w), or (B, 2, C, 1, h, w) multi-object
        (each object encoded with the other as its 'other objects' mask)."""
        if single:
            return net.encode_value(frames[:, i], f16[:, i], masks[:, 0:1], None).unsqueeze(2)
        return torch.stack([net.encode_value(frames[:, i], f16[:, i], masks[:, k:k + 1], masks[:, 1 - k:2 - k])
                            .unsqueeze(2) for k in range(2)], dim=1)

    masks = first_mask[:, 0] if single else torch.cat([first_mask[:, 0], second_mask[:, 0]], dim=1)
    values = values_of(0, masks)
    out: dict[str, torch.Tensor] = {}
    for i in range(1, t):
        logits, masks = segment(net, key[:, i], f16_thin[:, i], f8[:, i], f4[:, i], mem_key[:, :, :i], values,
                                None if single else selector)
        out[f"logits_{i}"], out[f"mask_{i}"] = logits, masks[:, 0:1]
        if not single:
            out[f"sec_mask_{i}"] = masks[:, 1:2]
        if i + 1 < t:
            values = torch.cat([values, values_of(i, masks)], dim=-3)  # along memory time T
    return out
