"""The engine under ``torch.inference_mode()`` (SAM2's docs have users wrap everything in it), and
``stcn.load_model`` taking what ``--weights`` takes."""
from __future__ import annotations

import numpy as np
import torch

import stcn
from stcn.inference import InferenceCore


def _clip(t: int = 4, h: int = 48, w: int = 64):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[8:24, 8:30] = 1
    mask[30:44, 36:60] = 2
    return frames, mask


def _run(model, frames, mask):
    core = InferenceCore(model, size=-1, precision="fp32")
    return [core.step(f, mask if t == 0 else None) for t, f in enumerate(frames)]


def test_load_and_step_inside_inference_mode(recipe_weights):
    path = recipe_weights("mo")
    frames, mask = _clip()
    expected = _run(stcn.load_model(path), frames, mask)
    with torch.inference_mode():
        model = stcn.load_model(path)
        got = _run(model, frames, mask)
    assert not any(p.is_inference() for p in model.parameters())  # ordinary weights, trainable later
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_model_built_inside_inference_mode_steps(recipe_weights):
    """A network whose weights are inference tensors (built by hand in inference mode) works too."""
    path = recipe_weights("mo")
    frames, mask = _clip()
    expected = _run(stcn.load_model(path), frames, mask)
    with torch.inference_mode():
        model = stcn.STCN()
        model.load_state_dict(stcn.load_model(path).state_dict())
        got = _run(model.eval(), frames, mask)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_load_model_takes_a_registry_name():
    model = stcn.load_model("demo")
    assert isinstance(model, stcn.STCN) and not model.training
