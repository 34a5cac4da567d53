"""Deterministic synthetic weights for the interactive networks (S2M, FusionNet), written from the
prose recipe of the reference (tests/data/interactive/README.md, "Weights"). numpy + torch only.

Every tensor is a pure function of (name, shape, seed):
- ``*.num_batches_tracked``: int64 zero scalar;
- else a fresh generator ``numpy.random.default_rng([seed, crc32(name)])`` draws the whole tensor
  (C order, float64) and the result is cast to float32;
- BatchNorm tensors (prefix with a ``running_var``): weight U(0.2, 0.4) for the last BN of a
  bottleneck branch (``backbone.layerN.M.bn3``), else U(0.8, 1.2); bias and running mean 0.1 N(0, 1);
  running var U(0.5, 1.5);
- conv / linear weights: N(0, 1) * gain / sqrt(fan_in) (gain sqrt(2) unless listed), then the input
  channels 3.. of the first conv multiplied by 3 (mask / scribble / fusion-guidance inputs);
- conv biases: 0.02 N(0, 1).

    make_state_dict("s2m", 0, manifest_path) -> OrderedDict;  verify(sd, checksums_path, "s2m_seed0")
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections import OrderedDict

import numpy as np
import torch

# (regex, gain): first match wins; everything else gets sqrt(2)
GAINS = {
    "s2m": [(r"^classifier\.classifier\.3\.weight$", 1.0)],
    "fusion": [(r"^final_conv\.weight$", 1.0), (r"^conv[23]\.2\.weight$", 0.5)],
}
FIRST_CONV = {"s2m": "backbone.conv1.weight", "fusion": "conv1.0.weight"}
GUIDANCE_GAIN = 3.0  # first conv, input channels 3 and above
LAST_BN = r"^backbone\.layer\d\.\d+\.bn3\."


def _tensor(net: str, name: str, shape: tuple[int, ...], seed: int, bn_prefixes: set[str]) -> torch.Tensor:
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode("utf-8"))])
    prefix, leaf = name.rsplit(".", 1)
    if prefix in bn_prefixes:
        if leaf == "weight":
            lo, hi = (0.2, 0.4) if re.search(LAST_BN, name) else (0.8, 1.2)
            values = rng.uniform(lo, hi, size=shape)
        elif leaf in ("bias", "running_mean"):
            values = rng.standard_normal(size=shape) * 0.1
        elif leaf == "running_var":
            values = rng.uniform(0.5, 1.5, size=shape)
        else:
            raise ValueError(f"unexpected BatchNorm tensor {name}")
    elif leaf == "weight" and len(shape) in (2, 4):
        gain = next((g for pattern, g in GAINS[net] if re.search(pattern, name)), math.sqrt(2.0))
        scale = gain / math.sqrt(int(np.prod(shape[1:])))
        values = rng.standard_normal(size=shape) * scale
        if name == FIRST_CONV[net]:
            values[:, 3:] *= GUIDANCE_GAIN
    elif leaf == "bias" and len(shape) == 1:
        values = rng.standard_normal(size=shape) * 0.02
    else:
        raise ValueError(f"unexpected tensor {name} {shape}")
    return torch.from_numpy(values.astype(np.float32))


def make_state_dict(net: str, seed: int, manifest: str) -> OrderedDict[str, torch.Tensor]:
    """The recipe's state dict of ``net`` ('s2m' | 'fusion') in manifest order."""
    with open(manifest) as f:
        entries = json.load(f)["keys"]
    bn_prefixes = {n.rsplit(".", 1)[0] for n, _, _ in entries if n.endswith(".running_var")}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, shape, dtype in entries:
        out[name] = _tensor(net, name, tuple(shape), seed, bn_prefixes)
        assert str(out[name].dtype) == f"torch.{dtype}", name
    return out


def checksum(t: torch.Tensor) -> list:
    """[float64 sum, float64 sum of squares, sha256[:16] of the little-endian C-order bytes]."""
    a = t.detach().cpu().numpy()
    raw = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"))).tobytes()
    a64 = a.astype(np.float64)
    return [float(a64.sum()), float((a64 ** 2).sum()), hashlib.sha256(raw).hexdigest()[:16]]


def verify(state_dict: dict[str, torch.Tensor], checksums: str, variant: str) -> list[str]:
    """Names whose checksum differs from ``checksums[variants][variant]`` (plus missing/extra names)."""
    with open(checksums) as f:
        ref = json.load(f)["variants"][variant]["tensors"]
    bad = [n for n in ref if n not in state_dict or checksum(state_dict[n]) != ref[n]]
    return bad + [n for n in state_dict if n not in ref]
