"""FusionNet and the alignment of the mask difference (MiVOS get_attention) against the reference
(units/fusion_net.npz, units/attention.npz). Tolerances: reference README section 8."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from interactive_data import frame, labels, load_npz

from stcn.interactive import (
    align_difference,
    attention_weights,
    distances,
    mask_difference,
)

LOGIT_TOL = 1e-4
PROB_TOL = 2e-5


def _diff(ours: torch.Tensor, ref: np.ndarray) -> float:
    assert tuple(ours.shape) == ref.shape
    return float((ours.detach() - torch.from_numpy(ref)).abs().max())


@pytest.mark.float_sensitive
def test_fusion_net_with_intermediates(fusion_model):
    ref = load_npz("fusion_net.npz")
    t = {k: torch.from_numpy(v) for k, v in ref.items()}
    image = frame(4)[:, :, 30:78, 60:124]  # the reference's crop of the padded frame 4
    features: dict = {}
    with torch.no_grad():
        logits = fusion_model(image, t["seg1"], t["seg2"], t["attn"], t["dist"], features)
    for name in ("conv1", "conv2_branch", "conv3_branch"):
        assert _diff(features[name][:, :8], ref[f"{name}_ch0_7"]) <= LOGIT_TOL, name
    assert _diff(logits, ref["logits"]) <= LOGIT_TOL
    assert _diff(torch.sigmoid(logits), ref["prob"]) <= PROB_TOL


def test_fusion_net_time_channels_are_broadcast(fusion_model):
    """(nc, nr) enter as two constant maps: same result for a batch of 2 with per-sample distances."""
    torch.manual_seed(0)
    image, seg, attn = torch.randn(2, 3, 16, 16), torch.rand(2, 2, 16, 16), torch.rand(2, 2, 16, 16)
    time = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    with torch.no_grad():
        both = fusion_model(image, seg[:, :1], seg[:, 1:], attn, time)
        second = fusion_model(image[1:], seg[1:, :1], seg[1:, 1:], attn[1:], time[1:])
    assert torch.allclose(both[1:], second, atol=1e-5)  # batched vs single conv: float rounding only
    assert not torch.allclose(both[:1], fusion_model(image[:1], seg[:1, :1], seg[:1, 1:], attn[:1], time[1:]))


def test_attention_alignment():
    ref = load_npz("attention.npz")
    t = {k: torch.from_numpy(v) for k, v in ref.items()}
    # the reference's masks: one-hot ground truth of frame 3 (new) and the same rolled by 5 columns,
    # x 0.9 + 0.025 (old), both padded (the old mask's padding holds 0.025 too)
    one_hot = np.stack([labels(3) == k for k in range(4)]).astype(np.float32)[:, None]
    new = torch.from_numpy(np.pad(one_hot, ((0, 0), (0, 0), (1, 2), (2, 3))))
    old = torch.from_numpy(np.pad(np.roll(one_hot, 5, axis=3), ((0, 0), (0, 0), (1, 2), (2, 3)))) * 0.9 + 0.025
    pos, neg = mask_difference(new, old)
    assert _diff(pos, ref["pos"]) <= PROB_TOL and _diff(neg, ref["neg"]) <= PROB_TOL
    weights = attention_weights(t["mk16"], t["qk16"])
    assert _diff(weights, ref["W"]) <= PROB_TOL
    area = torch.nn.functional.interpolate(t["pos"], size=(7, 12), mode="area")
    assert _diff(area, ref["pos_area"]) <= PROB_TOL
    attn = align_difference(t["mk16"], t["pos"], t["neg"], t["qk16"])
    assert attn.shape == (4, 2, 112, 192)
    assert _diff(attn[:, :, ::3, ::3], ref["attn_sub3"]) <= LOGIT_TOL
    # the same with the weights passed in, and with the key of the interacted frame without its T axis
    again = align_difference(t["mk16"][:, :, 0], t["pos"], t["neg"], t["qk16"], weights=weights)
    assert torch.equal(again, attn)


@pytest.mark.parametrize("tc, tr, ti, expected", [(3, 9, 8, (5 / 6, 1 / 6)), (9, 6, 7, (2 / 3, 1 / 3)),
                                                  (3, 6, 4, (1 / 3, 2 / 3))])
def test_distances(tc, tr, ti, expected):
    assert distances(tc, tr, ti) == pytest.approx(expected)
