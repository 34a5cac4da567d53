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

DEFAULT_OUT = "stcn-demo"


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
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def demo_jf(gt: np.ndarray, pred: np.ndarray, object_ids: list[int]) -> tuple[float, float, float]:
    """DAVIS-protocol J, F and J&F (first and last frames excluded) of (T, H, W) label maps."""
    from stcn.eval.metrics import frame_scores

    dense_gt = np.zeros_like(gt)
    dense_pred = np.zeros_like(pred)
    for i, oid in enumerate(object_ids, start=1):
        dense_gt[gt == oid] = i
        dense_pred[pred == oid] = i
    scored = range(1, len(gt) - 1) if len(gt) > 2 else range(len(gt))
    js, fs = zip(*(frame_scores(dense_gt[t], dense_pred[t], len(object_ids)) for t in scored))
    j = float(np.nanmean(np.stack(js), axis=0).mean())
    f = float(np.nanmean(np.stack(fs), axis=0).mean())
    return j, f, (j + f) / 2


def run(args: argparse.Namespace) -> int:
    from stcn.data.palette import save_label_png
    from stcn.data.synthetic import generate_video, write_frames
    from stcn.inference import segment_clip
    from stcn.weights import registry
    from stcn.weights.io import load_model

    weights = registry.resolve(args.weights, default=registry.DEMO)
    model = load_model(weights, device=args.device)
    if args.frames < 3 or args.objects < 1 or min(args.height, args.width) < 32:
        raise UserError("--frames must be >= 3, --objects >= 1, --height and --width >= 32")
    video = generate_video(args.seed, num_frames=args.frames, height=args.height, width=args.width,
                           num_objects=args.objects, allow_exit=True)
    out = Path(args.out)
    write_frames(out / "frames", video)
    save_label_png(out / "first_frame_mask.png", video.labels[0])

    masks_dir = out / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    result = segment_clip(model, video.frames, video.labels[0],
                          on_frame=lambda t, labels: save_label_png(masks_dir / f"{t:05d}.png", labels))
    core, predictions = result.engine, list(result.labels)
    j, f, jf = demo_jf(video.labels, np.stack(predictions), list(video.object_ids))
    overlay = None
    if args.overlay:
        overlay = _write_overlay(out / "overlay.mp4", video.frames, predictions)
    print(f"weights:    {weights}")
    print(f"device:     {args.device}")
    print(f"clip:       {video.num_frames} frames, {video.height}x{video.width}, "
          f"{len(video.object_ids)} objects (seed {args.seed}) -> {out / 'frames'}")
    print(f"settings:   top-k {core.memory.top_k}, memory every {core.mem_every} frames")
    print(f"masks:      {masks_dir}")
    if overlay is not None:
        print(f"overlay:    {overlay}")
    print(f"speed:      {result.fps:.2f} FPS (processing only)")
    print(f"accuracy:   J&F {100 * jf:.1f} (J {100 * j:.1f}, F {100 * f:.1f}) against the synthetic ground truth")
    return 0


def _write_overlay(path: Path, frames, labels) -> Path:
    """Frames with the predicted masks blended in, as a video (written aside, then renamed)."""
    from stcn.inference.io import OverlayWriter

    height, width = labels[0].shape
    with OverlayWriter(path, width=width, height=height, fps=10, atomic=True) as writer:
        for frame, label in zip(frames, labels):
            writer.write(np.ascontiguousarray(frame), label)
    return path
