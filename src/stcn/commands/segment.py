"""``stcn segment``: segment a video (frame folder or video file) from one or more annotated masks.

    stcn segment frames/ --mask first.png --out masks/
    stcn segment clip.mp4 --mask annotations/ --out masks/ --overlay clip_masks.mp4 --save-probs

Streaming: frames are decoded on a background thread and outputs written on background threads, each
through a small bounded queue, so memory does not grow with the video's length (only STCN's memory
frames do).  Outputs are written into a hidden folder next to ``--out`` and moved into place at the
end: a failed or interrupted run leaves nothing behind.  See docs/segment.md.

The library logic is :func:`stcn.inference.segment.segment` (which drives :func:`stcn.segment_video`);
this module only declares and reads the flags.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stcn.inference.device import add_device_argument
from stcn.inference.options import EngineOptions, add_engine_arguments


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment the objects of a video from annotated masks",
        description=(
            "Propagate object masks through a video with STCN. INPUT is a folder of frames (jpg/png, sorted "
            "by name) or a video file (mp4/mov/avi/webm/mkv). --mask is one PNG for the first frame, or a "
            "folder of PNGs named after frames (a mask named after frame X applies to frame X and may bring "
            "new objects, YouTube-VOS style; a video's frames are named 00000, 00001, ...). Masks are palette "
            "or greyscale PNGs whose pixel values are object ids (0 = background). Writes one palette PNG per "
            "frame into --out, named after the frame, with the mask's palette and ids."
        ),
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="frame folder or video file")
    parser.add_argument("--mask", "-m", type=Path, required=True, metavar="M",
                        help="first-frame mask PNG, or a folder of mask PNGs named after frames")
    parser.add_argument("--out", "-o", type=Path, required=True, metavar="DIR",
                        help="output folder (created; must not exist or be empty unless --force)")
    parser.add_argument("--weights", "-w", metavar="W",
                        help="checkpoint (.pth/.safetensors) or a registry name such as demo; "
                             "default: the downloaded s012 weights")
    add_engine_arguments(parser, size_help="process frames with this shorter side (default 480, like the "
                         "original's YouTube-VOS and generic evaluation); -1: native size. Outputs keep the input size")
    parser.add_argument("--overlay", type=Path, metavar="VIDEO",
                        help="also write a video with the masks blended over the frames (.mp4/.mov/.mkv/.avi)")
    parser.add_argument("--fps", type=float, default=None,
                        help="overlay frame rate (default: the input video's, 24 for a frame folder)")
    parser.add_argument("--save-probs", action="store_true",
                        help="also write DIR/probs/<frame>.npz: probs ((K+1)xHxW float32) and object_ids")
    parser.add_argument("--direction", choices=("both", "forward"), default="both",
                        help="both (default): propagate forwards and backwards from the annotated frames, the "
                             "nearer annotation deciding a frame between two; forward: forwards only, frames "
                             "before the first annotation are background")
    parser.add_argument("--resume", action="store_true",
                        help="make the run resumable, or continue the interrupted one of the same command: progress "
                             "and a checkpoint are kept in the hidden folder .DIR.stcn-resume until the run completes")
    parser.add_argument("--checkpoint-every", type=int, default=25, metavar="N",
                        help="with --resume: save a checkpoint every N written frames (and on Ctrl-C; default 25)")
    parser.add_argument("--max-memory", metavar="BYTES",
                        help="keep the process's peak memory under this (e.g. 2GB, 1.5G, 800MB) by choosing the "
                             "memory-frame bound and the work memory (and with --auto-size the processing size); "
                             "says what it chose, fails at the start if it cannot be met")
    parser.add_argument("--auto-size", action="store_true",
                        help="with --max-memory: lower the processing size if the budget needs it")
    add_device_argument(parser)
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty DIR (replacing same-named files) and replace --overlay")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    def warn(message: str) -> None:
        print(f"stcn: warning: {message}", file=sys.stderr)

    def info(line: str) -> None:
        print(f"stcn: {line}", file=sys.stderr)

    from stcn.inference.segment import segment

    result = segment(
        args.input, args.mask, args.out, weights=args.weights, options=EngineOptions.from_args(args),
        overlay=args.overlay, fps=args.fps, save_probs=args.save_probs, device=args.device, force=args.force,
        progress=not args.quiet, warn=warn, direction=args.direction,
        resume=args.resume, checkpoint_every=args.checkpoint_every, max_memory_bytes=args.max_memory,
        auto_size=args.auto_size, info_line=None if args.quiet else info,
    )
    if not args.quiet:
        print(result.summary())
    return 0
