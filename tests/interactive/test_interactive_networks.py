"""S2M / FusionNet module trees match the released checkpoints' state dicts (names, shapes, dtypes,
order); strict loading through STCN's checkpoint I/O (.pth weights-only and .safetensors); registry."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from interactive_data import INTERACTIVE

from stcn.errors import CheckpointError
from stcn.interactive import S2M, FusionNet, load_fusion, load_s2m
from stcn.weights import registry
from stcn.weights.io import save_safetensors


def _manifest(name: str) -> list:
    return json.loads((INTERACTIVE / f"manifest_{name}.json").read_text())["keys"]


def _layout(module: torch.nn.Module) -> list:
    return [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in module.state_dict().items()]


@pytest.mark.parametrize("name, build", [("s2m", S2M), ("fusion", FusionNet)])
def test_state_dict_layout_matches_the_release(name, build):
    with torch.device("meta"):
        module = build()
    assert _layout(module) == _manifest(name)


def test_propagation_network_is_stcn():
    """MiVOS's propagation network has exactly STCN's keys (only the registration order differs)."""
    from stcn.model.network import STCN

    with torch.device("meta"):
        stcn = STCN()
    order = json.loads((INTERACTIVE / "manifest_propagation_order.json").read_text())["key_order"]
    assert sorted(order) == sorted(stcn.state_dict()) and len(order) == 405


def test_load_pth_and_safetensors_agree(fusion_weights, tmp_path):
    sd = torch.load(fusion_weights, weights_only=True)
    st = save_safetensors(sd, tmp_path / "fusion.safetensors")
    a, b = load_fusion(fusion_weights), load_fusion(st)
    assert not a.training and not b.training
    for (k1, v1), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2) and torch.equal(v1, sd[k1])


def test_s2m_loads_training_and_ddp_forms(s2m_weights, tmp_path):
    sd = torch.load(s2m_weights, weights_only=True)
    path = tmp_path / "ddp.pth"
    torch.save({"network": OrderedDict(("module." + k, v) for k, v in sd.items())}, path)
    model = load_s2m(path)
    assert torch.equal(model.classifier.classifier[3].weight, sd["classifier.classifier.3.weight"])


def test_strict_loading_names_the_problem(fusion_weights, tmp_path):
    sd = torch.load(fusion_weights, weights_only=True)
    missing = OrderedDict(sd)
    del missing["final_conv.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"FusionNet network: 1 missing keys: final_conv\.bias"):
        load_fusion(tmp_path / "missing.pth")
    wrong = OrderedDict(sd)
    wrong["conv1.0.weight"] = torch.zeros(32, 8, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(CheckpointError, match=r"wrong shapes: conv1\.0\.weight \(32, 8, 3, 3\)"):
        load_fusion(tmp_path / "wrong.pth")
    # an STCN (or any other) checkpoint is refused by the S2M loader
    with pytest.raises(CheckpointError, match="S2M network: 368 missing keys"):
        load_s2m(tmp_path / "wrong.pth")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.0.weight": torch.zeros(1), "extra": object()}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_fusion(path)


def test_registry_entries():
    assert registry.get("s2m").url == "https://drive.google.com/uc?id=1HKwklVey3P2jmmdmrACFlkXtcvNxbKMM"
    assert registry.get("fusion").url == "https://drive.google.com/uc?id=1MAbWHrOjlze9vPQdW-HxMnvjPpaZlfLv"
    assert registry.get("s2m").downloadable and registry.get("fusion").downloadable
    assert registry.DEFAULT == "s012"


def test_verify_checkpoint_for_the_download_check(s2m_weights, fusion_weights):
    from stcn.interactive import S2M, FusionNet
    from stcn.interactive.checkpoint import verify_checkpoint

    assert len(verify_checkpoint(S2M, s2m_weights, "S2M").state_dict) == 368
    assert len(verify_checkpoint(FusionNet, fusion_weights, "FusionNet").state_dict) == 12
    with pytest.raises(CheckpointError, match="S2M network: 368 missing keys"):
        verify_checkpoint(S2M, fusion_weights, "S2M")
