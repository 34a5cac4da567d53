"""MiVOS's two aggregations of K per-object probabilities (K, 1, H, W) into K+1 classes.

- :func:`aggregate_wbg` ("with background"): background = prod_k (1 - p_k), i.e. STCN's soft
  aggregation (:func:`stcn.model.aggregation.aggregate_logits` is reused).
- :func:`aggregate_sbg` ("simple background"): background fixed at 0.5 (logit 0).

Both clamp to [1e-7, 1 - 1e-7], take log-odds and a softmax over the K+1 channels (dim 0).
``hard=True`` multiplies the log-odds by 1000 first (a near-argmax that stays a probability tensor).
``keep_bg=True`` returns all K+1 channels (channel 0 = background), otherwise channels 1..K.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from stcn.model.aggregation import aggregate_logits

HARD_SCALE = 1000.0


def _finish(logits: torch.Tensor, keep_bg: bool, hard: bool) -> torch.Tensor:
    if hard:
        logits = logits * HARD_SCALE
    out = F.softmax(logits, dim=0)
    return out if keep_bg else out[1:]


def aggregate_wbg(prob: torch.Tensor, keep_bg: bool = False, hard: bool = False) -> torch.Tensor:
    """(K, ...) object probabilities -> (K+1, ...) (or (K, ...) without background)."""
    return _finish(aggregate_logits(prob, dim=0), keep_bg, hard)


def aggregate_sbg(prob: torch.Tensor, keep_bg: bool = False, hard: bool = False) -> torch.Tensor:
    """Like :func:`aggregate_wbg` with the background probability fixed at 0.5."""
    q = torch.cat([torch.full_like(prob[:1], 0.5), prob], dim=0).clamp(1e-7, 1 - 1e-7)
    return _finish(torch.log(q / (1 - q)), keep_bg, hard)
