"""A synthetic DAVIS-interactive set: :mod:`stcn.data.synthetic` videos in the DAVIS layout plus a
``Scribbles/<seq>/001.json`` drawn by our robot from the ground truth (the robot's scribbles on an
empty prediction), so ``stcn eval interactive`` runs end to end without the real data."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stcn.data.synthetic import generate_video, write_davis
from stcn.interactive.robot import ScribbleRobot
from stcn.io.files import atomic_write

__all__ = ["initial_scribble", "write_synthetic_interactive"]


def initial_scribble(name: str, labels: np.ndarray, num_objects: int, frame: int | None = None) -> dict:
    """The robot's scribble for an empty prediction of ``labels`` (T, H, W) on ``frame`` (default: the
    frame where the objects cover the most pixels), as a DAVIS scribble dict."""
    if frame is None:
        frame = int(np.argmax((labels > 0).reshape(len(labels), -1).sum(axis=1)))
    scribble = ScribbleRobot()(name, labels, np.zeros_like(labels), num_objects, frame=frame)
    for p in scribble["scribbles"][frame]:
        p["start_time"] = p["end_time"] = 0.0  # wall-clock stamps: meaningless, keep files reproducible
    scribble["annotated_frame"] = frame
    return scribble


def write_synthetic_interactive(root: str | os.PathLike, seeds: Sequence[int] = (0, 1), *, num_frames: int = 8,
                                height: int = 48, width: int = 64, num_objects: int = 2) -> Path:
    """Write ``synth<seed>`` sequences (DAVIS layout, ImageSets/2017/val.txt) with one robot scribble
    each under ``root`` and return it. Every object is visible in frame 0 (``late_objects=0``)."""
    root = Path(root)
    videos = {f"synth{s}": generate_video(s, num_frames=num_frames, height=height, width=width,
                                          num_objects=num_objects) for s in seeds}
    write_davis(root, videos)
    for name, video in videos.items():
        k = int(video.labels[0].max())
        atomic_write(root / "Scribbles" / name / "001.json",
                     json.dumps(initial_scribble(name, np.asarray(video.labels), k)))
    return root
