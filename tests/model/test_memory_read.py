"""Memory read: gather top-k equals the dense original form, chunking changes nothing, per-object
validity equals separate banks, the full softmax matches a reference softmax, and the two layouts of
the one similarity are the same bits."""
from __future__ import annotations

import math

import pytest
import torch

from stcn.inference.dense_reference import dense_topk_weights
from stcn.model import memory


def _keys(n_mem=3 * 24, m=24, c=64, objects=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = torch.randn(1, c, n_mem, generator=g)
    qk = torch.randn(1, c, m, generator=g)
    mv = torch.randn(objects, 512, n_mem, generator=g)
    return mk, qk, mv


def test_similarity_layouts_are_the_same_bits():
    """The query-major form (the inference read's) holds the memory-major form's elements exactly:
    the same selections and weights follow from it."""
    mk, qk, _ = _keys()
    for kind in ("l2", "dot"):
        memory_major = memory.get_similarity(mk, qk, kind)
        assert torch.equal(memory.get_similarity(mk, qk, kind, query_major=True), memory_major.transpose(1, 2))
        workspace = torch.empty(mk.shape[2] * qk.shape[2] + 3)
        assert torch.equal(memory.get_similarity(mk, qk, kind, query_major=True, out=workspace)[0],
                           memory_major[0].t())


def test_l2_affinity_is_negative_squared_distance_up_to_a_query_constant():
    mk, qk, _ = _keys()
    aff = memory.get_similarity(mk, qk)
    dist = -((mk[0, :, :, None] - qk[0, :, None, :]) ** 2).sum(0) / math.sqrt(64)
    diff = aff[0] - dist  # should depend on the query only: |q|^2 / sqrt(C)
    assert torch.allclose(diff, diff[:1].expand_as(diff), atol=1e-3)
    dot = memory.get_similarity(mk, qk, "dot")
    assert torch.allclose(dot[0], mk[0].T @ qk[0] / 8, atol=1e-5)
    with pytest.raises(ValueError):
        memory.get_similarity(mk, qk, "cosine")


@pytest.mark.parametrize("top_k", [1, 5, 20])
def test_topk_gather_equals_dense(top_k):
    mk, qk, mv = _keys()
    aff = memory.get_similarity(mk, qk)
    dense = torch.bmm(mv, dense_topk_weights(aff, top_k).expand(3, -1, -1))
    gathered = memory.read_memory(mk, mv, qk, top_k=top_k)
    assert torch.allclose(gathered, dense, atol=1e-5)
    # each query's weights sum to one over exactly k entries
    weights = dense_topk_weights(aff, top_k)
    assert torch.allclose(weights.sum(1), torch.ones(1, qk.shape[2]))
    assert int((weights[0, :, 0] > 0).sum()) == top_k


def test_full_softmax_matches_torch_softmax():
    mk, qk, mv = _keys()
    aff = memory.get_similarity(mk, qk)
    assert torch.allclose(memory.softmax(aff)[0], torch.softmax(aff, dim=1), atol=1e-6)
    dense = memory.read_memory(mk, mv, qk, top_k=None)
    assert torch.allclose(dense, torch.bmm(mv, torch.softmax(aff, 1).expand(3, -1, -1)), atol=1e-4)


@pytest.mark.parametrize("chunk", [1, 7, 24, 100])
def test_chunked_read_equals_unchunked(chunk):
    mk, qk, mv = _keys()
    whole = memory.read_memory(mk, mv, qk, top_k=20)
    # Same selections and weights; only the matmul's blocking (float summation order) may differ.
    torch.testing.assert_close(memory.read_memory(mk, mv, qk, top_k=20, query_chunk=chunk), whole,
                               rtol=1e-6, atol=1e-6)


def test_validity_equals_separate_banks():
    """Object 2 exists only in the last memory frame: its read equals a bank holding that frame only."""
    mk, qk, mv = _keys(n_mem=3 * 24)
    valid = torch.ones(3, 72, dtype=torch.bool)
    valid[2, :48] = False
    shared = memory.read_memory(mk, mv, qk, top_k=20, valid=valid)
    alone = memory.read_memory(mk[:, :, 48:], mv[2:, :, 48:], qk, top_k=20)
    full = memory.read_memory(mk, mv[:2], qk, top_k=20)
    assert torch.allclose(shared[2:], alone, atol=1e-5)
    assert torch.allclose(shared[:2], full, atol=1e-5)


def test_topk_softmax_does_not_overflow_on_large_affinities():
    """Affinities far above 88.7 (keys of a network trained from scratch) must not give NaN: the
    top-k weights are exp(a - max a), equal to a float64 softmax of the kept affinities."""
    g = torch.Generator().manual_seed(0)
    mk = torch.randn(1, 64, 50, generator=g) * 6
    qk = mk[:, :, :30] + torch.randn(1, 64, 30, generator=g)  # queries near memory keys: 2q.k - |k|^2 >> 0
    aff = memory.get_similarity(mk, qk)
    assert aff.max() > 200
    weights, indices = memory.softmax(aff, 20)
    expected = torch.softmax(aff.double().gather(1, indices), dim=1)
    torch.testing.assert_close(weights.double(), expected, rtol=1e-5, atol=1e-7)
    pm_weights, pm_indices = memory.topk_weights(mk, qk, 20)
    assert torch.equal(pm_indices, indices.transpose(1, 2))
    torch.testing.assert_close(pm_weights, weights.transpose(1, 2), rtol=1e-6, atol=1e-7)
