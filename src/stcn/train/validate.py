"""Validation on synthetic videos whose seeds training never uses (below SyntheticClipConfig.seed_offset)."""
from __future__ import annotations

import numpy as np
import torch

from stcn.data.synthetic import generate_video
from stcn.eval.metrics import clip_jf
from stcn.inference.options import EngineOptions
from stcn.inference.video import segment_video


def synthetic_validation_videos(count: int = 8, *, first_seed: int = 0, num_frames: int = 40, height: int = 240,
                                width: int = 432):
    """Validation clips: 2-3 objects, occlusions, objects leaving and re-entering the frame."""
    for i in range(count):
        seed = first_seed + i
        yield generate_video(seed, num_frames=num_frames, height=height, width=width, num_objects=2 + seed % 2,
                             allow_exit=True, distractor=bool(seed % 3 == 0))


@torch.inference_mode()
def evaluate_synthetic(model: torch.nn.Module, videos, options: EngineOptions | None = None) -> dict[str, float]:
    """Mean J, F and J&F (DAVIS protocol, first/last frames excluded) of ``model`` over ``videos``,
    segmented by :func:`stcn.segment_video` with ``options`` (default: native size, exact fp32)."""
    options = options or EngineOptions(size=-1, precision="fp32")
    js, fs = [], []
    was_training = model.training
    model.eval()
    for video in videos:
        pred = np.stack([r.labels for r in segment_video(video.frames, {0: video.labels[0]}, model=model,
                                                         options=options)])
        j, f, _ = clip_jf(video.labels, pred, list(video.object_ids))
        js.append(j)
        fs.append(f)
    model.train(was_training)
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "videos": len(js)}
