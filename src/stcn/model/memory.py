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

    The kept affinities are exponentiated after subtracting their maximum (the first, as topk sorts).
    The original does not subtract it: its weights overflow to NaN once an affinity exceeds ~88.7,
    which the released weights never reach but a network trained from scratch does (our demo model's
    keys give affinities up to ~500). The result differs from the original's by float rounding only.
    """
    k = min(top_k, aff.shape[1])
    values, indices = torch.topk(aff, k=k, dim=1)
    weights = (values - values[:, :1]).exp()
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

    The affinity is formed as (m, N), i.e. query^T x memory, so that the top-k runs along contiguous
    memory (several times faster than along dim 1 of the (N, m) form). Each element is the same
    64-term dot product as the original's (N, m) form (bit-identical with the BLAS we tested, see
    tests/inference/test_fast_bounded.py), then ``(-|mk|^2 + 2 dot) / sqrt(C)`` in the original's
    order, done in place. ``mem_sq`` (1, N): the memory keys' squared norms, if already known.
    ``workspace``: a flat float buffer of at least (1 + O) * m * N elements (1 * m * N without
    ``valid``) reused for the affinity, so that no large block is allocated (and page-faulted) per call.
    """
    channels, n = mem_key.shape[1], mem_key.shape[2]
    m = query_key.shape[2]
    if workspace is not None and workspace.numel() >= m * n and workspace.dtype == mem_key.dtype:
        aff = torch.mm(query_key[0].t(), mem_key[0], out=workspace[: m * n].view(m, n)).unsqueeze(0)
    else:
        workspace = None
        aff = torch.matmul(query_key.transpose(1, 2), mem_key)  # (1, m, N)
    if similarity == "l2":
        if mem_sq is None:
            mem_sq = mem_key.pow(2).sum(1)
        aff.mul_(2).sub_(mem_sq.reshape(1, 1, -1)).div_(math.sqrt(channels))
    elif similarity == "dot":
        aff.div_(math.sqrt(channels))
    else:
        raise ValueError(f"unknown similarity {similarity!r} (expected 'l2' or 'dot')")
    if valid is not None:
        objects = valid.shape[0]
        if workspace is not None and workspace.numel() >= (1 + objects) * m * n:
            masked = workspace[m * n: (1 + objects) * m * n].view(objects, m, n)
            masked.copy_(aff.expand(objects, -1, -1)).masked_fill_(~valid[:, None, :], float("-inf"))
            aff = masked
        else:
            aff = aff.expand(objects, -1, -1).masked_fill(~valid[:, None, :], float("-inf"))
    k = min(top_k, aff.shape[2])
    values, indices = torch.topk(aff, k=k, dim=2)
    del aff
    weights = values.sub_(values[:, :, :1].clone()).exp_()  # stable: see softmax_topk (clone: no aliasing)
    weights /= weights.sum(dim=2, keepdim=True)
    return weights, indices


def readout_topk_pm(weights: torch.Tensor, indices: torch.Tensor, mem_value: torch.Tensor) -> torch.Tensor:
    """Gather read-out from position-major values: weights, indices (1 or O, m, k) from
    :func:`topk_weights`, mem_value (O, N, C_v) -> (O, m, C_v).

    Each selected value is one contiguous row of C_v floats. The sum runs over the k selections in
    order (largest first), as :func:`readout_topk`, so both give the same bits for the same weights.
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
    ``top_k=None`` uses the full softmax (training). ``valid`` (O, N) bool marks, per object, the memory
    positions it may read (objects that appeared late exist only in later memory frames): the affinity
    is still computed once, and each object takes its top-k over its own positions. ``query_chunk``
    bounds peak memory by processing that many query positions at a time (results are identical).
    This is the original's (N, M) form; the inference engine's memory bank keeps its values
    position-major and calls :func:`read_memory_pm` (query-major affinity, same selections).
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
