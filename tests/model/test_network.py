"""The STCN network: shapes, no NaN, state-dict contract, gradients reach every trainable parameter."""
from __future__ import annotations

import json

import pytest
import torch
from reference_data import REFERENCE

from stcn.model import STCN, aggregate, aggregate_logits
from stcn.train.clip_pass import forward_clip

MANIFEST = json.loads((REFERENCE / "state_dict_manifest.json").read_text())


@pytest.mark.parametrize("single_object, variant", [(False, "mo_eval"), (True, "so_train")])
def test_state_dict_matches_the_released_names_and_shapes(single_object, variant):
    sd = STCN(single_object=single_object).state_dict()
    assert [(k, list(v.shape)) for k, v in sd.items()] == [(n, s) for n, s, _ in MANIFEST["variants"][variant]]


def test_building_the_network_downloads_nothing(monkeypatch):
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("the network tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    STCN()


def test_shapes_and_finite_outputs():
    torch.manual_seed(0)
    net = STCN().eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 96)
        feats = net.encode_key(x)
        assert feats.key.shape == (2, 64, 4, 6) and feats.f16_thin.shape == (2, 512, 4, 6)
        assert feats.f16.shape == (2, 1024, 4, 6) and feats.f8.shape == (2, 512, 8, 12)
        assert feats.f4.shape == (2, 256, 16, 24)
        masks = torch.rand(3, 1, 64, 96)
        values = net.encode_object_values(x[:1], feats.f16[:1], masks)
        assert values.shape == (3, 512, 4, 6)
        logits = net.decode(values, feats.f16_thin[:1], feats.f8[:1], feats.f4[:1])
        assert logits.shape == (3, 1, 64, 96) and torch.isfinite(logits).all()


def test_soft_aggregation():
    prob = torch.tensor([[0.9, 0.0], [0.2, 0.0]]).view(2, 1, 1, 2)
    agg = aggregate(prob)
    assert agg.shape == (3, 1, 1, 2)
    assert torch.allclose(agg.sum(0), torch.ones(1, 1, 2))
    assert agg[1, 0, 0, 0] > agg[2, 0, 0, 0] > agg[0, 0, 0, 0]
    assert torch.allclose(agg[0, 0, 0, 1], torch.tensor(1.0), atol=1e-6)  # no object: background
    # the clamp bounds the log-odds at +-log((1 - 1e-7) / 1e-7)
    assert aggregate_logits(torch.ones(1, 1, 1, 1)).max() <= 16.2


@pytest.mark.parametrize("single_object", [False, True])
def test_training_pass_gives_every_trainable_parameter_a_gradient(single_object):
    torch.manual_seed(0)
    net = STCN(single_object=single_object).eval()
    frames = torch.randn(1, 3, 3, 32, 32)
    gt = (torch.rand(1, 3, 1, 32, 32) > 0.5).float()
    if single_object:
        out = forward_clip(net, frames, gt)
    else:
        out = forward_clip(net, frames, gt, 1 - gt, torch.ones(1, 2))
    (out["logits_1"].mean() + out["logits_2"].mean()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing, missing
    zero = [n for n, p in net.named_parameters() if p.grad.abs().sum() == 0]
    assert not zero, zero
    # The L2 affinity cancels the key projection's bias (a common shift of all keys): its gradient is
    # zero in exact arithmetic, rounding noise in float32.
    params = dict(net.named_parameters())
    bias_grad = params["key_proj.key_proj.bias"].grad.abs().max()
    assert bias_grad < 1e-4 * params["key_proj.key_proj.weight"].grad.abs().max()


def test_small_config_round_trips_through_a_checkpoint(tmp_path):
    """A checkpoint records its ModelConfig, so load_model rebuilds the small network."""
    import stcn
    from stcn.model import PRESETS

    torch.manual_seed(0)
    net = STCN(PRESETS["small"])
    assert sum(p.numel() for p in net.parameters()) < 12.5e6  # fits 25 MB in float16
    path = stcn.save_safetensors(net.state_dict(), tmp_path / "small.safetensors",
                                 {"stcn_config": net.config.to_json()})
    loaded = stcn.load_model(path)
    assert loaded.config == PRESETS["small"]
    for (name, a), b in zip(net.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    # a training checkpoint records it too
    torch.save({"network": net.state_dict(), "stcn_config": net.config.to_json(), "it": 3}, tmp_path / "c.pth")
    assert stcn.load_model(tmp_path / "c.pth").config == PRESETS["small"]


@pytest.mark.parametrize("shape", [(3, 1, 7, 9), (4, 2, 5, 6)])
def test_most_likely_is_argmax_ties_included(shape):
    from stcn.model.aggregation import most_likely

    g = torch.Generator().manual_seed(0)
    prob = torch.rand(shape, generator=g).round(decimals=1)  # coarse values: many exact ties
    prob[1] = prob[0]  # and whole planes tied: the first index wins, as argmax
    assert torch.equal(most_likely(prob, dim=0), prob.argmax(dim=0))
    assert torch.equal(most_likely(prob, dim=1), prob.argmax(dim=1))
