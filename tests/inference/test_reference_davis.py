"""The streaming engine reproduces the original's DAVIS path (tests/data/reference/davis, reference
README section 5) through the public API: probabilities within 5e-4 and identical labels wherever the
reference's top-two margin is at least 1e-3."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from reference_data import REFERENCE, load_npz

import stcn
from stcn.inference import InferenceCore

DAVIS = REFERENCE / "davis"
FRAMES = [np.array(Image.open(DAVIS / "inputs" / "frames" / f"{i:05d}.png").convert("RGB")) for i in range(12)]
FIRST_MASK = np.array(Image.open(DAVIS / "inputs" / "annotations" / "00000.png"))

VARIANTS = {
    # variant: (weights, engine options, single object = union of ids)
    "default": ("mo", {}, False),
    "include_last": ("mo", {"include_last": True}, False),
    "mem3_top10": ("mo", {"mem_every": 3, "top_k": 10}, False),
    "davis2016": ("mo", {}, True),
    "stage0_so_weights": ("so", {}, False),
}
EXPECTED_MEMORY = {"default": [0, 5, 10], "include_last": [0, 5, 10], "mem3_top10": [0, 3, 6, 9],
                   "davis2016": [0, 5, 10], "stage0_so_weights": [0, 5, 10]}


@pytest.mark.float_sensitive
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_davis_path(variant, recipe_weights):
    weights, options, single = VARIANTS[variant]
    ref = load_npz(DAVIS / f"{variant}.npz")
    core = InferenceCore(stcn.load_model(recipe_weights(weights)), size=-1, precision="fp32", **options)
    mask = (FIRST_MASK > 0).astype(np.uint8) if single else FIRST_MASK
    probs, labels = [], []
    for t, frame in enumerate(FRAMES):
        p = core.step(frame, mask if t == 0 else None)
        probs.append(p.numpy())
        labels.append(core.labels(p) * (255 if single else 1))
    probs = np.stack(probs, axis=1)
    labels = np.stack(labels)

    assert core.object_ids == ([1] if single else [1, 2, 3])
    assert core.memory.frames == EXPECTED_MEMORY[variant]
    frames = ref["prob_frames"]
    ref_probs = ref["prob_u16"].astype(np.float64) / 65535  # stored quantised: error <= 7.7e-6
    assert np.abs(probs[:, frames] - ref_probs).max() < 5e-4
    trusted = ~ref["low_margin"]
    assert np.array_equal(labels[trusted], ref["labels"][trusted])
    assert (labels != ref["labels"]).mean() < 1e-4
