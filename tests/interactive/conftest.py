"""Fixtures for the interactive (MiVOS) tests: recipe weights for S2M / FusionNet (verified against the
reference checksums), the loaded networks, the synthetic frames. Data: tests/data/interactive (see its
README.md) and tests/data/reference/davis/inputs (the same 12 frames the reference used)."""
from __future__ import annotations

from pathlib import Path

import pytest
import recipe_interactive
import torch
from interactive_data import INTERACTIVE


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on the 2 shared cores, 2 threads under load cost ~10x (OpenMP barriers
    waiting on descheduled threads); results are within the tolerances either way."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(net: str, tmp_path_factory) -> Path:
    sd = recipe_interactive.make_state_dict(net, 0, str(INTERACTIVE / f"manifest_{net}.json"))
    bad = recipe_interactive.verify(sd, str(INTERACTIVE / "weights_checksums.json"), f"{net}_seed0")
    assert not bad, f"recipe differs from the reference checksums in {len(bad)} tensors, e.g. {bad[:3]}"
    path = tmp_path_factory.mktemp("interactive_weights") / f"{net}_seed0.pth"
    torch.save(sd, path)
    return path


@pytest.fixture(scope="session")
def s2m_weights(tmp_path_factory) -> Path:
    return _weights("s2m", tmp_path_factory)


@pytest.fixture(scope="session")
def fusion_weights(tmp_path_factory) -> Path:
    return _weights("fusion", tmp_path_factory)


@pytest.fixture(scope="session")
def s2m_model(s2m_weights):
    from stcn.interactive import load_s2m

    return load_s2m(s2m_weights)


@pytest.fixture(scope="session")
def fusion_model(fusion_weights):
    from stcn.interactive import load_fusion

    return load_fusion(fusion_weights)
