"""Space-time memory read: similarity between memory and query keys, softmax, read-out of values.

Shapes: memory keys ``mem_key`` (B, C_k, N) with N = T*h*w positions over the memory frames, query keys
``query_key`` (B, C_k, M) with M = h*w, memory values (B, C_v, N). One similarity serves every object:
objects differ in their values, never in their keys.

Two functions hold the maths, and every read is built from them: :func:`get_similarity` (the L2 or dot
affinity, memory-major (B, N, M) or query-major (B, M, N)) and :func:`softmax` (full, as in training,
or over the top k, as in inference). Training (:func:`read_memory` with ``top_k=None``), the inference
engine (:func:`read_memory_pm`, :mod:`stcn.model.topk_read`), the dense oracle
(:mod:`stcn.inference.dense_reference`) and the interactive fusion all call them.
"""
from __future__ import annotations

import math
from typing import Literal

import torch

Similarity = Literal["l2", "dot"]


def get_similarity(
    mem_key: torch.Tensor,
    query_key: torch.Tensor,
    similarity: Similarity = "l2",
    *,
    mem_sq: torch.Tensor | None = None,
    query_major: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Raw similarity between memory keys (B, C, N) and query keys (B, C, M): (B, N, M), or (B, M, N)
    with ``query_major``.

    ``l2``: (2 mk.qk - |mk|^2) / sqrt(C), the negative squared distance without its query-only term,
    which cancels in the softmax over N. ``dot``: mk.qk / sqrt(C) (the paper's ablation).
    The operations are the original's, in its order and dtype, so the top-k selections are the same;
    they run in place on the product (2x is exact and b - a rounds as -a + b, so the bits do not change),
    which keeps one (N, M) block instead of three (autograd allows it: the product's backward needs
    its inputs only).

    ``mem_sq`` (B, N): the memory keys' squared norms, if already known (the inference bank keeps them).
    ``query_major``: form query^T x memory, so that a top-k over memory runs along contiguous memory
    (several times faster than along dim 1 of the (N, M) form). Each element is the same C-term dot
    product as in the (N, M) form (bit-identical with the BLAS we tested, tests/inference/test_fast_bounded.py).
    ``out``: query-major with B = 1 only, a flat buffer of at least M * N elements of the keys' dtype
    reused for the result, so that no large block is allocated (and page-faulted) per call; ignored
    when too small.
    """
    if similarity not in ("l2", "dot"):
        raise ValueError(f"unknown similarity {similarity!r} (expected 'l2' or 'dot')")
    channels, n = mem_key.shape[1], mem_key.shape[2]
    m = query_key.shape[2]
    if not query_major:
        sim = mem_key.transpose(1, 2) @ query_key  # (B, N, M)
    elif out is not None and out.numel() >= m * n and out.dtype == mem_key.dtype:
        sim = torch.mm(query_key[0].t(), mem_key[0], out=out[: m * n].view(m, n)).unsqueeze(0)
    else:
        sim = torch.matmul(query_key.transpose(1, 2), mem_key)  # (B, M, N)
    if similarity == "l2":
        if mem_sq is None:
            mem_sq = mem_key.pow(2).sum(1)
        mem_sq = mem_sq.reshape(-1, 1, n) if query_major else mem_sq.reshape(-1, n, 1)
        if sim.dtype == mem_sq.dtype:
            sim.mul_(2).sub_(mem_sq)
        else:  # under autocast: a half-precision product, float norms; the sum is float, as in the original
            sim = sim.mul_(2) - mem_sq
    return sim.div_(math.sqrt(channels))


def softmax(sim: torch.Tensor, top_k: int | None = None, *, dim: int = 1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax of a similarity over its memory positions ``dim`` (1: memory-major, 2: query-major).

    ``top_k=None``: the full softmax (training's read), weights of ``sim``'s shape and no indices.
    ``top_k=k``: the softmax over the k largest similarities per query (inference's read): weights and
    the memory positions they belong to, both of ``sim``'s shape with ``dim`` cut to min(k, N), sorted
    largest first.

    The maximum is subtracted before the exponential in both. The original's top-k does not subtract
    it: its weights overflow to NaN once a similarity exceeds ~88.7, which the released weights never
    reach but a network trained from scratch does (our demo model's keys give similarities up to ~500).
    The result differs from the original's by float rounding only.
    """
    if top_k is None:
        return _normalised_exp(sim, sim.max(dim=dim, keepdim=True)[0], dim), None
    values, indices = torch.topk(sim, k=min(top_k, sim.shape[dim]), dim=dim)
    return softmax_sorted(values, dim=dim), indices


def softmax_sorted(values: torch.Tensor, *, dim: int) -> torch.Tensor:
    """Softmax of values already sorted largest first along ``dim`` (a top-k's output): the first is
    the maximum. Shared by :func:`softmax` and the blocked read, whose last top-k merges the blocks'."""
    return _normalised_exp(values, values.narrow(dim, 0, 1), dim)


def _normalised_exp(x: torch.Tensor, maxes: torch.Tensor, dim: int) -> torch.Tensor:
    """exp(x - max) / sum: the one place the softmax's arithmetic is written."""
    x_exp = torch.exp(x - maxes)
    return x_exp / x_exp.sum(dim=dim, keepdim=True)


def readout_dense(weights: torch.Tensor, mem_value: torch.Tensor) -> torch.Tensor:
    """Values (B, C_v, N) x dense weights (B or 1, N, M) -> read-out (B, C_v, M)."""
    if weights.shape[0] != mem_value.shape[0]:
        weights = weights.expand(mem_value.shape[0], -1, -1)
    return torch.bmm(mem_value, weights)


DEFAULT_READ_BUDGET = 64 << 20  # bytes of affinity per query chunk (see auto_query_chunk)


def auto_query_chunk(memory_positions: int, query_positions: int, copies: int = 1,
                     budget_bytes: int | None = None) -> int:
    """Query positions per chunk so that one chunk's affinities -- ``copies`` float32 blocks of
    chunk x N: 1, plus O masked copies when objects have their own validity -- fit ``budget_bytes``.

    Peak memory of a read is then bounded at any resolution and memory size; the result is identical
    for every chunk size (the selections and weights of a query do not depend on other queries).
    """
    budget = DEFAULT_READ_BUDGET if budget_bytes is None else int(budget_bytes)
    per_query = 4 * max(1, memory_positions) * max(1, copies)
    return int(max(1, min(query_positions, budget // per_query)))


def topk_weights(
    mem_key: torch.Tensor,
    query_key: torch.Tensor,
    top_k: int,
    similarity: Similarity = "l2",
    *,
    mem_sq: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    workspace: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k softmax weights and indices in query-major form: mem_key (1, C_k, N), query_key (1, C_k, m)
    -> weights, indices (B, m, k), B = 1, or O when ``valid`` (O, N) restricts each object's positions.

    :func:`get_similarity` (query-major) then :func:`softmax` along memory, with the objects' validity
    masked in between. ``mem_sq`` (1, N): the memory keys' squared norms, if already known.
    ``workspace``: a flat float buffer of at least (1 + O) * m * N elements (1 * m * N without
    ``valid``) reused for the similarity and its masked copies, so that no large block is allocated
    (and page-faulted) per call.
    """
    n, m = mem_key.shape[2], query_key.shape[2]
    if workspace is not None and (workspace.numel() < m * n or workspace.dtype != mem_key.dtype):
        workspace = None  # too small for the similarity: allocate
    sim = get_similarity(mem_key, query_key, similarity, mem_sq=mem_sq, query_major=True, out=workspace)
    if valid is not None:
        objects = valid.shape[0]
        if workspace is not None and workspace.numel() >= (1 + objects) * m * n:
            masked = workspace[m * n: (1 + objects) * m * n].view(objects, m, n)
            masked.copy_(sim.expand(objects, -1, -1)).masked_fill_(~valid[:, None, :], float("-inf"))
            sim = masked
        else:
            sim = sim.expand(objects, -1, -1).masked_fill(~valid[:, None, :], float("-inf"))
    weights, indices = softmax(sim, top_k, dim=2)
    return weights, indices


def readout_topk_pm(weights: torch.Tensor, indices: torch.Tensor, mem_value: torch.Tensor) -> torch.Tensor:
    """Gather read-out from position-major values: weights, indices (1 or O, m, k) from
    :func:`topk_weights`, mem_value (O, N, C_v) -> (O, m, C_v). No (N x m) matrix is formed.

    Each selected value is one contiguous row of C_v floats. The sum runs over the k selections in
    order (largest first), as the dense product with the top-k matrix does up to summation order.
    The (O, m, C_v) result is the channels-last layout of (O, C_v, h, w).
    """
    objects, _, channels = mem_value.shape
    k, m = indices.shape[2], indices.shape[1]
    out = mem_value.new_zeros(objects, m, channels)
    shared = indices.shape[0] == 1
    # Gather per object from the 2-D (N, C_v) view: index_select along dim 1 of a 3-D tensor whose
    # object stride is not N * C_v (a slice of the bank's preallocated capacity) takes a generic path
    # that is ~100x slower than the contiguous-row gather.
    rows = [mem_value[o] for o in range(objects)]
    for j in range(k):
        w = weights[:, :, j].unsqueeze(2).to(mem_value.dtype)  # (1 or O, m, 1)
        for o in range(objects):
            picked = rows[o].index_select(0, indices[0 if shared else o, :, j])  # (m, C_v)
            out[o].addcmul_(picked, w[0 if shared else o])
    return out


def read_memory_pm(
    mem_key: torch.Tensor,
    mem_value: torch.Tensor,
    query_key: torch.Tensor,
    *,
    top_k: int = 20,
    similarity: Similarity = "l2",
    valid: torch.Tensor | None = None,
    query_chunk: int | None = None,
    budget_bytes: int | None = None,
    mem_sq: torch.Tensor | None = None,
    usage: torch.Tensor | None = None,
    slot_positions: int | None = None,
    workspace: torch.Tensor | None = None,
) -> torch.Tensor:
    """The inference read: mem_key (1, C_k, N), position-major mem_value (O, N, C_v), query_key
    (1, C_k, M) -> read-out (O, M, C_v) (channels-last (O, C_v, h, w) after a view and a permute).

    Works in chunks of query positions: ``query_chunk`` if given, else chosen by
    :func:`auto_query_chunk` from ``budget_bytes``. ``valid`` (O, N) as in :func:`read_memory`.
    ``usage`` (S,) float accumulates, per memory slot of ``slot_positions`` positions, the top-k
    weights its positions receive (summed over queries; over objects when they select separately).
    ``workspace``: see :func:`topk_weights` (sized for one chunk).
    """
    objects = mem_value.shape[0]
    n, m = mem_key.shape[2], query_key.shape[2]
    if valid is not None and bool(valid.all()):
        valid = None
    if query_chunk is None:
        chunk = auto_query_chunk(n, m, 1 + (objects if valid is not None else 0), budget_bytes)
    else:
        chunk = max(1, int(query_chunk))
    if similarity == "l2" and mem_sq is None:
        mem_sq = mem_key.pow(2).sum(1)
    out = mem_value.new_empty(objects, m, mem_value.shape[2]) if chunk < m else None
    for start in range(0, m, chunk):
        weights, indices = topk_weights(
            mem_key, query_key[:, :, start:start + chunk], top_k, similarity, mem_sq=mem_sq, valid=valid,
            workspace=workspace,
        )
        if usage is not None:
            slots = torch.div(indices, slot_positions, rounding_mode="floor").flatten()
            usage.index_add_(0, slots, weights.flatten().to(usage.dtype))
        part = readout_topk_pm(weights, indices, mem_value)
        if out is None:
            return part
        out[:, start:start + part.shape[1]] = part
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
    ``top_k=None`` uses the full softmax (training): the original's memory-major (N, M) form, dense
    weights times values. ``valid`` (O, N) bool marks, per object, the memory positions it may read
    (objects that appeared late exist only in later memory frames): the similarity is still computed
    once, and each object's softmax runs over its own positions. ``query_chunk`` bounds peak memory by
    processing that many query positions at a time (results are identical).
    ``top_k=k`` reads as the inference engine does (:func:`read_memory_pm` on a position-major copy
    of the values), so that the top-k read has one implementation.
    """
    if top_k is not None:
        out = read_memory_pm(mem_key, mem_value.transpose(1, 2).contiguous(), query_key, top_k=top_k,
                             similarity=similarity, valid=valid, query_chunk=query_chunk)
        return out.transpose(1, 2).contiguous()
    m = query_key.shape[2]
    chunk = m if query_chunk is None else max(1, int(query_chunk))
    outs = []
    for start in range(0, m, chunk):
        sim = get_similarity(mem_key, query_key[:, :, start:start + chunk], similarity)  # (1, N, m_chunk)
        if valid is not None and not bool(valid.all()):
            sim = sim.expand(valid.shape[0], -1, -1).masked_fill(~valid[:, :, None], float("-inf"))
        weights, _ = softmax(sim)
        outs.append(readout_dense(weights, mem_value))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
