"""Training clips from the synthetic video generator (``stcn train --stage synthetic``).

Each item is a clip of T frames (``clip_frames``, 3 as in the paper) with up to two objects, in the
layout every training dataset yields: ``rgb`` (T, 3, H, W) normalised, ``gt`` / ``sec_gt`` (T, 1, H, W)
in {0, 1}, ``selector`` (2,) (1 where the object exists), ``cls_gt`` (T, H, W) int64 (0 bg, 1 first
object, 2 second).
An item is a pure function of (seed, index): resuming a run replays exactly the same data.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from stcn.data.synthetic import generate_video
from stcn.model.input import normalise


def sample_frame_indices(rng: np.random.Generator, num_frames: int, max_skip: int, count: int = 3) -> list[int]:
    """``count`` non-decreasing frame indices, reversed with p = 0.5.

    count = 3 is the paper's training: with s = min(num_frames, max_skip), the first is uniform in
    [0, num_frames - s]; each next adds 1 + uniform{0..s}, the second clamped to <= num_frames - s, the
    third to <= num_frames - s // 2, both to <= num_frames - 1.
    Other counts take count - 1 gaps of 1 + uniform{0..s - 1} (the longest shortened until the clip fits
    the video) from a uniform start; a video of fewer than count frames gives every frame once and the
    last repeated.
    """
    if count < 2:
        raise ValueError(f"a clip needs at least 2 frames, got {count}")
    s = min(num_frames, max_skip)
    if count == 3:
        first = int(rng.integers(0, num_frames - s + 1))
        second = min(first + 1 + int(rng.integers(0, s + 1)), num_frames - s, num_frames - 1)
        third = min(second + 1 + int(rng.integers(0, s + 1)), num_frames - s // 2, num_frames - 1)
        idx = [first, max(second, first), max(third, second)]
    else:
        gaps = 1 + rng.integers(0, max(s, 1), size=count - 1)
        if num_frames < count:
            idx = [min(i, num_frames - 1) for i in range(count)]
        else:
            while gaps.sum() > num_frames - 1:  # shorten the longest gap until the clip fits
                gaps[int(np.argmax(gaps))] -= 1
            first = int(rng.integers(0, num_frames - int(gaps.sum())))
            idx = [first, *(first + np.cumsum(gaps)).tolist()]
        idx = [int(i) for i in idx]
    return idx[::-1] if rng.random() < 0.5 else idx


@dataclass
class SyntheticClipConfig:
    crop: int = 192
    clip_frames: int = 3  # frames per training clip (the paper's 3; longer clips train against drift)
    video_frames: int = 24
    video_height: int = 224
    video_width: int = 320
    max_objects_per_video: int = 3
    seed_offset: int = 1_000_000  # training seeds; validation uses seeds below this
    pool_size: int = 400  # distinct videos, each generated once and then re-sampled (clips, crops, objects)
    material: object | None = None  # a stcn.data.real_scenes.RealMaterial: real-looking videos instead
    # with a material: the share of the pool that stays plain synthetic video (keeps what those taught),
    # and the share of real-looking videos whose objects are all the same cutout (look-alikes)
    plain_fraction: float = 0.0
    lookalike_fraction: float = 0.0
    # the share of real-looking videos whose distractor enters after frame 0 and walks beside an object
    entering_fraction: float = 0.0
    # the share of real-looking videos whose objects are small (0.2-0.45 of the usual size), drawn apart from
    # the other shares (a small scene may also be a look-alike or an entering one)
    small_fraction: float = 0.0
    # the share of real-looking videos with static occluders (poles, signs, railings) across an object's path,
    # drawn apart from the other shares
    occluded_fraction: float = 0.0


class SyntheticClips(Dataset):
    """An endless-looking dataset of synthetic clips; ``max_skip`` follows the curriculum."""

    def __init__(self, length: int, *, seed: int = 0, config: SyntheticClipConfig | None = None,
                 max_skip: int | Callable[[int], int] = 5) -> None:
        """max_skip: a constant, or a function of the sample index (the training curriculum)."""
        self.length = length
        self.seed = seed
        self.config = config or SyntheticClipConfig()
        self.max_skip = max_skip
        self._pool: dict[int, object] = {}

    def video(self, number: int):
        """The pool's video ``number`` (generated on first use; a pure function of its number)."""
        if number not in self._pool:
            c = self.config
            rng = np.random.default_rng([self.seed, c.seed_offset, number])
            if c.material is not None and self._real(number):
                from stcn.data.real_scenes import generate_real_video

                self._pool[number] = generate_real_video(
                    c.seed_offset + number, c.material, num_frames=c.video_frames, height=c.video_height,
                    width=c.video_width, num_objects=int(rng.integers(1, c.max_objects_per_video + 1)),
                    allow_exit=bool(rng.random() < 0.3), distractor=bool(rng.random() < 0.3),
                    speed=float(rng.uniform(0.5, 2.0)), lookalike=self._lookalike(number),
                    entering=self._entering(number), small=self._small(number),
                    occluders=self._occluded(number),
                )
                return self._pool[number]
            self._pool[number] = generate_video(
                c.seed_offset + number, num_frames=c.video_frames, height=c.video_height,
                width=c.video_width, num_objects=int(rng.integers(1, c.max_objects_per_video + 1)),
                allow_exit=bool(rng.random() < 0.3), distractor=bool(rng.random() < 0.3),
                speed=float(rng.uniform(0.5, 2.0)),
            )
        return self._pool[number]

    def _draw(self, number: int, salt: int) -> float:
        # a separate stream per decision, so adding a knob does not move the other videos' draws
        return float(np.random.default_rng([self.seed, self.config.seed_offset, number, salt]).random())

    def _real(self, number: int) -> bool:
        return self._draw(number, 1) >= self.config.plain_fraction

    def _lookalike(self, number: int) -> bool:
        return self._draw(number, 2) < self.config.lookalike_fraction

    def _entering(self, number: int) -> bool:
        return self._draw(number, 3) < self.config.entering_fraction

    def _small(self, number: int) -> bool:
        return self._draw(number, 4) < self.config.small_fraction

    def _occluded(self, number: int) -> bool:
        return self._draw(number, 5) < self.config.occluded_fraction

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        c = self.config
        rng = np.random.default_rng([self.seed, index])
        video = self.video(int(rng.integers(0, c.pool_size)))
        max_skip = self.max_skip(index) if callable(self.max_skip) else self.max_skip
        frames_idx = sample_frame_indices(rng, c.video_frames, max_skip, c.clip_frames)
        frames = video.frames[frames_idx]
        labels = video.labels[frames_idx]
        # a random crop of the clip (shared by its frames) and a random flip
        y = int(rng.integers(0, c.video_height - c.crop + 1))
        x = int(rng.integers(0, c.video_width - c.crop + 1))
        frames = frames[:, y:y + c.crop, x:x + c.crop]
        labels = labels[:, y:y + c.crop, x:x + c.crop]
        if rng.random() < 0.5:
            frames, labels = frames[:, :, ::-1], labels[:, :, ::-1]
        present = [int(i) for i in np.unique(labels[0]) if i != 0]
        chosen = list(rng.permutation(present)[:2]) if present else []
        first = labels == chosen[0] if chosen else np.zeros_like(labels, dtype=bool)
        second = labels == chosen[1] if len(chosen) > 1 else np.zeros_like(labels, dtype=bool)
        rgb = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
        # per-frame colour jitter
        gain = torch.from_numpy(rng.uniform(0.9, 1.1, size=(len(frames_idx), 3, 1, 1))).float()
        rgb = normalise((rgb * gain).clamp(0, 1))
        gt = torch.from_numpy(np.ascontiguousarray(first)).float().unsqueeze(1)
        sec_gt = torch.from_numpy(np.ascontiguousarray(second)).float().unsqueeze(1)
        cls_gt = (gt[:, 0] + 2 * sec_gt[:, 0]).long()
        selector = torch.tensor([1.0, 1.0 if len(chosen) > 1 else 0.0])
        return {"rgb": rgb, "gt": gt, "sec_gt": sec_gt, "selector": selector, "cls_gt": cls_gt}
