"""The training data of the paper's stages 0-3: index-addressable clip datasets.

:func:`build_stage_dataset` (called by ``stcn train``) gives, for

* stage 0: the static image sets under ``--static-root`` (BIG and HRSOD counted 5 times);
* stage 1: BL30K under ``--bl30k-root``;
* stages 2 and 3: DAVIS 2017 (``--davis-root``, counted 5 times) and YouTube-VOS (``--youtube-root``).

A :class:`TrainingClips` answers any index >= 0: index ``i`` lies in epoch ``i // N`` (N = the
epoch's size, each source counted its number of times) at position ``i % N`` of that epoch's own
random permutation, and its clip is drawn from ``np.random.default_rng([seed, i])``. The max skip of
the frame sampling follows the curriculum: ``config.max_skip(i // (batch_size * world))``. So an
item is a pure function of (seed, index) and a resumed or distributed run sees exactly the data of
an uninterrupted single-process one with the same global batch.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stcn.errors import DataError, UserError

DAVIS_REPEAT = 5
_PERMUTATION_TAG = 0x5EED_0E0C  # keeps the epoch permutations' streams apart from the items'


class TrainingClips(Dataset):
    """Clips from ``sources`` (objects with ``len()`` and ``clip(position, rng, max_skip)``), each
    counted ``repeat`` times per epoch, shuffled per epoch, addressable by any index >= 0.

    ``len()`` is the size of one epoch; indices beyond it continue into later epochs.
    ``max_skip``: a constant or a function of the index (the curriculum).
    """

    def __init__(self, sources: Sequence[tuple[object, int]], *, seed: int,
                 max_skip: int | Callable[[int], int] = 5) -> None:
        self.sources = [s for s, _ in sources]
        self.repeats = [int(r) for _, r in sources]
        self.seed = int(seed)
        self.max_skip = max_skip
        self._starts: list[int] = []
        total = 0
        for source, repeat in zip(self.sources, self.repeats):
            self._starts.append(total)
            total += len(source) * repeat
        self.epoch_length = total
        if total == 0:
            raise DataError("the training data set is empty")
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.epoch_length

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) >= 2:
                self._permutations.pop(next(iter(self._permutations)))
            rng = np.random.default_rng([self.seed, _PERMUTATION_TAG, epoch])
            self._permutations[epoch] = rng.permutation(self.epoch_length)
        return self._permutations[epoch]

    def locate(self, index: int) -> tuple[object, int]:
        """The source and position inside it of sample ``index``."""
        epoch, position = divmod(int(index), self.epoch_length)
        slot = int(self.permutation(epoch)[position])
        k = bisect.bisect_right(self._starts, slot) - 1
        source = self.sources[k]
        return source, (slot - self._starts[k]) % len(source)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < 0:
            raise IndexError(index)
        source, position = self.locate(index)
        rng = np.random.default_rng([self.seed, int(index)])
        skip = self.max_skip(int(index)) if callable(self.max_skip) else self.max_skip
        return source.clip(position, rng, skip)


class SkipCurriculum:
    """Sample index -> the largest frame skip at that sample's iteration (``config.max_skip`` of
    ``index // (batch_size * world)``). A class rather than a closure: DataLoader workers may be spawned."""

    def __init__(self, config, world: int) -> None:
        self.config, self.world = config, world

    def __call__(self, index: int) -> int:
        return self.config.max_skip(index // (self.config.batch_size * self.world))


def static_sources(root: str | Path, crop: int = 384) -> list[tuple[object, int]]:
    from stcn.data.static import StaticAugmentConfig, StaticClips, find_static_sets

    return [(StaticClips(s, StaticAugmentConfig(crop=crop)), s.repeat) for s in find_static_sets(root)]


def bl30k_sources(root: str | Path, crop: int = 384) -> list[tuple[object, int]]:
    from stcn.data.video_training import VideoAugmentConfig, bl30k_training_set

    return [(bl30k_training_set(root, VideoAugmentConfig(crop=crop, crop_scale=(0.25, 1.0))), 1)]


def davis_youtube_sources(davis_root: str | Path, youtube_root: str | Path,
                          crop: int = 384) -> list[tuple[object, int]]:
    from stcn.data.video_training import VideoAugmentConfig, davis_training_set, youtube_training_set

    config = VideoAugmentConfig(crop=crop)
    return [(davis_training_set(davis_root, config), DAVIS_REPEAT), (youtube_training_set(youtube_root, config), 1)]


def _require(args, name: str, stage: str, what: str) -> Path:
    value = getattr(args, name, None)
    if value is None:
        flag = "--" + name.replace("_", "-")
        raise UserError(f"stage {stage} trains on {what}: pass {flag} DIR (see docs/training.md)")
    return Path(value)


def build_stage_dataset(config, args, world: int = 1) -> TrainingClips:
    """The data of ``config.stage`` from the roots in ``args`` (``static_root``, ``bl30k_root``,
    ``davis_root``, ``youtube_root``)."""
    stage = str(config.stage)
    crop = int(config.crop)
    if stage in ("0", "real-static"):
        sources = static_sources(_require(args, "static_root", stage, "static images"), crop)
    elif stage == "1":
        sources = bl30k_sources(_require(args, "bl30k_root", stage, "BL30K"), crop)
    elif stage in ("2", "3"):
        davis = _require(args, "davis_root", stage, "DAVIS 2017 and YouTube-VOS")
        youtube = _require(args, "youtube_root", stage, "DAVIS 2017 and YouTube-VOS")
        sources = davis_youtube_sources(davis, youtube, crop)
    else:
        raise UserError(f"no dataset for stage {stage!r}")
    return TrainingClips(sources, seed=config.seed, max_skip=SkipCurriculum(config, world))
