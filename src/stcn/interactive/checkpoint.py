"""Strict loading of the interactive networks through STCN's checkpoint I/O (weights-only ``.pth`` /
``.safetensors``; DDP ``module.`` prefixes and ``{'network': ...}`` training checkpoints accepted)."""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from stcn.weights.io import load_state_dict_strict, read_checkpoint

M = TypeVar("M", bound=nn.Module)


def load_network(build: Callable[[], M], path: str | os.PathLike, device: str | torch.device, name: str) -> M:
    """Build ``build()`` on the meta device, load the checkpoint at ``path`` strictly (missing,
    unexpected or mis-shaped keys raise :class:`~stcn.errors.CheckpointError`), return it in eval mode."""
    ckpt = read_checkpoint(path)
    with torch.device("meta"):
        model = build()
    load_state_dict_strict(model, ckpt.state_dict, ckpt.path, assign=True, network=name)
    return model.to(device).eval()


def verify_checkpoint(build: Callable[[], nn.Module], path: str | os.PathLike, name: str):
    """Check that the checkpoint at ``path`` fits the network ``build()`` makes (``name`` for messages)
    without allocating it (built on the meta device); returns the :class:`~stcn.weights.io.Checkpoint`.
    Meant for ``stcn weights download s2m|fusion``, whose STCN check would refuse these files."""
    import warnings

    ckpt = read_checkpoint(path)
    with torch.device("meta"):
        model = build()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying from a non-meta parameter ... is a no-op"
        load_state_dict_strict(model, ckpt.state_dict, ckpt.path, network=name)
    return ckpt
