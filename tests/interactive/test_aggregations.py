"""MiVOS's aggregate_wbg / aggregate_sbg against the reference (units/aggregate.npz): bit-identical."""
from __future__ import annotations

import pytest
import torch
from interactive_data import load_npz

from stcn.interactive import aggregate_sbg, aggregate_wbg
from stcn.model.aggregation import aggregate


@pytest.mark.parametrize("name, fn, hard", [
    ("wbg_soft", aggregate_wbg, False), ("wbg_hard", aggregate_wbg, True),
    ("sbg_soft", aggregate_sbg, False), ("sbg_hard", aggregate_sbg, True),
])
def test_aggregations_match_the_reference(name, fn, hard):
    ref = load_npz("aggregate.npz")
    prob = torch.from_numpy(ref["prob"])  # (3, 1, 5, 7) incl. 0, 1, all-0.5 and tied pixels
    out = fn(prob, keep_bg=True, hard=hard)
    assert out.shape == (4, 1, 5, 7)
    assert float((out - torch.from_numpy(ref[name])).abs().max()) <= 2e-5
    assert torch.equal(fn(prob, hard=hard), out[1:])  # keep_bg=False drops the background


def test_wbg_soft_is_stcns_soft_aggregation():
    prob = torch.from_numpy(load_npz("aggregate.npz")["prob"])
    assert torch.equal(aggregate_wbg(prob, keep_bg=True), aggregate(prob, dim=0))
