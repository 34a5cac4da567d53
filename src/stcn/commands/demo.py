"""``stcn demo``: segment a synthetic clip end to end and report what ran and how well.

Writes the clip (frames + first-frame annotation), runs the streaming engine, writes the masks and an
overlay video, and prints the settings, FPS and J&F against the generator's ground truth. By default
it runs the small model shipped in the package (trained on synthetic video only: docs/demo-model.md);
``--weights s012`` or a path runs another checkpoint.

The default clip's seed is below the training seeds' range (``SyntheticClipConfig.seed_offset``), so the
demo shows videos the model never saw: objects that occlude each other, leave the frame and come back.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from stcn.errors import UserError
from stcn.inference.device import add_device_argument
from stcn.inference.options import EngineOptions, add_engine_arguments

DEFAULT_OUT = "stcn-demo"
MAX_FRAMES = 1000  # the clip is generated in memory: a typo such as --frames 100000 is refused
MAX_SIDE = 4096


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="segment a synthetic clip end to end",
        description="Generate a synthetic clip, segment it from its first-frame mask, print FPS and J&F.",
    )
    p.add_argument("--weights", default=None,
                   help="a checkpoint path or a registry name (default: the built-in demo model; "
                        "`stcn weights list` shows the names)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: ./{DEFAULT_OUT})")
    p.add_argument("--frames", type=int, default=40, help="clip length (default: 40)")
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--width", type=int, default=432)
    p.add_argument("--objects", type=int, default=3, help="number of objects (default: 3)")
    p.add_argument("--seed", type=int, default=1234, help="synthetic clip seed (default: 1234)")
    p.add_argument("--no-overlay", dest="overlay", action="store_false",
                   help="do not write OUT/overlay.mp4")
    p.add_argument("--force", action="store_true",
                   help="write into a non-empty OUT (an earlier demo's files are replaced)")
    add_device_argument(p)
    # the demo clip is small: by default it is processed at its own size
    add_engine_arguments(p, EngineOptions(size=-1))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import stcn.guards as guards
    from stcn.data.synthetic import generate_video, write_frames
    from stcn.eval.metrics import clip_jf
    from stcn.inference import EngineOptions, resolve_device, segment_video
    from stcn.io.files import check_output_folder, staged_output
    from stcn.io.masks import save_label_png
    from stcn.weights import registry
    from stcn.weights.io import load_model

    if not 3 <= args.frames <= MAX_FRAMES:
        raise UserError(f"--frames must be 3..{MAX_FRAMES}, not {args.frames}")
    guards.check_object_count(args.objects)
    for option, value in (("--height", args.height), ("--width", args.width)):
        if not 32 <= value <= MAX_SIDE:
            raise UserError(f"{option} must be 32..{MAX_SIDE}, not {value}")
    out = Path(args.out)
    check_output_folder(out)
    options = EngineOptions.from_args(args)
    guards.check_frame_fits(args.width, args.height, options.size, args.objects, where="the demo's frames")
    weights = registry.resolve(args.weights, default=registry.DEMO)
    device = resolve_device(args.device)
    # staged: nothing is half-written, and an earlier demo is replaced only with --force
    with staged_output(out, force=args.force) as stage:
        print(f"stcn demo: writing into {out.resolve()}", flush=True)
        model = load_model(weights, device=device)
        video = generate_video(args.seed, num_frames=args.frames, height=args.height, width=args.width,
                               num_objects=args.objects, allow_exit=True)
        write_frames(stage / "frames", video)
        save_label_png(stage / "first_frame_mask.png", video.labels[0])
        (stage / "masks").mkdir()
        predictions, seconds, core = [], 0.0, None
        for r in segment_video(video.frames, {0: video.labels[0]}, model=model, options=options):
            save_label_png(stage / "masks" / f"{r.name}.png", r.labels)
            predictions.append(r.labels)
            seconds, core = seconds + r.seconds, r.engine
        if args.overlay:
            _write_overlay(stage / "overlay.mp4", video.frames, predictions)
    masks_dir = out / "masks"
    overlay = out / "overlay.mp4" if args.overlay else None
    fps = len(predictions) / seconds if seconds > 0 else float("inf")
    j, f, jf = clip_jf(video.labels, np.stack(predictions), list(video.object_ids))
    print(f"weights:    {weights}")
    print(f"device:     {device}")
    print(f"clip:       {video.num_frames} frames, {video.height}x{video.width}, "
          f"{len(video.object_ids)} objects (seed {args.seed}) -> {out / 'frames'}")
    print(f"settings:   top-k {core.memory.top_k}, memory every {core.mem_every} frames, "
          f"precision {core.precision}, size {options.size}")
    print("engine:     " + options.describe(core.precision))
    print(f"masks:      {masks_dir}")
    if overlay is not None:
        print(f"overlay:    {overlay}")
    print(f"speed:      {fps:.2f} FPS (processing only)")
    print(f"accuracy:   J&F {100 * jf:.1f} (J {100 * j:.1f}, F {100 * f:.1f}) against the synthetic ground truth")
    return 0


def _write_overlay(path: Path, frames, labels) -> Path:
    """Frames with the predicted masks blended in, as a video (inside the staged output folder)."""
    from stcn.io.writers import OverlayWriter

    height, width = labels[0].shape
    with OverlayWriter(path, width=width, height=height, fps=10) as writer:
        for frame, label in zip(frames, labels):
            writer.write(np.ascontiguousarray(frame), label)
    return path
