"""The one device resolver and the one ``--device`` option of every command."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from stcn.errors import UserError

if TYPE_CHECKING:  # torch is imported when a device is resolved, so `stcn --help` stays fast
    import torch

__all__ = ["DEFAULT_DEVICE", "add_device_argument", "resolve_device"]

DEFAULT_DEVICE = "auto"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``: auto (the default), cpu, cuda, cuda:N or mps."""
    parser.add_argument("--device", default=DEFAULT_DEVICE, metavar="D",
                        help="where to run: auto (default: cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")


def _has_mps() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = DEFAULT_DEVICE, *, local_rank: int | None = None) -> torch.device:
    """``auto``/None -> cuda, else mps, else cpu; refuses a device this machine does not have.

    With ``local_rank`` (a torchrun process), a bare ``cuda`` (or ``auto`` on a CUDA machine) is this
    process's GPU, ``cuda:<local_rank mod GPUs>``, so the processes spread over the GPUs.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "mps" if _has_mps() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"--device {name!r} is not a torch device (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    if device.type == "mps" and not _has_mps():
        raise UserError(f"--device {name}: Apple MPS is not available on this machine (use --device cpu)")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
    return device
