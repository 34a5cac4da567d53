"""The training forward pass on a 3-frame clip (the paper's §3 training scheme).

Frame 0 carries the ground truth; frame 1 is segmented from frame 0's memory; frame 1's *predicted*
mask (not detached) is encoded as a value; frame 2 is segmented from frames 0 and 1. Multi-object
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
    """The whole clip pass. frames (B, 3, 3, H, W) normalised; first_mask (B, 3, 1, H, W) the first
    object's ground truth (only frame 0 is used); multi-object: second_mask likewise and selector (B, 2).

    Returns ``logits_1``, ``logits_2`` (aggregated log-odds, (B, O+1, H, W)), ``mask_1``, ``mask_2``
    (B, 1, H, W) and, multi-object, ``sec_mask_1``, ``sec_mask_2``.
    """
    b, t = frames.shape[:2]
    feats = net.encode_key(frames.flatten(0, 1))
    key, f16_thin, f16, f8, f4 = (x.view(b, t, *x.shape[1:]) for x in feats)
    mem_key = key.transpose(1, 2)  # (B, 64, T, h, w)

    def value(i: int, mask: torch.Tensor, others: torch.Tensor | None) -> torch.Tensor:
        return net.encode_value(frames[:, i], f16[:, i], mask, others).unsqueeze(2)  # (B, C, 1, h, w)

    out: dict[str, torch.Tensor] = {}
    if second_mask is None:
        ref_v = value(0, first_mask[:, 0], None)
        logits_1, mask_1 = segment(net, key[:, 1], f16_thin[:, 1], f8[:, 1], f4[:, 1], mem_key[:, :, :1], ref_v)
        values = torch.cat([ref_v, value(1, mask_1, None)], dim=2)
        logits_2, mask_2 = segment(net, key[:, 2], f16_thin[:, 2], f8[:, 2], f4[:, 2], mem_key[:, :, :2], values)
        out.update(mask_1=mask_1, mask_2=mask_2)
    else:
        ref_v = torch.stack(
            [value(0, first_mask[:, 0], second_mask[:, 0]), value(0, second_mask[:, 0], first_mask[:, 0])], dim=1
        )
        logits_1, prev = segment(net, key[:, 1], f16_thin[:, 1], f8[:, 1], f4[:, 1], mem_key[:, :, :1], ref_v, selector)
        prev_v = torch.stack([value(1, prev[:, 0:1], prev[:, 1:2]), value(1, prev[:, 1:2], prev[:, 0:1])], dim=1)
        values = torch.cat([ref_v, prev_v], dim=3)
        logits_2, this = segment(net, key[:, 2], f16_thin[:, 2], f8[:, 2], f4[:, 2], mem_key[:, :, :2], values,
                                 selector)
        out.update(mask_1=prev[:, 0:1], mask_2=this[:, 0:1], sec_mask_1=prev[:, 1:2], sec_mask_2=this[:, 1:2])
    out.update(logits_1=logits_1, logits_2=logits_2)
    return out
