"""Shared fixtures: the reference weight recipe and reference tensors (copied from the project's
shared/reference into tests/data/reference; see tests/data/README.md)."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from local_http import closed_port, local_server  # noqa: F401  (fixtures for every test folder)
from reference_data import REFERENCE

torch.set_num_threads(2)

#: ``STCN_TEST_NO_MKLDNN=1``: every test runs with oneDNN (mkldnn) disabled, so the float-sensitive
#: tests (marker ``float_sensitive``) also exercise PyTorch's other CPU kernels; .ci/run does this as a
#: second pass over the marked tests. Their bounds come from the reference's measured noise, not from
#: one host's output, so both kernel paths must pass.
NO_MKLDNN = os.environ.get("STCN_TEST_NO_MKLDNN", "") not in ("", "0")


#: ``STCN_TEST_AUTO_BF16=1``: ``precision="auto"`` resolves to bf16 here and in every child process, as
#: on a CPU with native bfloat16 (tests/auto_bf16/sitecustomize.py); .ci/run makes a pass of the whole
#: suite this way, so that a test assuming ``auto`` is fp32 fails on AVX2 hosts too.
AUTO_BF16 = os.environ.get("STCN_TEST_AUTO_BF16", "") not in ("", "0")
if AUTO_BF16:
    _SHIM = Path(__file__).parent / "auto_bf16"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(_SHIM), os.environ.get("PYTHONPATH")) if p)
    _spec = importlib.util.spec_from_file_location("stcn_test_auto_bf16", _SHIM / "sitecustomize.py")
    _shim = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_shim)
    import stcn.inference.precision

    _shim.pretend_native_bf16(stcn.inference.precision)


def pytest_report_header(config):
    return [f"oneDNN (mkldnn): {'disabled (STCN_TEST_NO_MKLDNN)' if NO_MKLDNN else 'enabled'}",
            f"precision auto: {'bf16, as on a native-bf16 CPU (STCN_TEST_AUTO_BF16)' if AUTO_BF16 else 'this CPU'}"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # around setup, call and teardown, so module- and session-scoped fixtures computed for the test
    # (the reference runs) also use the kernels chosen. The switch torch.backends.mkldnn.flags(enabled=False)
    # flips, set directly: flags() also sets oneDNN's TF32 switch, which warns on every CPU-only build.
    if not NO_MKLDNN:
        yield
        return
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def _recipe():
    spec = importlib.util.spec_from_file_location("make_weights", REFERENCE / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_weights"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def recipe():
    """The reference weight recipe module (make_state_dict(variant, seed), verify, ...)."""
    return _recipe()


@pytest.fixture(scope="session")
def recipe_weights(recipe, tmp_path_factory):
    """variant ('mo' | 'so') -> path of a .pth holding the recipe's seed-0 state dict (built once)."""
    cache: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in cache:
            sd = recipe.make_state_dict(variant, 0, str(REFERENCE / "state_dict_manifest.json"))
            assert not recipe.verify(sd, str(REFERENCE / "weights_checksums.json"), f"{variant}_seed0")
            path = tmp_path_factory.mktemp("weights") / f"{variant}_seed0.pth"
            torch.save(sd, path)
            cache[variant] = path
        return cache[variant]

    return get


@pytest.fixture(scope="session")
def mo_model(recipe_weights):
    import stcn

    return stcn.load_model(recipe_weights("mo"))

