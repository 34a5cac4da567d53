"""The interactive core (Interact -> Propagate -> Fuse) against the original's InferenceCore over 3
scripted rounds (reference units/propagation.npz, case.json): frames 3, 9, 6, each with the hard wbg
aggregation of the one-hot ground truth. Round 2 fuses backwards (tc = 3), round 3 in both directions.
Tolerances (reference README section 8): probabilities within 5e-4, labels identical wherever the
reference's top-two margin is >= 1e-3."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from interactive_data import INPUTS, INTERACTIVE, K, labels, load_npz
from PIL import Image

from stcn.interactive import aggregate_wbg
from stcn.interactive.propagation import InteractivePropagation

PROB_TOL = 5e-4
ROUNDS = (3, 9, 6)


def _video() -> np.ndarray:
    return np.stack([np.array(Image.open(INPUTS / "frames" / f"{t:05d}.png").convert("RGB")) for t in range(12)])


def _round_mask(t: int) -> torch.Tensor:
    gt = labels(t)
    one_hot = torch.from_numpy(np.stack([gt == k for k in range(1, K + 1)]).astype(np.float32))[:, None]
    return aggregate_wbg(one_hot, keep_bg=True, hard=True)  # (K+1, 1, 109, 187)


@pytest.fixture(scope="module")
def rounds(mo_model, fusion_model):
    """Run the 3 rounds once; per round: prob after it, returned labels, trace, fusion inputs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the autouse one_thread fixture
    try:
        vos = InteractivePropagation(mo_model, fusion_model, _video(), K, precision="fp32")
        vos.fusion_inputs = {}
        out = []
        for t in ROUNDS:
            before = vos.prob.clone()
            returned = vos.interact(_round_mask(t), t)
            changed = [f for f in range(12) if not torch.equal(before[:, f], vos.prob[:, f])]
            out.append({"prob": vos.prob.clone(), "labels": vos.masks.clone(), "returned": returned,
                        "changed": changed, "trace": vos.trace[-1], "fusion_inputs": dict(vos.fusion_inputs)})
    finally:
        torch.set_num_threads(threads)
    return vos, out


@pytest.mark.float_sensitive
def test_trace_matches_the_original(rounds):
    _, out = rounds
    case = json.loads((INTERACTIVE / "case.json").read_text())["propagation"]
    assert case["mem_freq"] == 5 and case["top_k"] == 20
    for got, ref in zip(out, case["trace"]):
        assert got["trace"].frame == ref["frame"] and got["trace"].interacted == ref["interacted"]
        assert got["changed"] == ref["changed_frames"]
        for p, q in zip(got["trace"].passes, ref["passes"]):
            assert (p.start, p.forward, p.stop, p.certain_memory) == (q["idx"], q["forward"], q["closest_ti"],
                                                                     q["certain_mem"])
            assert p.memory_added == q["mem_adds"] and [list(f) for f in p.fused] == q["fused"]


@pytest.mark.float_sensitive
@pytest.mark.parametrize("r", [1, 2, 3])
def test_probabilities_and_labels(rounds, r):
    _, out = rounds
    ref = load_npz("propagation.npz")
    got = out[r - 1]
    assert got["changed"] == ref[f"round{r}_changed_frames"].tolist()
    frames = ref[f"round{r}_prob_frames"].tolist()
    expected = ref[f"round{r}_prob_objects_u16"].astype(np.float64) / 65535  # (3, n, 112, 192)
    ours = got["prob"][1:, frames, 0].numpy()
    assert np.abs(ours - expected).max() <= PROB_TOL
    # the K+1 channels sum to 1 (in the padding too, except at interacted frames: the mask is zero-padded)
    assert torch.allclose(got["prob"][:, :, :, 1:-2, 2:-3].sum(0), torch.ones(1), atol=1e-5)
    low = np.unpackbits(ref[f"round{r}_low_margin"], axis=-1).astype(bool)
    mismatch = got["labels"].numpy() != ref[f"round{r}_labels"]
    assert not (mismatch & ~low).any(), f"{int((mismatch & ~low).sum())} labels differ where the margin is >= 1e-3"
    assert mismatch.mean() < 1e-3
    # the returned label maps are the padded ones, un-padded (pad (left, right, top, bottom) = (2, 3, 1, 2))
    assert np.array_equal(got["returned"], got["labels"].numpy()[:, 1:-2, 2:-3])


@pytest.mark.float_sensitive
def test_fusion_inputs_of_round_3(rounds):
    """Frame 7 of round 3 (forward pass, tc = 9): the un-fused propagation and the aligned difference."""
    _, out = rounds
    ref = load_npz("propagation.npz")
    out_mask, attn = out[2]["fusion_inputs"][7]
    curr = ref["round3_fuse_t7_curr_objects_sub3_u16"].astype(np.float64) / 65535
    assert np.abs(out_mask[1:, 0, ::3, ::3].numpy() - curr).max() <= PROB_TOL
    assert np.abs(attn[1:, :, ::3, ::3].numpy() - ref["round3_fuse_t7_attn_obj_sub3"]).max() <= PROB_TOL


def test_update_mask_only_leaves_prob(mo_model):
    vos = InteractivePropagation(mo_model, None, _video()[:3], K, precision="fp32")
    mask = _round_mask(1)
    before = vos.prob.clone()
    got = vos.update_mask_only(mask, 1)
    assert torch.equal(vos.prob, before)
    assert np.array_equal(got[1], labels(1)) and not got[0].any() and not got[2].any()
    with pytest.raises(ValueError, match="mask must be"):
        vos.interact(mask[1:], 1)
    with pytest.raises(IndexError):
        vos.interact(mask, 3)
