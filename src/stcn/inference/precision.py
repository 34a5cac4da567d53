"""Which arithmetic the engine runs in: ``fp32`` (exact, the reference), ``bf16`` or ``fp16`` autocast.

``auto`` picks a concrete mode from the hardware. For now: ``fp16`` on CUDA, else ``fp32`` (capability
detection is a later refinement; the interface stays).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from stcn.errors import UserError

if TYPE_CHECKING:  # imported when used, so `stcn --help` (which declares --precision) stays fast
    import torch

__all__ = ["PRECISIONS", "MODES", "resolve_precision", "autocast_dtype"]

#: What users may ask for.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: What the engine runs in (``auto`` resolved).
MODES = ("fp32", "bf16", "fp16")


def resolve_precision(requested: str, device: torch.device) -> str:
    """The concrete mode (``fp32``, ``bf16`` or ``fp16``) for ``requested`` on ``device``.

    Raises a one-line :class:`UserError` for an unknown name, or ``fp16`` off CUDA."""
    import torch

    device = torch.device(device)
    if requested == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if requested not in MODES:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    if requested == "fp16" and device.type != "cuda":
        raise UserError(f"--precision fp16 needs a CUDA device, not {device.type} (use bf16 or fp32)")
    return requested


def autocast_dtype(mode: str) -> torch.dtype | None:
    """The autocast dtype of a concrete mode (None: fp32, no autocast)."""
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[mode]
