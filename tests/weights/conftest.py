"""Fixtures for the weights tests (the local HTTP server and closed port live in tests/local_http.py)."""
from __future__ import annotations

import pytest


@pytest.fixture
def stcn_home(tmp_path, monkeypatch):
    """An empty $STCN_HOME for the test."""
    home = tmp_path / "stcn_home"
    monkeypatch.setenv("STCN_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def mo_sd(recipe_weights):
    """The reference multi-object state dict (as torch.load gives it)."""
    import torch

    return torch.load(recipe_weights("mo"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def so_sd(recipe_weights):
    """The reference stage-0 single-object state dict."""
    import torch

    return torch.load(recipe_weights("so"), map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def skeleton_sd():
    """A state dict with every STCN key, shape and dtype, whose tensors are one zero expanded to the shape
    (stride 0): torch.save writes a few bytes per tensor, so files that only need the right keys and
    shapes (not values) stay tiny."""
    from collections import OrderedDict

    import torch

    from stcn.model.network import STCN

    with torch.device("meta"):
        meta = STCN().state_dict()
    return OrderedDict((k, torch.zeros((), dtype=v.dtype).expand(v.shape)) for k, v in meta.items())
