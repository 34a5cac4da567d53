"""Make ``precision="auto"`` resolve to bf16 as on a CPU with native bfloat16 (AVX512_BF16 / AMX).

Used by ``STCN_TEST_AUTO_BF16=1`` (tests/conftest.py, a pass of .ci/run): the test process patches
:mod:`stcn.inference.precision` with :func:`pretend_native_bf16`, and puts this folder first on
``PYTHONPATH`` so that every Python process the tests start (the CLI run as a child, torchrun workers)
imports this file at start-up and patches the module when it is first imported. An AVX2-only host then
runs the code paths that a bf16 host runs by default (its bf16 is emulated: slower, same rounding), so a
test that silently assumes ``auto`` means fp32 fails on every host, not only on the ones with bf16.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys

MODULE = "stcn.inference.precision"


def pretend_native_bf16(module) -> None:
    """What this CPU says, plus what a CPU with AVX512_BF16 says: oneDNN's answer, and the flag in
    ``/proc/cpuinfo`` (another file passed to ``cpu_flags`` is read as it is). Tests that fake the
    capability themselves still monkeypatch these two."""
    read_flags = module.cpu_flags

    def cpu_flags(path: str = module._CPUINFO):
        flags = read_flags(path)
        return flags | {"avx512_bf16"} if path == module._CPUINFO and flags is not None else flags

    module.cpu_flags = cpu_flags
    module.mkldnn_bf16_supported = lambda: True


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        sys.meta_path.remove(self)  # find the real spec, then wrap its loader
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            pretend_native_bf16(module)

        spec.loader.exec_module = exec_module
        return spec


if __name__ == "sitecustomize":  # a child started with this folder on PYTHONPATH: nothing is imported yet
    sys.meta_path.insert(0, _PatchOnImport())
