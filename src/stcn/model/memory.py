"""Space-time memory read: affinity between memory and query keys, softmax, read-out of values.

Shapes: memory keys ``mem_key`` (B, C_k, N) with N = T*h*w positions over the memory frames, query keys
``query_key`` (B, C_k, M) with M = h*w, memory values (B, C_v, N). One affinity serves every object:
objects differ in their values, never in their keys.

Training reads with a full softmax over N; inference keeps only the top-k affinities per query.
The same functions serve both (the training wrapper and the inference engine import them from here).
"""
from __future__ import annotations

import math
from typing import Literal

import torch

Similarity = Literal["l2", "dot"]


def affinity(mem_key: torch.Tensor, query_key: torch.Tensor, similarity: Similarity = "l2") -> torch.Tensor:
    """Raw affinity (B, N, M) between memory keys (B, C, N) and query keys (B, C, M).

    ``l2``: (2 mk.qk - |mk|^2) / sqrt(C), the negative squared distance without its query-only term,
    which cancels in the softmax over N. ``dot``: mk.qk / sqrt(C) (the paper's ablation).
    The operations mirror the original's in order and dtype so the top-k selections are the same.
    """
    channels = mem_key.shape[1]
    dot = mem_key.transpose(1, 2) @ query_key
    if similarity == "dot":
        return dot / math.sqrt(channels)
    if similarity != "l2":
        raise ValueError(f"unknown similarity {similarity!r} (expected 'l2' or 'dot')")
    mem_sq = mem_key.pow(2).sum(1).unsqueeze(2)
    return (-mem_sq + 2 * dot) / math.sqrt(channels)


def softmax_full(aff: torch.Tensor) -> torch.Tensor:
    """Softmax over memory positions (dim 1) with the maximum subtracted, as in training. (B, N, M)."""
    maxes = aff.max(dim=1, keepdim=True)[0]
    x_exp = torch.exp(aff - maxes)
    return x_exp / x_exp.sum(dim=1, keepdim=True)


def softmax_topk(aff: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k softmax over memory positions: weights and indices, both (B, k, M).

    As in the original inference, the kept affinities are exponentiated without subtracting their
    maximum (an affinity above ~88.7 overflows float32; real keys stay far below).
    """
    k = min(top_k, aff.shape[1])
    values, indices = torch.topk(aff, k=k, dim=1)
    weights = values.exp()
    weights = weights / weights.sum(dim=1, keepdim=True)
    return weights, indices


def softmax_topk_dense(aff: torch.Tensor, top_k: int) -> torch.Tensor:
    """Top-k softmax as a dense (B, N, M) matrix, zero outside the top k (the original's form; a test oracle)."""
    weights, indices = softmax_topk(aff, top_k)
    return torch.zeros_like(aff).scatter_(1, indices, weights.to(aff.dtype))


def readout_dense(weights: torch.Tensor, mem_value: torch.Tensor) -> torch.Tensor:
    """Values (B, C_v, N) x dense weights (B or 1, N, M) -> read-out (B, C_v, M)."""
    if weights.shape[0] != mem_value.shape[0]:
        weights = weights.expand(mem_value.shape[0], -1, -1)
    return torch.bmm(mem_value, weights)


def readout_topk(weights: torch.Tensor, indices: torch.Tensor, mem_value: torch.Tensor) -> torch.Tensor:
    """Gather the k selected values per query: no (N x M) matrix is formed.

    weights, indices: (1, k, M) -- one selection shared by every object -- or (O, k, M), one per object;
    mem_value: (O, C_v, N) -> read-out (O, C_v, M). Peak extra memory is one (O, C_v, M) buffer.
    """
    objects, channels, _ = mem_value.shape
    k, m = indices.shape[1], indices.shape[2]
    out = mem_value.new_zeros(objects, channels, m)
    shared = indices.shape[0] == 1
    for j in range(k):
        w = weights[:, j].unsqueeze(1).to(mem_value.dtype)  # (1 or O, 1, M)
        if shared:
            picked = mem_value.index_select(2, indices[0, j])  # (O, C_v, M)
        else:
            picked = torch.gather(mem_value, 2, indices[:, j].unsqueeze(1).expand(objects, channels, m))
        out.addcmul_(picked, w)
    return out


def read_memory(
    mem_key: torch.Tensor,
    mem_value: torch.Tensor,
    query_key: torch.Tensor,
    *,
    top_k: int | None = 20,
    similarity: Similarity = "l2",
    valid: torch.Tensor | None = None,
    query_chunk: int | None = None,
) -> torch.Tensor:
    """Read the memory for one query frame, for all objects at once.

    mem_key (1, C_k, N), mem_value (O, C_v, N), query_key (1, C_k, M) -> read-out (O, C_v, M).
    ``top_k=None`` uses the full softmax (training). ``valid`` (O, N) bool marks, per object, the memory
    positions it may read (objects that appeared late exist only in later memory frames): the affinity
    is still computed once, and each object takes its top-k over its own positions. ``query_chunk``
    bounds peak memory by processing that many query positions at a time (results are identical).
    """
    m = query_key.shape[2]
    chunk = m if query_chunk is None else max(1, int(query_chunk))
    outs = []
    for start in range(0, m, chunk):
        q = query_key[:, :, start:start + chunk]
        aff = affinity(mem_key, q, similarity)  # (1, N, m_chunk)
        if valid is not None and not bool(valid.all()):
            aff = aff.expand(valid.shape[0], -1, -1).masked_fill(~valid[:, :, None], float("-inf"))
        if top_k is None:
            outs.append(readout_dense(softmax_full(aff), mem_value))
        else:
            weights, indices = softmax_topk(aff, top_k)
            outs.append(readout_topk(weights, indices, mem_value))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
