"""Fetching released checkpoints into the cache, and checking a checkpoint against the network.

    >>> from stcn.weights.download import download_weights
    >>> download_weights("s012")              # -> ~/.cache/stcn/weights/stcn_s012.pth
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

from stcn.errors import UserError
from stcn.utils.download import download_file
from stcn.weights import registry
from stcn.weights.io import Checkpoint, checkpoint_config, load_state_dict_strict, read_checkpoint

#: MiVOS's networks in the registry: not STCN checkpoints, checked by the caller's ``check``.
INTERACTIVE_NETWORKS = ("s2m", "fusion")


def verify_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read ``path`` and check that its keys and shapes fit the STCN network of its variant.

    The network is built on the ``meta`` device (no memory, well under a second). Raises
    :class:`~stcn.errors.CheckpointError` naming the missing, unexpected and mis-shaped keys.
    """
    import torch

    from stcn.model.network import STCN

    ckpt = read_checkpoint(path)
    with torch.device("meta"):
        model = STCN(checkpoint_config(ckpt))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "copying from a non-meta parameter ... is a no-op"
        load_state_dict_strict(model, ckpt.state_dict, ckpt.path)
    return ckpt


def download_weights(name: str = registry.DEFAULT, *, force: bool = False, progress: bool = True,
                     check: Callable[[Path], object] | None = None) -> Path:
    """Make sure checkpoint ``name`` is in the cache and return its path.

    Already there and not ``force``: nothing is downloaded. Otherwise the file is downloaded (continuing
    a partial download unless ``force``), checked (sha256 when the registry knows it, and that it is an
    STCN checkpoint, or ``check(path)`` for other networks: the caller that knows them passes it), then
    moved into place.
    """
    entry = registry.get(name)
    path = registry.cached_path(name)
    if not entry.downloadable:
        if path.is_file():
            return path
        raise UserError(f"weights {name!r} are shipped with the package but {path} is missing; reinstall stcn")
    if path.is_file() and not force:
        return path
    assert entry.url is not None
    if check is None and Path(entry.filename).suffix in (".pth", ".pt") and name not in INTERACTIVE_NETWORKS:
        check = verify_checkpoint
    return download_file(entry.url, path, sha256=entry.sha256, progress=progress, resume=not force, check=check,
                         desc=entry.filename)
