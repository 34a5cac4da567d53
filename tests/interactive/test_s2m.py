"""S2M against the original (reference units/s2m.npz: intermediates of one forward; session: the
K-object logits of a DAVIS-interactive step given its recorded inputs). Tolerances: reference README
section 8 (logits 1e-4, probabilities 2e-5; its float32-vs-float64 drift is 4.8e-6 / 7.8e-7)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from interactive_data import K, frame, load_npz

from stcn.interactive import s2m_input, s2m_mask

LOGIT_TOL = 1e-4
PROB_TOL = 2e-5


def _close(ours: torch.Tensor, ref: np.ndarray, tol: float, what: str) -> None:
    diff = float((ours.detach() - torch.from_numpy(ref)).abs().max())
    assert ours.shape == ref.shape, what
    assert diff <= tol, f"{what}: max |diff| {diff:.3g} > {tol:g}"


@pytest.mark.float_sensitive
def test_s2m_forward_with_intermediates(s2m_model):
    ref = load_npz("s2m.npz")
    x = torch.cat([frame(4), torch.from_numpy(ref["guidance"]).float()], dim=1)
    empty = x.clone()
    empty[:, 3:] = 0
    features: dict = {}
    with torch.no_grad():
        logits = s2m_model(torch.cat([x, empty]), features)
    f = {k: v[:1] for k, v in features.items()}
    branches = f["aspp_branches"].reshape(1, 5, 256, 7, 12)[:, :, :32].reshape(1, 160, 7, 12)
    for name, ours in (
        ("layer1_ch0_15", f["layer1"][:, :16]),
        ("layer2_ch0_31", f["layer2"][:, :32]),
        ("layer3_ch0_31", f["layer3"][:, :32]),
        ("layer4_ch0_127", f["layer4"][:, :128]),
        ("aspp_branches_ch0_31", branches),
        ("aspp", f["aspp"]),
        ("low_level_project_ch0_15", f["low_level_project"][:, :16]),
    ):
        _close(ours, ref[name], LOGIT_TOL, name)  # absolute, although layer4 reaches ~54
    _close(f["logits_quarter"], ref["logits_quarter"], LOGIT_TOL, "logits_quarter")
    _close(logits[:1], ref["logits"], LOGIT_TOL, "logits")
    _close(torch.sigmoid(logits[:1]), ref["prob"], PROB_TOL, "prob")
    _close(logits[1:], ref["logits_empty_input"], LOGIT_TOL, "logits with empty guidance")


@pytest.mark.float_sensitive
def test_s2m_objects_of_a_davis_step(s2m_model):
    """Interaction 7 of the reference session (frame 5, previous labels 0..3): channel 3 = previous
    label map == k, channels 4-5 = the recorded dilated scribble maps -> the 3 objects' logits."""
    ref = load_npz("session_scribbles.npz")
    i = int(ref["logits_interaction"])
    prev = torch.from_numpy(ref["s2m_prev_label_map"])
    pos, neg = torch.from_numpy(ref[f"i{i}_s2m_pos"]), torch.from_numpy(ref[f"i{i}_s2m_neg"])
    image = frame(int(ref[f"i{i}_frame"]))
    x = s2m_input(image, prev, pos, neg)
    assert x.shape == (K, 6, 112, 192)
    for k in range(K):
        assert torch.equal(x[k, 3], (prev == k + 1).float())
    with torch.no_grad():
        mask, logits = s2m_mask(s2m_model, image, prev, pos, neg)
    _close(logits[:, 0], ref["s2m_logits"], LOGIT_TOL, "S2M logits, objects 1..3")
    assert mask.shape == (K + 1, 1, 112, 192)
    assert torch.allclose(mask.sum(0), torch.ones(1, 112, 192), atol=1e-5)
