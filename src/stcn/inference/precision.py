"""Which precision the engine runs its per-frame networks in: ``fp32``, ``bf16`` or ``fp16``.

``resolve_precision("auto", device)`` picks the fastest mode that is safe on the device:

* CUDA: ``fp16`` (autocast; every CUDA GPU since Pascal runs it natively);
* CPU: ``bf16`` only where the CPU runs bfloat16 natively (AVX512_BF16 or AMX-BF16, and oneDNN says it
  will use them); ``fp32`` otherwise. Without native support oneDNN emulates bfloat16 and is 10-20x
  *slower* than float32 (measured on AVX2-only AMD EPYC hosts, benchmarks/RESULTS.md), so ``auto``
  never picks it there;
* anything else: ``fp32``.

The capability is read from the CPU's flags (``/proc/cpuinfo``) and
``torch.ops.mkldnn._is_mkldnn_bf16_supported()``. When the flags cannot be read (not Linux) the answer
comes from a ~1 s timing probe (a bf16 vs fp32 convolution), cached for the process.

Explicit choices: ``bf16`` on a CPU without native support runs but warns once that it will be slow;
``fp16`` on a CPU is a :class:`~stcn.errors.UserError` (PyTorch's CPU float16 kernels are emulated).
Only the networks change precision: the memory read (affinity, top-k, softmax) and the aggregation
stay float32 in every mode.
"""
from __future__ import annotations

import functools
import time
import warnings

import torch

from stcn.errors import UserError

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# x86 flags of native bfloat16 arithmetic; "bf16" is the aarch64 feature (Armv8.6 BFDOT/BFMMLA)
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
_CPUINFO = "/proc/cpuinfo"
_warned_slow_bf16 = False


def cpu_flags(path: str = _CPUINFO) -> frozenset[str] | None:
    """The CPU's feature flags (x86 ``flags`` or aarch64 ``Features`` line of the first CPU), or None
    when they cannot be read (no ``/proc/cpuinfo``: macOS, Windows)."""
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def mkldnn_bf16_supported() -> bool:
    """What oneDNN says: True where it has bfloat16 kernels for this CPU (AVX512 or better).

    Not enough alone: on AVX512 CPUs without AVX512_BF16 it says True and emulates."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.lru_cache(maxsize=1)
def bf16_probe(seconds: float = 1.0) -> bool:
    """Time a 3x3 convolution (128 channels, 64x64, channels-last) in bf16 and fp32, alternately for
    about ``seconds``: True when bf16 is at least 1.2x faster (native; emulated bf16 is slower than fp32).
    Cached for the process."""
    x = torch.randn(1, 128, 64, 64).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).eval().to(memory_format=torch.channels_last)
    conv16 = torch.nn.Conv2d(128, 128, 3, padding=1).eval().to(torch.bfloat16, memory_format=torch.channels_last)
    x16 = x.to(torch.bfloat16)
    best = {"fp32": float("inf"), "bf16": float("inf")}
    deadline = time.perf_counter() + seconds
    with torch.inference_mode():
        conv(x), conv16(x16)  # warm-up: oneDNN primitive creation
        while time.perf_counter() < deadline:
            for name, (m, inp) in (("fp32", (conv, x)), ("bf16", (conv16, x16))):
                start = time.perf_counter()
                m(inp)
                best[name] = min(best[name], time.perf_counter() - start)
    return best["bf16"] * 1.2 <= best["fp32"]


def native_bf16_cpu() -> bool:
    """Whether this CPU runs bfloat16 natively (see the module docstring)."""
    if not mkldnn_bf16_supported():
        return False
    flags = cpu_flags()
    if flags is None:  # in doubt: measure
        return bf16_probe()
    return bool(flags & _BF16_FLAGS)


def resolve_precision(requested: str, device: torch.device) -> str:
    """``auto`` | ``fp32`` | ``bf16`` | ``fp16`` on ``device`` -> the mode to run: ``"fp32"``, ``"bf16"``
    or ``"fp16"`` (see the module docstring). Raises :class:`~stcn.errors.UserError` for an unknown
    name or ``fp16`` on a CPU; warns once for ``bf16`` on a CPU without native bfloat16."""
    global _warned_slow_bf16
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise UserError(f"unknown precision {requested!r} (expected one of {', '.join(PRECISIONS)})")
    if device.type == "cuda":
        return "fp16" if requested == "auto" else requested
    if device.type != "cpu":
        return "fp32" if requested == "auto" else requested
    if requested == "fp16":
        raise UserError("precision fp16 needs a CUDA device; on a CPU use bf16 (fast where the CPU has "
                        "AVX512_BF16 or AMX) or fp32")
    if requested == "auto":
        return "bf16" if native_bf16_cpu() else "fp32"
    if requested == "bf16" and not native_bf16_cpu() and not _warned_slow_bf16:
        _warned_slow_bf16 = True
        warnings.warn("precision bf16: this CPU has no native bfloat16 (no AVX512_BF16 / AMX), so it is "
                      "emulated and typically 10-20x slower than fp32", RuntimeWarning, stacklevel=2)
    return requested


#: What the engine runs in (``auto`` resolved).
MODES: tuple[str, ...] = ("fp32", "bf16", "fp16")


def autocast_dtype(mode: str) -> torch.dtype | None:
    """The autocast dtype of a concrete mode (None: fp32, no autocast)."""
    return None if mode == "fp32" else DTYPES[mode]
