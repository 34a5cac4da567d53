"""Training checkpoints: written atomically, the last few kept, resumable with weights_only loading."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from stcn.errors import CheckpointError
from stcn.io.files import atomic_file

_NAME = re.compile(r"^checkpoint_(\d{8})\.pth$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(run_dir: Path, it: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write ``state`` as ``checkpoints/checkpoint_<it>.pth`` (temp file + rename), keep the last ``keep``."""
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"checkpoint_{it:08d}.pth"
    with atomic_file(final) as tmp:
        torch.save(state, tmp)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return final


def load_latest_checkpoint(run_dir: Path) -> tuple[int, dict[str, Any]] | None:
    """The newest readable checkpoint of a run (None when there is none)."""
    for it, path in reversed(list_checkpoints(run_dir)):
        try:
            return it, torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file: fall back to the previous one, but say so
            print(f"stcn: warning: skipping unreadable checkpoint {path} ({str(exc).splitlines()[0][:120]})")
    return None


def require_latest_checkpoint(run_dir: Path) -> tuple[int, dict[str, Any]]:
    found = load_latest_checkpoint(run_dir)
    if found is None:
        raise CheckpointError(f"--resume: no checkpoint in {checkpoint_dir(run_dir)}")
    return found


def resumed_config(config, run_dir: Path):
    """The configuration a resumed run continues with: the one it was started with (stored in its latest
    checkpoint), with only the stopping point (``iterations``) taken from ``config``; ``config`` itself
    when the run has no checkpoint, or one without a stored configuration."""
    import json

    from stcn.train.presets import TrainConfig

    found = load_latest_checkpoint(run_dir)
    if found is None or "config" not in found[1]:
        return config
    return TrainConfig.from_dict(json.loads(found[1]["config"])).override(iterations=config.iterations)
