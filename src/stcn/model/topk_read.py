"""The inference memory read with a blocked affinity: top-k within memory blocks, then one top-k over
the candidates. Same selections, weights and read-out as :func:`stcn.model.memory.read_memory_pm`.

Why: the dense (m, N) affinity of a query chunk against all N memory positions is written, rescaled
in three passes and scanned by one top-k, each pass streaming m x N floats through main memory
(630 MB at 480p with 60 memory frames). Here each (m_c, B) block of the affinity is small enough to
stay in cache, so it is written once by the GEMM, rescaled in one pass and scanned by the block's top-k
while still hot; only k candidates per query and block survive (``k * N / B`` per query: a few hundred).

Exactness. The global top-k set is the top-k of the union of the blocks' top-k sets (every element of
the global top-k is in its block's top-k), so the selection is the same, ties aside. The affinity is
``(-|mk|^2 + 2 mk.qk) / sqrt(C)``; each element is the same 64-term dot product as in the one-GEMM form.
When sqrt(C) is a power of two (C = 64: 8) the blocks are ranked by ``mk.qk - |mk|^2 / 2`` (one
rounding, like the original's ``2 mk.qk - |mk|^2``: scaling by powers of two commutes with rounding)
and only the k selected values are scaled by ``2 / sqrt(C)``, which gives the same bits as the
original's order of operations. Otherwise the block is rescaled in the original's order.

Long memories: the grouped search (:func:`topk_weights_grouped`). A top-k scan costs several ns per
element, a maximum a fraction of one, so with many memory positions the blocks are not scanned by a
top-k: each block's affinities are reduced to the maxima of groups of ``group`` positions, one top-k
over all the groups' maxima picks k groups per query, and only those groups' k x ``group`` positions
are scored again (fp32, the same dot products) and ranked. The k groups with the largest maxima hold
the k largest affinities (each of the k largest lies in a group whose maximum is at least the k-th
largest, and at most k groups have such a maximum), so the selection is the same set, ties aside; the
final scores are computed once more, in another summation order than the GEMM's, so weights agree with
the one-GEMM read to float rounding rather than bit for bit. Per-frame time then grows with the memory
only by the GEMM and one max-reduction pass (docs/performance.md).
"""
from __future__ import annotations

import math

import torch

from stcn.model.memory import Similarity, get_similarity, readout_topk_pm, softmax_sorted

DEFAULT_BLOCK = 4096  # memory positions per affinity block
DEFAULT_QUERY_BLOCK = 512  # query positions per block: 512 x 4096 floats = 8 MiB
DEFAULT_GROUP = 8  # memory positions per group of the grouped search
GROUPED_FROM = 2 * DEFAULT_BLOCK  # memory positions from which the read takes the grouped search


def _balanced(total: int, step: int) -> int:
    """A step of at most ``step`` that splits ``total`` into equal parts (no small remainder: BLAS
    takes another kernel for small matrices, whose sums differ in the last bit)."""
    parts = -(-total // max(1, min(int(step), total)))
    return -(-total // parts)


def _power_of_two(x: float) -> bool:
    return x > 0 and math.frexp(x)[0] == 0.5


def topk_weights_blocked(
    mem_key: torch.Tensor,
    query_key: torch.Tensor,
    top_k: int,
    similarity: Similarity = "l2",
    *,
    mem_sq: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    block: int = DEFAULT_BLOCK,
    workspace: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k softmax weights and indices: mem_key (1, C_k, N), query_key (1, C_k, m) -> weights,
    indices (B, m, k) with B = 1, or O when ``valid`` (O, N) restricts each object's positions; the
    same as :func:`stcn.model.memory.topk_weights` (k = min(top_k, N), sorted by affinity, largest first).

    ``mem_sq`` (1, N): the memory keys' squared norms, if known. ``workspace``: a flat float buffer of
    at least m * ``block`` elements reused for the affinity block.
    """
    if similarity not in ("l2", "dot"):
        raise ValueError(f"unknown similarity {similarity!r} (expected 'l2' or 'dot')")
    channels, n = mem_key.shape[1], mem_key.shape[2]
    m = query_key.shape[2]
    k = min(top_k, n)
    scale = math.sqrt(channels)
    late_scale = _power_of_two(scale)
    if similarity == "l2":
        if mem_sq is None:
            mem_sq = mem_key.pow(2).sum(1)
        mem_sq = mem_sq.reshape(-1)
        half_sq = mem_sq * 0.5 if late_scale else None  # exact
    objects = 1 if valid is None else valid.shape[0]
    block = _balanced(n, block)
    if workspace is None or workspace.numel() < m * block or workspace.dtype != mem_key.dtype:
        workspace = mem_key.new_empty(m * block)
    q, keys = query_key[0].t(), mem_key[0]  # (m, C), (C, N)
    cand_values, cand_indices = [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        if late_scale:  # ranked by mk.qk - |mk|^2 / 2, scaled after the selection (module docstring)
            aff = torch.mm(q, keys[:, start:stop], out=workspace[: m * (stop - start)].view(m, stop - start))
            if similarity == "l2":
                aff.sub_(half_sq[start:stop])
        else:  # the similarity itself, in the workspace
            aff = get_similarity(mem_key[:, :, start:stop], query_key, similarity, query_major=True,
                                 mem_sq=mem_sq[start:stop] if similarity == "l2" else None, out=workspace)[0]
        kb = min(k, stop - start)
        part = valid[:, start:stop] if valid is not None else None
        if part is None or bool(part.all()):
            v, i = aff.topk(kb, dim=1, sorted=False)  # (m, kb), shared by every object
            cand_values.append(v.unsqueeze(0).expand(objects, -1, -1))
            cand_indices.append((i + start).unsqueeze(0).expand(objects, -1, -1))
        else:
            # objects that appeared late: each takes its block top-k over its own positions
            masked = aff.unsqueeze(0).expand(objects, -1, -1).masked_fill(~part[:, None, :], float("-inf"))
            v, i = masked.topk(kb, dim=2, sorted=False)
            cand_values.append(v)
            cand_indices.append(i + start)
    values = torch.cat(cand_values, dim=2)
    indices = torch.cat(cand_indices, dim=2)
    values, pos = values.topk(k, dim=2)  # sorted, largest first
    indices = indices.gather(2, pos)
    if late_scale:
        values.mul_((2.0 if similarity == "l2" else 1.0) / scale)  # a power of two: exact
    return softmax_sorted(values, dim=2), indices


def topk_weights_grouped(
    mem_key: torch.Tensor,
    query_key: torch.Tensor,
    top_k: int,
    similarity: Similarity = "l2",
    *,
    mem_sq: torch.Tensor | None = None,
    keys_pm: torch.Tensor | None = None,
    block: int = DEFAULT_BLOCK,
    group: int = DEFAULT_GROUP,
    workspace: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k softmax weights and indices by the grouped search (module docstring): mem_key (1, C_k, N),
    query_key (1, C_k, m) -> weights, indices (1, m, k), k = min(top_k, N), sorted largest first; the
    same selection as :func:`stcn.model.memory.topk_weights`, weights to float rounding.

    ``keys_pm`` (N, C_k): the memory keys position-major, if at hand (the bank stores them so, and
    ``mem_key`` is then its transposed view); gathered rows of it are scored again. ``mem_sq`` (1, N):
    their squared norms. ``workspace``: a flat float buffer of at least m * ``block`` elements.
    """
    if similarity not in ("l2", "dot"):
        raise ValueError(f"unknown similarity {similarity!r} (expected 'l2' or 'dot')")
    channels, n = mem_key.shape[1], mem_key.shape[2]
    m = query_key.shape[2]
    k = min(top_k, n)
    group = max(1, min(int(group), n // max(1, k)))
    block = max(group, int(block) // group * group)
    q, keys = query_key[0].t(), mem_key[0]  # (m, C), (C, N)
    if similarity == "l2":
        if mem_sq is None:
            mem_sq = mem_key.pow(2).sum(1)
        half_sq = mem_sq.reshape(-1) * 0.5  # exact
    if keys_pm is None:
        keys_pm = keys.t().contiguous()
    if workspace is None or workspace.numel() < m * block or workspace.dtype != mem_key.dtype:
        workspace = mem_key.new_empty(m * block)
    maxima, firsts, strides, ends = [], [], [], []
    for start in range(0, n, block):
        stop = min(n, start + block)
        width = stop - start
        columns = -(-width // group)
        aff = workspace[: m * columns * group].view(m, columns * group)
        if columns * group == width:
            torch.mm(q, keys[:, start:stop], out=aff)
        else:  # the last block, padded to whole groups with -inf
            aff[:, :width] = torch.mm(q, keys[:, start:stop])
            aff[:, width:] = float("-inf")
        if similarity == "l2":
            aff[:, :width].sub_(half_sq[start:stop])
        # group c of the block: positions start + c + r * columns, r < group (a strided max is one
        # vectorised pass; contiguous groups would reduce along a short inner dimension)
        maxima.append(aff.view(m, group, columns).amax(1))
        firsts.append(torch.arange(start, start + columns, device=keys.device))
        strides.append(torch.full((columns,), columns, device=keys.device))
        ends.append(torch.full((columns,), stop, device=keys.device))
    first, stride, end = torch.cat(firsts), torch.cat(strides), torch.cat(ends)
    _, chosen = torch.cat(maxima, 1).topk(min(k, first.numel()), dim=1, sorted=False)  # (m, k) groups
    members = first[chosen].unsqueeze(2) + stride[chosen].unsqueeze(2) * torch.arange(group, device=keys.device)
    padding = (members >= end[chosen].unsqueeze(2)).view(m, -1)
    members = members.view(m, -1).masked_fill_(padding, 0)  # (m, k * group)
    picked = keys_pm.index_select(0, members.reshape(-1)).view(m, -1, channels)
    score = torch.bmm(picked, q.unsqueeze(2)).squeeze(2)  # the same C-term dot products, (m, k * group)
    if similarity == "l2":
        score.sub_(half_sq[members])
    score.masked_fill_(padding, float("-inf"))
    values, j = score.topk(k, dim=1)  # sorted, largest first
    indices = members.gather(1, j)
    values.mul_((2.0 if similarity == "l2" else 1.0) / math.sqrt(channels))
    return softmax_sorted(values.unsqueeze(0), dim=2), indices.unsqueeze(0)


def read_memory_blocked(
    mem_key: torch.Tensor,
    mem_value: torch.Tensor,
    query_key: torch.Tensor,
    *,
    top_k: int = 20,
    similarity: Similarity = "l2",
    valid: torch.Tensor | None = None,
    mem_sq: torch.Tensor | None = None,
    usage: torch.Tensor | None = None,
    slot_positions: int | None = None,
    block: int = DEFAULT_BLOCK,
    query_block: int = DEFAULT_QUERY_BLOCK,
    workspace: torch.Tensor | None = None,
    keys_pm: torch.Tensor | None = None,
    grouped_from: int | None = GROUPED_FROM,
) -> torch.Tensor:
    """The inference read: mem_key (1, C_k, N), position-major mem_value (O, N, C_v), query_key
    (1, C_k, M) -> read-out (O, M, C_v), as :func:`stcn.model.memory.read_memory_pm` (same arguments;
    ``block`` x ``query_block`` is the affinity block instead of a budgeted query chunk). ``usage`` (S,)
    accumulates per memory slot of ``slot_positions`` positions the top-k weight it received.

    From ``grouped_from`` memory positions on (None: never), reads without per-object validity take
    the grouped search (:func:`topk_weights_grouped`, ``keys_pm`` its position-major keys)."""
    objects = mem_value.shape[0]
    m = query_key.shape[2]
    if valid is not None and bool(valid.all()):
        valid = None
    if similarity == "l2" and mem_sq is None:
        mem_sq = mem_key.pow(2).sum(1)
    chunk = _balanced(m, query_block)
    grouped = valid is None and grouped_from is not None and mem_key.shape[2] >= grouped_from
    if grouped and keys_pm is None:
        keys_pm = mem_key[0].t().contiguous()
    out = mem_value.new_empty(objects, m, mem_value.shape[2]) if chunk < m else None
    for start in range(0, m, chunk):
        if grouped:
            weights, indices = topk_weights_grouped(
                mem_key, query_key[:, :, start:start + chunk], top_k, similarity, mem_sq=mem_sq,
                keys_pm=keys_pm, block=block, workspace=workspace,
            )
        else:
            weights, indices = topk_weights_blocked(
                mem_key, query_key[:, :, start:start + chunk], top_k, similarity, mem_sq=mem_sq, valid=valid,
                block=block, workspace=workspace,
            )
        if usage is not None:
            slots = torch.div(indices, slot_positions, rounding_mode="floor").flatten()
            usage.index_add_(0, slots, weights.flatten().to(usage.dtype))
        part = readout_topk_pm(weights, indices, mem_value)
        if out is None:
            return part
        out[:, start:start + part.shape[1]] = part
    return out
