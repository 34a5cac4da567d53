"""Bootstrapped cross-entropy (the paper's loss) and the per-clip loss bookkeeping."""
from __future__ import annotations

import torch
import torch.nn.functional as F

BOOTSTRAP_START = 20_000
BOOTSTRAP_END = 70_000
BOOTSTRAP_TOP_P = 0.15


def bootstrap_fraction(
    it: int, start: int = BOOTSTRAP_START, end: int = BOOTSTRAP_END, top_p: float = BOOTSTRAP_TOP_P
) -> float:
    """Fraction of the hardest pixels kept at iteration ``it``: 1 before ``start``, falling linearly to
    ``top_p`` at ``end``, ``top_p`` afterwards."""
    if it < start:
        return 1.0
    if it > end or end <= start:
        return top_p
    return top_p + (1 - top_p) * ((end - it) / (end - start))


def bootstrapped_ce(
    logits: torch.Tensor, target: torch.Tensor, it: int, **schedule: float
) -> tuple[torch.Tensor, float]:
    """logits (1, C, H, W), target (1, H, W) int64 -> (loss, fraction kept).

    Plain mean cross-entropy during warm-up; afterwards the mean of the floor(N*p) largest
    pixel losses, p = :func:`bootstrap_fraction`.
    """
    if it < schedule.get("start", BOOTSTRAP_START):
        return F.cross_entropy(logits, target), 1.0
    raw = F.cross_entropy(logits, target, reduction="none").view(-1)
    p = bootstrap_fraction(it, **schedule)
    kept, _ = torch.topk(raw, int(raw.numel() * p), sorted=False)
    return kept.mean(), p


def _intersection_union(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
    return float((pred & gt).sum()), float((pred | gt).sum())


def clip_losses(
    out: dict[str, torch.Tensor],
    cls_gt: torch.Tensor,
    gt: torch.Tensor,
    it: int,
    sec_gt: torch.Tensor | None = None,
    selector: torch.Tensor | None = None,
    **schedule: float,
) -> dict[str, torch.Tensor | float]:
    """Losses of one clip batch from :func:`stcn.train.clip_pass.forward_clip`'s outputs.

    cls_gt (B, 3, H, W) class index per pixel (0 bg, 1 first object, 2 second); gt / sec_gt
    (B, 3, 1, H, W). Per sample, cross-entropy over {bg, obj1, obj2} (over {bg, obj1} when
    selector[b, 1] = 0), divided by B, summed over frames 1 and 2. Also returns the bootstrap fraction
    ``p`` (averaged) and intersection/union pixel counts for IoU logging. ``schedule`` may override
    the bootstrap's ``start``, ``end`` and ``top_p``.
    """
    b, s = gt.shape[:2]
    losses: dict[str, torch.Tensor | float] = {"total_loss": 0.0, "p": 0.0}
    for i in range(1, s):
        loss_i = 0.0
        for j in range(b):
            logits = out[f"logits_{i}"][j:j + 1]
            if selector is None or selector[j, 1] <= 0.5:
                logits = logits[:, :2]
            loss, p = bootstrapped_ce(logits, cls_gt[j:j + 1, i], it, **schedule)
            loss_i = loss_i + loss / b
            losses["p"] += p / b / (s - 1)
        losses[f"loss_{i}"] = loss_i
        losses["total_loss"] = losses["total_loss"] + loss_i
        inter, union = _intersection_union(out[f"mask_{i}"] > 0.5, gt[:, i] > 0.5)
        losses["iou/i"] = losses.get("iou/i", 0.0) + inter
        losses["iou/u"] = losses.get("iou/u", 0.0) + union
        if selector is not None and sec_gt is not None:
            inter, union = _intersection_union(out[f"sec_mask_{i}"] > 0.5, sec_gt[:, i] > 0.5)
            losses["iou/sec_i"] = losses.get("iou/sec_i", 0.0) + inter
            losses["iou/sec_u"] = losses.get("iou/sec_u", 0.0) + union
    return losses
