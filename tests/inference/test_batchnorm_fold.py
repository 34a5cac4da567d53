"""BatchNorm folded into the encoders' convolutions (``stcn.inference.frame_step.fold_batchnorm``): the
copy of the network the engine runs. Equal to the network up to float rounding, which is measured here
against a float64 run of the same network rather than assumed."""
from __future__ import annotations

import copy

import pytest
import torch

from stcn.inference.frame_step import FrameStep, fold_batchnorm, lowered_weight_bytes
from stcn.weights.io import load_model


def _batchnorms(module: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.BatchNorm2d) for m in module.modules())


def _encoder_outputs(net, image: torch.Tensor, probs: torch.Tensor) -> list[torch.Tensor]:
    """f16, f8, f4, key of ``image`` (1, 3, H, W) and the values (O, V, h, w) of ``probs`` (O, 1, H, W)."""
    feats = net.encode_key(image)
    others = None if net.single_object else probs.sum(0, keepdim=True) - probs
    values = net.encode_object_values_split(image, feats.f16, probs, others)
    return [feats.f16, feats.f8, feats.f4, feats.key, values]


@pytest.fixture(params=["paper", "small"])
def network(request, mo_model):
    """The paper-sized network with the reference recipe's weights, and the shipped small demo model
    (BatchNorm statistics from training)."""
    return mo_model if request.param == "paper" else load_model("demo")


def test_folded_copy_equals_the_network_to_float_rounding(network):
    before = {k: v.clone() for k, v in network.state_dict().items()}
    layers = _batchnorms(network)
    folded = fold_batchnorm(network)

    assert _batchnorms(folded.key_encoder) == 0 and _batchnorms(folded.value_encoder) == 0
    assert _batchnorms(network) == layers >= 30  # the caller's network keeps its layers, names and values
    assert network.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in network.state_dict().items())
    # what is not folded is shared, not copied
    assert all(a is b for a, b in zip(network.decoder.parameters(), folded.decoder.parameters()))

    torch.manual_seed(0)
    image = torch.randn(1, 3, 96, 128)
    probs = torch.rand(2, 1, 96, 128)
    exact = copy.deepcopy(network).double()
    with torch.inference_mode():
        plain = _encoder_outputs(network, image, probs)
        fused = _encoder_outputs(folded, image, probs)
        truth = _encoder_outputs(exact, image.double(), probs.double())
    for name, p, f, t in zip(("f16", "f8", "f4", "key", "values"), plain, fused, truth):
        noise = (p.double() - t).abs().max().item()  # float32's own rounding in this network on this host
        error = (f.double() - t).abs().max().item()
        scale = t.abs().max().item()
        assert noise < 1e-4 * scale, name  # the comparison itself is sound: float32 is close to float64
        # rescaling each weight once adds one rounding per weight: the same order as float32's own
        assert error <= 4 * noise + 1e-6 * scale, (name, error, noise, scale)


def test_the_engine_runs_a_folded_copy_and_the_dense_reference_does_not(mo_model):
    from stcn.inference import InferenceCore
    from stcn.inference.dense_reference import DenseReferenceCore

    assert _batchnorms(InferenceCore(mo_model, size=-1).frame_step.net.key_encoder) == 0
    assert FrameStep(mo_model, fold_bn=False).net is mo_model
    # the original's computation, the benchmark's baseline: BatchNorm as its own layer
    assert DenseReferenceCore(mo_model, size=-1).frame_step.net is mo_model


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.filterwarnings("ignore:precision bf16:RuntimeWarning")  # emulated where not native: expected
def test_held_weight_bytes_are_what_the_copy_adds(mo_model, precision):
    """The memory planner's ``held`` bytes: the tensors of the engine's network copy that are not the
    caller's."""
    step = FrameStep(mo_model, precision=precision)
    own = {t.data_ptr() for t in (*mo_model.parameters(), *mo_model.buffers())}
    added = sum(t.numel() * t.element_size() for t in step.net.parameters() if t.data_ptr() not in own)
    assert added == lowered_weight_bytes(mo_model, precision) > 0
    assert lowered_weight_bytes(mo_model, "fp32", fold=False) == 0


def test_engines_of_one_model_share_its_copy_until_the_model_changes():
    """A two-direction run's passes (``spawn``) hold one copy, not two; a changed weight makes a new one."""
    import gc
    import weakref

    from stcn.inference import InferenceCore
    from stcn.model import PRESETS
    from stcn.model.network import STCN

    model = STCN(PRESETS["small"]).eval()
    core = InferenceCore(model, size=-1)
    assert core.spawn().frame_step.net is core.frame_step.net
    assert InferenceCore(model, size=-1, precision="fp32").frame_step.net is core.frame_step.net
    old = core.frame_step.net
    with torch.no_grad():
        model.key_encoder.bn1.running_var.mul_(4.0)  # an in-place change: the folded weights are stale
    new = InferenceCore(model, size=-1).frame_step.net
    assert new is not old
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(new.key_encoder.bn1(new.key_encoder.conv1(x)),
                                   model.key_encoder.bn1(model.key_encoder.conv1(x)), rtol=1e-4, atol=1e-5)
    # the cache does not keep a model alive
    ref = weakref.ref(model)
    del model, core, old, new
    gc.collect()
    assert ref() is None
