"""``stcn train``: the paper's four stages and a synthetic stage, resumable, single- or multi-process."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from stcn.errors import UserError
from stcn.inference.device import add_device_argument
from stcn.train.datasets import GENERATED_STAGES, MIX_FRACTIONS, build_dataset

STAGE_CHOICES = ("0", "1", "2", "3", "synthetic", "real-static", "real-video", "finetune")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train STCN (stages 0-3 of the paper, or on synthetic video)",
        description="Train STCN. Every run ends by writing RUN_DIR/final.safetensors (loadable by stcn.load_model).",
    )
    p.add_argument("--stage", choices=STAGE_CHOICES, required=True)
    p.add_argument("--run-dir", required=True, type=Path)
    p.add_argument("--iterations", type=int, help="stop after this many iterations (default: the schedule's length)")
    p.add_argument("--schedule-length", type=int,
                   help="rescale the stage's lr steps, bootstrap warm-up and skip curriculum to this many iterations")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--crop", type=int, help="training crop size in pixels")
    p.add_argument("--clip-frames", type=int, metavar="T",
                   help="synthetic / real-video stages: frames per training clip (default 3, the paper's); each "
                        "frame is segmented from all earlier ones, so longer clips train against drift")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--model", choices=("stcn", "small"), help="network configuration (default: the stage's)")
    p.add_argument("--load-network", help="initial weights: a path or a registry name such as demo (a stage-0 "
                                          "checkpoint is widened for stages 1-3)")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest checkpoint")
    add_device_argument(p)
    p.add_argument("--num-workers", type=int, default=0, help="data-loading worker processes")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast instead of float16 (CUDA)")
    p.add_argument("--no-pretrained", action="store_true", help="do not load ImageNet backbone weights")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms; on CPU also PyTorch's native convolutions (see docs/fidelity.md)")
    p.add_argument("--save-every", type=int)
    p.add_argument("--log-every", type=int, help="log losses every N iterations (default: the stage's)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="keep BatchNorm statistics frozen (the paper's stages do; the synthetic stage trains them)")
    p.add_argument("--validate", type=int, default=0, metavar="N",
                   help="synthetic stage: at the end, report J&F on N held-out synthetic videos")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="finetune stage: your videos, DIR/JPEGImages/<video>/*.jpg and DIR/Annotations/<video>/*.png "
                        "(masks of some frames suffice)")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="finetune stage: hold out this fraction of DIR's videos and report J&F on them")
    p.add_argument("--plain-fraction", type=float, metavar="F",
                   help="real-video stage: share of the videos that stay plain synthetic (default 0)")
    p.add_argument("--lookalike-fraction", type=float, metavar="F",
                   help="real-video stage: share of the real-looking videos whose objects are one cutout (default 0)")
    p.add_argument("--entering-fraction", type=float, metavar="F",
                   help="real-video stage: share of the real-looking videos in which an unlabelled look-alike "
                        "enters after frame 0 and walks beside an object (default 0)")
    p.add_argument("--small-fraction", type=float, metavar="F",
                   help="real-video stage: share of the real-looking videos whose objects are small, 0.2-0.45 "
                        "of the usual size, with a distractor (default 0)")
    p.add_argument("--occluded-fraction", type=float, metavar="F",
                   help="real-video stage: share of the real-looking videos with static occluders (a pole, a sign, "
                        "a railing) that an object passes behind (default 0)")
    for name in ("static-root", "davis-root", "youtube-root", "bl30k-root"):
        p.add_argument(f"--{name}", type=Path, help=f"dataset root ({name.split('-')[0]})")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from stcn.train.presets import stage_config
    from stcn.train.trainer import Trainer

    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if args.deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.mkldnn.enabled = False
    model = args.model
    if args.stage == "finetune":
        from stcn.train.finetune import prepare_finetune

        model, args.finetune_data = prepare_finetune(args)
    config = stage_config(
        args.stage, schedule_length=args.schedule_length, iterations=args.iterations, batch_size=args.batch_size,
        crop=args.crop, lr=args.lr, clip_frames=args.clip_frames,
        seed=args.seed, model=model, save_every=args.save_every, log_every=args.log_every,
        amp=False if args.no_amp else None, bf16=True if args.bf16 else None,
        pretrained_backbones=False if args.no_pretrained else None,
        train_bn=False if args.freeze_bn else None,
    )
    if args.clip_frames is not None and args.clip_frames != 3:
        if args.stage not in GENERATED_STAGES:
            raise UserError(f"--clip-frames applies to --stage {' / '.join(GENERATED_STAGES)} only (the paper's "
                            f"data sets make 3-frame clips)")
        if not 2 <= args.clip_frames <= 16:
            raise UserError(f"--clip-frames must lie in 2..16, got {args.clip_frames}")
    mix = {name: value for name in MIX_FRACTIONS
           if (value := getattr(args, name, None)) is not None}
    if mix:
        flags = " / ".join("--" + name.replace("_", "-") for name in mix)
        if args.stage != "real-video":
            raise UserError(f"{flags} {'applies' if len(mix) == 1 else 'apply'} to --stage real-video only")
        if any(not 0.0 <= v <= 1.0 for v in mix.values()):
            raise UserError(f"{flags} must lie in [0, 1]")
        config = config.override(datasets={**config.datasets, **mix})
    if args.resume:
        from stcn.train.checkpoints import resumed_config

        config = resumed_config(config, args.run_dir)
    if args.run_dir.exists() and not args.resume and (args.run_dir / "checkpoints").exists():
        raise UserError(f"{args.run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    dataset = build_dataset(config, args, world)
    from stcn.inference.device import resolve_device

    # in a multi-process run a bare cuda is this process's GPU, cuda:LOCAL_RANK
    device = resolve_device(args.device, local_rank=int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else None)
    if world > 1 and device.type == "cuda":
        torch.cuda.set_device(device)
    load_network = None
    if args.load_network or args.stage == "finetune":
        from stcn.weights.registry import resolve

        load_network = resolve(args.load_network, option="--load-network")
    trainer = Trainer(config, dataset, args.run_dir, device=device, rank=rank, world=world,
                      num_workers=args.num_workers, load_network=load_network)
    before = None
    if rank == 0 and args.stage == "finetune" and args.finetune_data.val and not args.resume:
        from stcn.train.finetune import evaluate_held_out, format_scores

        before = evaluate_held_out(trainer.network, args.finetune_data.val)
        print(format_scores("held-out before fine-tuning", before))
    if world > 1:
        from stcn.train.distributed import wrap_distributed

        wrap_distributed(trainer)
    finished = False
    try:
        final = trainer.fit(resume=args.resume)
        finished = True
    except KeyboardInterrupt as exc:
        print(f"stcn: {exc or 'interrupted'}")
        return 130
    finally:
        if world > 1:
            from stcn.train.distributed import shutdown

            shutdown(barrier=finished)
    if rank == 0:
        print(f"wrote {final}")
        if args.validate and config.stage == "synthetic":
            from stcn.train.validate import evaluate_synthetic, synthetic_validation_videos

            scores = evaluate_synthetic(trainer.network, synthetic_validation_videos(args.validate))
            print(f"validation: J&F {100 * scores['J&F']:.1f} (J {100 * scores['J']:.1f}, "
                  f"F {100 * scores['F']:.1f}) on {scores['videos']} held-out synthetic videos")
        if args.stage == "finetune" and args.finetune_data.val:
            from stcn.train.finetune import report_held_out

            report_held_out(trainer, args.finetune_data.val, before)
    return 0
