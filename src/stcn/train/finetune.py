"""``stcn train --stage finetune``: the network preset from the loaded checkpoint, the sparse-aware
data of DIR, and J&F on its held-out videos.

The data is a :class:`stcn.data.training.TrainingClips` over :func:`stcn.data.finetune_set.finetune_sources`,
so an item is a pure function of (seed, index) as in the other stages: resume and ``torchrun`` see
exactly the data of one uninterrupted process.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from stcn.errors import UserError


def checkpoint_preset(path: str | os.PathLike) -> str:
    """The :data:`stcn.model.network.PRESETS` name whose configuration ``path`` records.

    A checkpoint that records no configuration (the paper's released files) is the paper's network
    (``stcn``), as :func:`stcn.load_model` reads it. Raises :class:`UserError` for a configuration
    that is no preset (the Trainer builds networks from presets).
    """
    from stcn.model.network import PRESETS
    from stcn.weights.io import checkpoint_config, read_checkpoint

    ckpt = read_checkpoint(path)
    config = checkpoint_config(ckpt).with_single_object(False)
    for name, preset in PRESETS.items():
        if preset.with_single_object(False) == config:
            return name
    raise UserError(f"{ckpt.path}: records a network configuration that is none of the presets "
                    f"({', '.join(PRESETS)}); fine-tuning needs one of them")


def resolve_model(load_network: str | os.PathLike, requested: str | None) -> str:
    """The preset to fine-tune: the checkpoint's; ``--model``, when given, must agree with it."""
    preset = checkpoint_preset(load_network)
    if requested is not None and requested != preset:
        raise UserError(f"--model {requested} does not match --load-network {load_network}, which holds the "
                        f"{preset} network (leave --model out: fine-tuning takes the checkpoint's)")
    return preset


def finetune_dataset(config, data, world: int = 1):
    """The training clips of ``data`` (a :class:`stcn.data.finetune_set.FinetuneSet`) at ``config.crop``."""
    from stcn.data.finetune_set import finetune_sources
    from stcn.data.training import SkipCurriculum, TrainingClips
    from stcn.data.video_training import VideoAugmentConfig

    sources = finetune_sources(data.train, VideoAugmentConfig(crop=int(config.crop)))
    return TrainingClips(sources, seed=config.seed, max_skip=SkipCurriculum(config, world))


# --------------------------------------------------------------------------------------------------
# Validation on held-out videos
# --------------------------------------------------------------------------------------------------
def _load_from_first_annotation(video) -> tuple[list[np.ndarray], dict[int, np.ndarray]]:
    """Frames from the first annotated one to the last annotated one (H, W, 3 uint8), and the masks
    (H, W uint8) by position in that list."""
    from stcn.io.frames import read_rgb as load_rgb
    from stcn.io.masks import load_label_png

    first, last = video.annotated[0], video.annotated[-1]
    frames = [load_rgb(video.image_dir / video.frames[t]) for t in range(first, last + 1)]
    masks = {t - first: load_label_png(video.mask_dir / (os.path.splitext(video.frames[t])[0] + ".png"))
             for t in video.annotated}
    return frames, masks


def score_video(model: torch.nn.Module, video, **engine_options) -> tuple[float, float]:
    """(J, F) of one held-out video: propagated from its first annotated frame, scored on its other
    annotated frames, objects being those of the first mask (means over frames, then objects)."""
    from stcn.eval.metrics import frame_scores
    from stcn.inference import EngineOptions, segment_video

    frames, masks = _load_from_first_annotation(video)
    first = masks[0]
    ids = [int(v) for v in np.unique(first) if v != 0]
    if not ids:
        return float("nan"), float("nan")
    options = EngineOptions(size=-1, precision="fp32").replace(**engine_options)  # native size, exact
    pred = np.stack([r.labels for r in segment_video(frames, {0: first}, model=model, options=options)])
    lut = np.zeros(256, dtype=np.uint8)  # object id -> 1..K, everything else 0
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint8)
    js, fs = [], []
    for t, gt in sorted(masks.items()):
        if t == 0:
            continue
        j, f = frame_scores(lut[gt], lut[pred[t]], len(ids))
        js.append(j)
        fs.append(f)
    with np.errstate(invalid="ignore"):  # an object absent from every scored frame gives NaN
        j = float(np.nanmean(np.nanmean(np.stack(js), axis=0)))
        f = float(np.nanmean(np.nanmean(np.stack(fs), axis=0)))
    return j, f


@torch.inference_mode()
def evaluate_held_out(model: torch.nn.Module, videos, **engine_options) -> dict[str, float]:
    """Mean J, F and J&F (in [0, 1]) of ``model`` over the held-out ``videos``."""
    was_training = model.training
    model.eval()
    try:
        scores = [score_video(model, v, **engine_options) for v in videos]
    finally:
        model.train(was_training)
    js = [j for j, _ in scores if not np.isnan(j)]
    fs = [f for _, f in scores if not np.isnan(f)]
    if not js:
        return {"J": float("nan"), "F": float("nan"), "J&F": float("nan"), "videos": 0}
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "videos": len(js)}


def format_scores(label: str, scores: dict[str, float]) -> str:
    return (f"{label}: J&F {100 * scores['J&F']:.1f} (J {100 * scores['J']:.1f}, F {100 * scores['F']:.1f}) "
            f"on {scores['videos']} held-out videos")


def require_data(args) -> Path:
    if getattr(args, "data", None) is None:
        raise UserError("stage finetune trains on your videos: pass --data DIR with DIR/JPEGImages/<video>/*.jpg "
                        "and DIR/Annotations/<video>/*.png (see docs/training.md)")
    return Path(args.data)


def prepare_finetune(args) -> tuple[str, object]:
    """For ``stcn train --stage finetune``: the network preset (the checkpoint's) and the scanned DIR.

    Fails early, with one line, on a bad DIR or checkpoint, before any network is built.
    """
    from stcn.data.finetune_set import describe, read_finetune_set
    from stcn.weights.registry import resolve

    data = read_finetune_set(require_data(args), val_fraction=args.val_fraction)
    model = resolve_model(resolve(args.load_network, option="--load-network"), args.model)
    if int(os.environ.get("RANK", 0)) == 0:
        print(describe(data) + f"; network preset {model} (from the checkpoint)")
    return model, data


def report_held_out(trainer, videos, before: dict[str, float] | None = None) -> dict[str, float]:
    """J&F of the trained network on the held-out ``videos``: printed, logged (TensorBoard ``val/*``,
    log.jsonl) and written to ``run_dir/held_out.json`` with the score before training when known."""
    import json

    from stcn.io.files import atomic_write

    after = evaluate_held_out(trainer.network, videos)
    print(format_scores("held-out after fine-tuning", after))
    trainer._log({f"val/{k}": v for k, v in after.items() if k != "videos"})
    record = {"after": after, "before": before, "videos": [v.name for v in videos], "iterations": trainer.iteration}
    atomic_write(trainer.run_dir / "held_out.json", json.dumps(record, indent=2).encode())
    return after
