"""The blocked top-k read gives the same selection, weights and read-out as the one-GEMM read; the
grouped search for long memories the same selection, weights to float rounding."""
from __future__ import annotations

import pytest
import torch

from stcn.inference import MemoryBank
from stcn.model.memory import read_memory, read_memory_pm, topk_weights
from stcn.model.topk_read import read_memory_blocked, topk_weights_blocked, topk_weights_grouped


def _keys(channels: int, n: int, m: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    # scaled like trained keys (affinities of tens to hundreds), so that the top-k is sharp
    return 3 * torch.randn(1, channels, n, generator=g), 3 * torch.randn(1, channels, m, generator=g)


@pytest.mark.parametrize("similarity", ["l2", "dot"])
@pytest.mark.parametrize("channels", [64, 48])  # sqrt(64) = 8 is scaled late, sqrt(48) in the block
@pytest.mark.parametrize("block", [300, 500, 4096])
def test_selection_and_weights_are_identical(similarity, channels, block):
    mem, query = _keys(channels, 1000, 77)
    w0, i0 = topk_weights(mem, query, 20, similarity)
    w1, i1 = topk_weights_blocked(mem, query, 20, similarity, block=block)
    assert torch.equal(i0, i1)
    assert torch.equal(w0, w1)


@pytest.mark.parametrize("block", [1, 37])
def test_tiny_blocks_select_the_same_set(block):
    # BLAS sums a tiny GEMM in another order (last-bit differences): same selection, weights to rounding
    mem, query = _keys(64, 1000, 77)
    w0, i0 = topk_weights(mem, query, 20)
    w1, i1 = topk_weights_blocked(mem, query, 20, block=block)
    assert torch.equal(i0, i1)
    assert torch.allclose(w0, w1, rtol=1e-3, atol=1e-9)  # affinities ~100: exp amplifies 1 ulp


def test_late_objects_select_over_their_own_positions():
    mem, query = _keys(64, 900, 50, seed=1)
    valid = torch.ones(3, 900, dtype=torch.bool)
    valid[1, :300] = False  # appeared at the second of three frames
    valid[2, :600] = False
    w0, i0 = topk_weights(mem, query, 20, valid=valid)
    for block in (300, 256, 1000):
        w1, i1 = topk_weights_blocked(mem, query, 20, valid=valid, block=block)
        assert torch.equal(i0, i1)
        assert torch.equal(w0, w1)


def test_fewer_positions_than_k():
    mem, query = _keys(64, 12, 9, seed=2)
    w0, i0 = topk_weights(mem, query, 20)
    w1, i1 = topk_weights_blocked(mem, query, 20, block=5)
    assert i1.shape == (1, 9, 12)
    assert torch.equal(i0, i1)
    assert torch.allclose(w0, w1, rtol=1e-3, atol=1e-9)  # tiny GEMMs: BLAS sums them in another order


@pytest.mark.parametrize("query_block", [45, 64, 1000])
def test_readout_and_usage_are_identical(query_block):
    mem, query = _keys(64, 1200, 90, seed=3)
    values = torch.randn(2, 1200, 32, generator=torch.Generator().manual_seed(4))
    u0, u1 = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    ref = read_memory_pm(mem, values, query, usage=u0, slot_positions=300)
    ours = read_memory_blocked(mem, values, query, usage=u1, slot_positions=300, block=333,
                               query_block=query_block)
    assert torch.equal(ref, ours)
    assert torch.allclose(u0, u1, rtol=1e-12)
    # and the original's (N, M) form: same selections, read-out within float summation order
    dense = read_memory(mem, values.transpose(1, 2), query)
    assert torch.allclose(dense.transpose(1, 2), ours, atol=1e-5)


def test_blocked_bank_read_matches_the_one_gemm_read():
    # 480p-sized frames (30x54 positions), five memory frames, an object that appeared late
    g = torch.Generator().manual_seed(5)
    h, w = 30, 54
    bank = MemoryBank(top_k=20, max_frames=8)  # blocked read: the default
    for t in range(5):
        objects = (1,) if t < 2 else (1, 2)
        bank.add(5 * t, 3 * torch.randn(1, 64, h, w, generator=g),
                 {o: torch.randn(16, h, w, generator=g) for o in objects})
    query = 3 * torch.randn(1, 64, h, w, generator=g)
    out = bank.read(query, (1, 2))
    used = len(bank) * h * w
    ref = read_memory_pm(bank._keys[:, :, :used], bank._values[:, :used], query.flatten(2),
                         valid=bank._valid[:, :used], mem_sq=bank._sq[:, :used])  # the bank's stored norms
    assert torch.equal(out, ref.view(2, h, w, 16).permute(0, 3, 1, 2))


def _same_sets(i0: torch.Tensor, i1: torch.Tensor) -> bool:
    return torch.equal(i0.sort(dim=-1)[0], i1.sort(dim=-1)[0])


@pytest.mark.parametrize("similarity", ["l2", "dot"])
@pytest.mark.parametrize("channels", [64, 48])
@pytest.mark.parametrize(("n", "group", "block"), [(1000, 8, 300), (997, 16, 256), (5000, 8, 4096), (30, 8, 16),
                                                  (12, 8, 5)])
def test_grouped_search_selects_the_same_set(similarity, channels, n, group, block):
    # blocks that are not whole groups (997, 5000 % 4096) pad their last groups; fewer positions than k x group
    mem, query = _keys(channels, n, 77, seed=n)
    w0, i0 = topk_weights(mem, query, 20, similarity)
    w1, i1 = topk_weights_grouped(mem, query, 20, similarity, group=group, block=block)
    assert i1.shape == i0.shape and _same_sets(i0, i1)
    # the scores are the same dot products summed in another order: weights to float rounding
    # (affinities ~100 here, so 1 ulp of an affinity is ~1e-5 of a weight)
    assert torch.allclose(w0, w1, rtol=0, atol=2e-5)
    assert (w1[..., :-1] >= w1[..., 1:]).all()  # sorted, largest first


def test_grouped_search_finds_a_top_k_clustered_in_one_group():
    # the 20 best positions all in one strided group and its neighbours: groups are picked by maximum only
    mem, query = _keys(64, 4096, 5, seed=7)
    target = query[0, :, 0]
    columns = 4096 // 8
    for r in range(8):
        for c in (0, 1, 2):
            mem[0, :, c + r * columns] = target * (1.0 + 0.01 * (r + 8 * c))
    w0, i0 = topk_weights(mem, query, 20)
    w1, i1 = topk_weights_grouped(mem, query, 20)
    assert _same_sets(i0, i1)
    assert torch.allclose(w0, w1, rtol=0, atol=2e-5)


def test_long_bank_reads_take_the_grouped_search_and_agree_with_the_one_gemm_read(monkeypatch):
    from stcn.model import topk_read

    calls = []
    real = topk_read.topk_weights_grouped
    monkeypatch.setattr(topk_read, "topk_weights_grouped", lambda *a, **k: calls.append(1) or real(*a, **k))
    g = torch.Generator().manual_seed(6)
    h, w = 30, 54
    bank = MemoryBank(top_k=20)
    for t in range(-(-topk_read.GROUPED_FROM // (h * w)) + 1):
        values = {o: torch.randn(16, h, w, generator=g) for o in (1, 2)}
        bank.add(5 * t, 3 * torch.randn(1, 64, h, w, generator=g), values)
    query = 3 * torch.randn(1, 64, h, w, generator=g)
    used = len(bank) * h * w
    out = bank.read(query, (1, 2))
    assert calls  # the grouped search ran
    ref = read_memory_pm(bank._keys[:, :, :used], bank._values[:, :used], query.flatten(2),
                         mem_sq=bank._sq[:, :used])
    assert torch.allclose(out, ref.view(2, h, w, 16).permute(0, 3, 1, 2), rtol=0, atol=1e-4)
