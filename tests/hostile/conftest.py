"""Shared inputs of the hostile tests: one tiny clip and mask, broken checkpoints (session-scoped)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hostile_inputs

from hostile_inputs import broken_checkpoints, write_frames, write_mask  # noqa: E402


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> dict[str, Path]:
    """frames/ (6 JPEGs 64x48), mask.png (one object) and broken checkpoints, in a session folder."""
    root = tmp_path_factory.mktemp("hostile_inputs")
    return {"root": root, "frames": write_frames(root / "frames"), "mask": write_mask(root / "mask.png"),
            **{f"ckpt_{k}": v for k, v in broken_checkpoints(root / "ckpt").items()}}
