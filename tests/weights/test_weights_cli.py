"""Accepted checkpoint forms through stcn.load_model, and `stcn weights convert` / `stcn weights info`."""
from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch

import stcn
from stcn.cli import main
from stcn.weights.io import FIRST_VALUE_CONV, read_checkpoint


def _num_parameters(sd) -> int:
    return sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))


def _assert_model_holds(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(expected)
    for k, v in expected.items():
        assert got[k].dtype == v.dtype, k
        assert torch.equal(got[k], v), k


def _training_checkpoint(sd):
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=1e-5, weight_decay=1e-7)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [10000], 0.1)
    p.sum().backward()
    opt.step()
    sched.step()
    return {"it": 1, "network": sd, "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}


# --------------------------------------------------------------------------------------------------
# stcn.load_model on the accepted forms
# --------------------------------------------------------------------------------------------------


def test_released_state_dict(mo_model, mo_sd):
    assert not mo_model.training
    _assert_model_holds(mo_model, mo_sd)


@pytest.mark.parametrize("form", ["training checkpoint", "DDP prefix"])
def test_wrapped_state_dicts(form, mo_sd, tmp_path):
    path = tmp_path / "ckpt.pth"
    if form == "training checkpoint":
        torch.save(_training_checkpoint(mo_sd), path)
    else:
        torch.save(OrderedDict(("module." + k, v) for k, v in mo_sd.items()), path)
    _assert_model_holds(stcn.load_model(path), mo_sd)


def test_stage0_single_object_is_widened(recipe_weights, so_sd, mo_sd):
    file_conv = so_sd[FIRST_VALUE_CONV]
    assert file_conv.shape[1] == 4
    model = stcn.load_model(recipe_weights("so"))
    sd = model.state_dict()
    conv = sd[FIRST_VALUE_CONV]
    assert conv.shape == (file_conv.shape[0], 5, *file_conv.shape[2:])
    assert torch.equal(conv[:, :4], file_conv)
    assert torch.count_nonzero(conv[:, 4]) == 0
    for k, v in so_sd.items():
        if k != FIRST_VALUE_CONV:
            assert torch.equal(sd[k], v), k


# --------------------------------------------------------------------------------------------------
# stcn weights convert
# --------------------------------------------------------------------------------------------------


def test_convert_round_trip(recipe_weights, mo_sd, tmp_path, capsys):
    src = recipe_weights("mo")
    out = tmp_path / "mo.safetensors"
    assert main(["weights", "convert", str(src), str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mo.safetensors"]  # no temporary file left
    ckpt = read_checkpoint(out)
    assert ckpt.metadata["stcn_variant"] == "multi-object" and ckpt.metadata["source"] == src.name
    assert sorted(ckpt.state_dict) == sorted(mo_sd)  # safetensors stores the keys sorted
    _assert_model_holds(stcn.load_model(out), mo_sd)

    assert main(["weights", "info", str(out)]) == 0  # info shows the metadata
    text = capsys.readouterr().out
    assert "variant:    multi-object" in text and '"stcn_variant": "multi-object"' in text


def test_convert_half_round_trip(recipe_weights, mo_sd, tmp_path, capsys):
    src = recipe_weights("mo")
    out = tmp_path / "half.safetensors"
    assert main(["weights", "convert", str(src), str(out), "--half"]) == 0
    ckpt = read_checkpoint(out)
    assert ckpt.metadata["dtype"] == "float16"
    for k, v in ckpt.state_dict.items():
        assert v.dtype == (torch.float16 if mo_sd[k].is_floating_point() else mo_sd[k].dtype), k
    assert out.stat().st_size < 0.6 * src.stat().st_size

    model = stcn.load_model(out)  # cast back to the model's float32
    expected = {k: v.half().float() if v.is_floating_point() else v for k, v in mo_sd.items()}
    _assert_model_holds(model, expected)


def test_convert_single_object_and_force(recipe_weights, so_sd, tmp_path, capsys):
    out = tmp_path / "so.safetensors"
    out.write_bytes(b"precious")
    assert main(["weights", "convert", str(recipe_weights("so")), str(out)]) == 2  # refuses to overwrite
    err = capsys.readouterr().err
    assert err.startswith("stcn: error:") and err.count("\n") == 1 and "--force" in err
    assert out.read_bytes() == b"precious"

    assert main(["weights", "convert", str(recipe_weights("so")), str(out), "--force"]) == 0
    ckpt = read_checkpoint(out)
    assert ckpt.single_object and ckpt.metadata["stcn_variant"] == "single-object"
    assert torch.equal(ckpt.state_dict[FIRST_VALUE_CONV], so_sd[FIRST_VALUE_CONV])
    assert main(["weights", "info", str(out)]) == 0
    assert "stage-0 single-object" in capsys.readouterr().out


def test_convert_needs_a_safetensors_name(recipe_weights, tmp_path, capsys):
    assert main(["weights", "convert", str(recipe_weights("mo")), str(tmp_path / "out.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stcn: error:") and ".safetensors" in err
    assert not (tmp_path / "out.pth").exists()


# --------------------------------------------------------------------------------------------------
# stcn weights info
# --------------------------------------------------------------------------------------------------


def test_info_multi_object(recipe_weights, mo_sd, capsys):
    assert main(["weights", "info", str(recipe_weights("mo"))]) == 0
    out = capsys.readouterr().out
    count = _num_parameters(mo_sd)
    assert str(count).startswith("54469")
    assert "variant:    multi-object" in out
    assert f"parameters: {count:,}" in out
    for group in ("key_encoder", "value_encoder", "key_proj", "key_comp", "decoder"):
        assert group in out
    assert "match STCN" in out


def test_info_single_object_json(recipe_weights, so_sd, capsys):
    assert main(["weights", "info", str(recipe_weights("so")), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["variant"] == "stage-0 single-object"
    assert info["parameters"] == _num_parameters(so_sd)
    assert info["value_encoder_in_channels"] == 4
    assert info["matches_network"] is True


def test_weights_without_action_prints_help(capsys):
    assert main(["weights"]) == 2
    assert "download" in capsys.readouterr().out
