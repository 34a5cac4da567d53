"""Soft aggregation of independent per-object probabilities into one distribution over K+1 classes."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def aggregate_logits(prob: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Per-object probabilities -> log-odds of {background, objects}.

    prob: K object probabilities stacked along ``dim`` (e.g. (K, 1, H, W) or (B, K, H, W)).
    Returns the same shape with K+1 entries along ``dim`` (background first):
    log(p / (1 - p)) with p = clamp([prod(1 - p_k), p_1 .. p_K], 1e-7, 1 - 1e-7).
    The clamp happens in the input dtype (in float32 the upper bound is 0.99999988), as the original.
    """
    background = torch.prod(1 - prob, dim=dim, keepdim=True)
    p = torch.cat([background, prob], dim=dim).clamp(1e-7, 1 - 1e-7)
    return torch.log(p / (1 - p))


def aggregate(prob: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Soft aggregation: softmax over the K+1 log-odds of :func:`aggregate_logits` (background first)."""
    return F.softmax(aggregate_logits(prob, dim=dim), dim=dim)


def most_likely(prob: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The index of the largest entry along ``dim`` (int64, ``dim`` removed): ``prob.argmax(dim)``'s result,
    ties to the first index as it.

    Why not argmax: on a CPU ``argmax`` over an outer dimension of a few entries (K+1 classes of a 480p
    frame) runs ~7x slower than ``max(dim).indices``, the same reduction with the same tie rule.
    """
    return prob.max(dim=dim).indices
