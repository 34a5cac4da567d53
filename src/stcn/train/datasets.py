"""The training set of a stage: synthetic clips (plain, or over real photos and masks), your own videos
(fine-tuning), or the paper's static / DAVIS / YouTube-VOS / BL30K sets (:mod:`stcn.data.training`)."""
from __future__ import annotations

from stcn.data.training import SkipCurriculum

#: The stages whose clips come from the video generator, the only ones that make clips longer than 3 frames.
GENERATED_STAGES = ("synthetic", "real-video")
#: The real-video stage's mix of clip kinds (``stcn train --plain-fraction`` ...), each a share in [0, 1].
MIX_FRACTIONS = ("plain_fraction", "lookalike_fraction", "entering_fraction", "small_fraction",
                 "occluded_fraction")


def build_dataset(config, args, world: int):
    """The dataset ``config``'s stage trains on, for ``world`` processes; ``args`` holds the dataset roots
    (``static_root``, ``davis_root``, ... as ``stcn train`` reads them) and, for fine-tuning,
    ``finetune_data`` (:func:`stcn.train.finetune.prepare_finetune`)."""
    if config.stage == "synthetic":
        from stcn.data.synthetic_clips import SyntheticClipConfig, SyntheticClips

        clip_config = SyntheticClipConfig(crop=config.crop, clip_frames=config.clip_frames)
        return SyntheticClips(config.iterations * config.batch_size * world, seed=config.seed, config=clip_config,
                              max_skip=SkipCurriculum(config, world))
    if config.stage == "real-video":
        from stcn.data.real_scenes import RealMaterial
        from stcn.data.synthetic_clips import SyntheticClipConfig, SyntheticClips
        from stcn.data.training import _require

        material = RealMaterial.from_static_root(_require(args, "static_root", config.stage, "real photos and masks"))
        mix = {k: float(v) for k, v in config.datasets.items() if k in MIX_FRACTIONS}
        clip_config = SyntheticClipConfig(crop=config.crop, clip_frames=config.clip_frames, material=material,
                                          **mix)
        return SyntheticClips(config.iterations * config.batch_size * world, seed=config.seed, config=clip_config,
                              max_skip=SkipCurriculum(config, world))
    if config.stage == "finetune":
        from stcn.train.finetune import finetune_dataset

        return finetune_dataset(config, args.finetune_data, world)
    from stcn.data.training import build_stage_dataset

    return build_stage_dataset(config, args, world)
