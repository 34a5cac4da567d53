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
"""
from __future__ import annotations

import math

import torch

from stcn.model.memory import Similarity, get_similarity, readout_topk_pm, softmax_sorted

DEFAULT_BLOCK = 4096  # memory positions per affinity block
DEFAULT_QUERY_BLOCK = 512  # query positions per block: 512 x 4096 floats = 8 MiB


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
) -> torch.Tensor:
    """The inference read: mem_key (1, C_k, N), position-major mem_value (O, N, C_v), query_key
    (1, C_k, M) -> read-out (O, M, C_v), as :func:`stcn.model.memory.read_memory_pm` (same arguments;
    ``block`` x ``query_block`` is the affinity block instead of a budgeted query chunk). ``usage`` (S,)
    accumulates per memory slot of ``slot_positions`` positions the top-k weight it received."""
    objects = mem_value.shape[0]
    m = query_key.shape[2]
    if valid is not None and bool(valid.all()):
        valid = None
    if similarity == "l2" and mem_sq is None:
        mem_sq = mem_key.pow(2).sum(1)
    chunk = _balanced(m, query_block)
    out = mem_value.new_empty(objects, m, mem_value.shape[2]) if chunk < m else None
    for start in range(0, m, chunk):
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
