"""Paths and loaders of the interactive fixtures (tests/data/interactive, see its README.md) and of the
12 synthetic frames the reference used (tests/data/reference/davis/inputs, byte-identical)."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from reference_data import DATA

INTERACTIVE = DATA / "interactive"
INPUTS = DATA / "reference" / "davis" / "inputs"
PAD = (2, 3, 1, 2)  # (left, right, top, bottom) for 109 x 187 -> 112 x 192
SIZE = (109, 187)
K = 3


def load_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(INTERACTIVE / name) as f:
        return {k: f[k] for k in f.files}


def frame(t: int) -> torch.Tensor:
    """Frame t normalised and padded (1, 3, 112, 192), as the reference fed it."""
    from stcn.inference.preprocess import pad, to_normalised_tensor

    image = np.array(Image.open(INPUTS / "frames" / f"{t:05d}.png").convert("RGB"))
    return pad(to_normalised_tensor(image), PAD)


def labels(t: int) -> np.ndarray:
    """Ground-truth label map of frame t (109, 187) uint8, ids 0..3."""
    return np.array(Image.open(INPUTS / "annotations" / f"{t:05d}.png"))
