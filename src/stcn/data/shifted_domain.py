"""A small fine-tuning set from a *shifted* synthetic domain, with sparse annotations.

The demo model learnt on :func:`stcn.data.synthetic.generate_video`'s videos. Here the same scenes
are shown with their colours inverted and their hue rotated (other colour statistics: dark stripes
become light, the background's tints change), so the model meets a domain it was not trained on. Only
every ``annotate_every``-th frame keeps its mask (the first frame always does), which is the sparse
layout ``stcn train --stage finetune --data DIR`` reads (tests, benchmarks and docs/training.md use it).
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from stcn.data.synthetic import SyntheticVideo, generate_video


def shift_frames(frames: np.ndarray) -> np.ndarray:
    """The domain shift: (T, H, W, 3) uint8 -> the same shape, colours inverted and channels rotated
    (R, G, B) -> (G, B, R) (a hue rotation of 120 degrees)."""
    return np.ascontiguousarray((255 - frames)[..., [1, 2, 0]])


def shifted_video(seed: int, *, num_frames: int = 16, height: int = 96, width: int = 128,
                  num_objects: int = 2) -> SyntheticVideo:
    """:func:`generate_video` of ``seed`` with :func:`shift_frames` applied (labels unchanged)."""
    video = generate_video(seed, num_frames=num_frames, height=height, width=width, num_objects=num_objects)
    return SyntheticVideo(frames=shift_frames(video.frames), labels=video.labels, object_ids=video.object_ids,
                          first_frame=video.first_frame, seed=video.seed)


def write_sparse_set(root: str | os.PathLike, seeds: Iterable[int], *, annotate_every: int = 2,
                     quality: int = 95, **video_options) -> Path:
    """Write ``root/JPEGImages/vNNNN/*.jpg`` (every frame) and ``root/Annotations/vNNNN/*.png``
    (frames 0, k, 2k, ... for k = ``annotate_every``) of :func:`shifted_video` for each seed."""
    from PIL import Image

    from stcn.io.masks import save_label_png

    root = Path(root)
    for seed in seeds:
        video = shifted_video(int(seed), **video_options)
        images, masks = root / "JPEGImages" / f"v{seed:04d}", root / "Annotations" / f"v{seed:04d}"
        images.mkdir(parents=True, exist_ok=True)
        masks.mkdir(parents=True, exist_ok=True)
        for t in range(video.num_frames):
            Image.fromarray(video.frames[t]).save(images / f"{t:05d}.jpg", quality=quality)
            if t % annotate_every == 0:
                save_label_png(masks / f"{t:05d}.png", video.labels[t])
    return root
