"""``stcn eval {davis,youtube,generic,interactive}``: segment a benchmark set (resumable, multi-process
with torchrun), or run the DAVIS-interactive benchmark (:mod:`stcn.interactive.benchmark`).

Heavy imports happen in the ``run_*`` functions, so ``stcn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stcn.inference.device import add_device_argument
from stcn.inference.options import EngineOptions, add_engine_arguments, add_precision_argument

DEFAULTS_NOTE = "Defaults are the paper's settings: top-k 20, a memory frame every 5 frames"


def _common(p: argparse.ArgumentParser, *, size: int) -> None:
    p.add_argument("--root", required=True, metavar="DIR", help="dataset root (see the description)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (resumes what is there)")
    p.add_argument("--weights", metavar="PATH",
                   help="checkpoint (.pth or .safetensors) or a registry name; default: the cached s012 weights "
                        "(`stcn weights download s012`)")
    # precision auto, as segment/demo/ui; `--precision fp32` is exact (the paper's numbers). Each
    # torchrun process takes its LOCAL_RANK GPU
    add_engine_arguments(p, EngineOptions(size=size))
    p.set_defaults(mem_every=None)  # filled in per set (DAVIS test-dev: 3)
    add_device_argument(p)
    p.add_argument("--overwrite", action="store_true", help="recompute videos whose outputs are complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval",
        help="segment DAVIS, YouTube-VOS or generic benchmark sets; DAVIS-interactive",
        description=(
            "Segment a whole benchmark set with the paper's settings. Videos whose outputs are complete are "
            "skipped (resume); each video is written to a temporary folder and moved into place when done. "
            "Launched with `torchrun --nproc_per_node N -m stcn.cli eval ...`, process r takes videos r, r+N, ..."
        ),
    )
    sub = parser.add_subparsers(dest="eval_set", metavar="SET")

    d = sub.add_parser(
        "davis", help="DAVIS 2016 / 2017 (val, test-dev)",
        description=(
            "Layout: ROOT/JPEGImages/480p/<seq>/, ROOT/Annotations/480p/<seq>/ (the first frame's mask is used), "
            "ROOT/ImageSets/<year>/<split>.txt (ROOT may also be the folder holding trainval/ or test-dev/). "
            "Writes OUT/<seq>/<frame>.png: palette PNGs of the object ids (2017), or 0/255 greyscale PNGs of the "
            "union of all objects (2016). " + DEFAULTS_NOTE + " (3 on test-dev), native 480p."
        ),
    )
    d.add_argument("--year", default="2017", choices=("2016", "2017"))
    d.add_argument("--split", default="val", help="sequence list ImageSets/<year>/<split>.txt (default: val)")
    _common(d, size=-1)
    d.add_argument("--evaluate", action="store_true",
                   help="score the results (J&F, like the official DAVIS toolkit) and write the CSVs into OUT")
    d.set_defaults(func=run_davis)

    y = sub.add_parser(
        "youtube", help="YouTube-VOS 2018 / 2019 (valid)",
        description=(
            "Layout: ROOT/<split>/meta.json, ROOT/<split>/Annotations/<vid>/, "
            "ROOT/all_frames/<split>_all_frames/JPEGImages/<vid>/. Writes OUT/Annotations/<vid>/<frame>.png for "
            "the frames meta.json lists (every frame from the first annotation with --all-frames) and, once all "
            "videos are done, OUT/youtube-vos-<year>-<split>.zip for the evaluation server. "
            + DEFAULTS_NOTE + ", shorter side 480."
        ),
    )
    y.add_argument("--year", default="2019", choices=("2018", "2019"))
    y.add_argument("--split", default="valid", help="split folder (default: valid)")
    y.add_argument("--all-frames", action="store_true", help="write every frame, not only those meta.json lists")
    _common(y, size=480)
    y.set_defaults(func=run_youtube)

    g = sub.add_parser(
        "generic", help="any JPEGImages/ + Annotations/ folders",
        description=(
            "Layout: ROOT/JPEGImages/<seq>/<frame>.jpg|png and ROOT/Annotations/<seq>/<frame>.png: masks on any "
            "frames (named like their frames), objects may first appear anywhere. Writes OUT/<seq>/<frame>.png "
            "for every frame. " + DEFAULTS_NOTE + ", shorter side 480."
        ),
    )
    _common(g, size=480)
    g.set_defaults(func=run_generic)

    _register_interactive(sub)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    return parser


def _kwargs(args: argparse.Namespace, default_mem_every: int) -> dict:
    mem_every = args.mem_every if args.mem_every is not None else default_mem_every
    return dict(weights=args.weights, options=EngineOptions.from_args(args, mem_every=mem_every),
                device=args.device, progress=not args.quiet, overwrite=args.overwrite)


def _report(summary, title: str) -> None:
    from stcn.eval.runners import format_summary

    print(format_summary(summary, title))
    if not summary.complete:
        print(f"(other processes are still writing videos into {summary.out_dir}; the last one to finish "
              "completes the run)", file=sys.stderr)


def run_davis(args: argparse.Namespace) -> int:
    from stcn.eval.runners import run_davis as run

    summary = run(args.root, args.out, year=args.year, split=args.split, evaluate=args.evaluate,
                  **_kwargs(args, 3 if args.split == "test-dev" else 5))
    _report(summary, f"DAVIS {args.year} {args.split} -> {summary.out_dir}")
    return 0


def run_youtube(args: argparse.Namespace) -> int:
    from stcn.eval.runners import run_youtube as run

    summary = run(args.root, args.out, year=args.year, split=args.split, all_frames=args.all_frames,
                  **_kwargs(args, 5))
    _report(summary, f"YouTube-VOS {args.year} {args.split} -> {summary.out_dir}")
    if summary.zip_path is not None:
        print(f"Submission zip: {summary.zip_path}")
    return 0


def run_generic(args: argparse.Namespace) -> int:
    from stcn.eval.runners import run_generic as run

    summary = run(args.root, args.out, **_kwargs(args, 5))
    _report(summary, f"generic {args.root} -> {summary.out_dir}")
    return 0


def _register_interactive(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "interactive", help="DAVIS-interactive (MiVOS: S2M + STCN + fusion, our local session and robot)",
        description=(
            "DAVIS-interactive benchmark, local session. Layout: ROOT/ImageSets/2017/val.txt, "
            "ROOT/JPEGImages/480p/<seq>/, ROOT/Annotations/480p/<seq>/ (every frame), ROOT/Scribbles/<seq>/NNN.json. "
            "MiVOS's driver: S2M on every scribble, propagation + fusion at interactions 3, 6 and 8. Writes "
            "OUT/report.csv, OUT/summary.json and OUT/jf_time.png; prints AUC, J&F@60s and J&F after each "
            "interaction. Timings are this machine's model time."
        ),
    )
    p.add_argument("--root", required=True, metavar="DIR", help="DAVIS 2017 root (see the description)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--weights", metavar="W",
                   help="STCN propagation checkpoint, a path or a registry name (default: the cached s012)")
    p.add_argument("--s2m", metavar="S", help="S2M checkpoint (default: the cached `s2m`)")
    p.add_argument("--fusion", metavar="F", help="FusionNet checkpoint (default: the cached `fusion`)")
    p.add_argument("--max-interactions", type=int, default=8, metavar="N", help="interactions per sample (default: 8)")
    p.add_argument("--time-per-object", type=float, default=30, metavar="S",
                   help="seconds per object and interaction; a sample may take N x S x objects (default: 30)")
    p.add_argument("--sequences", nargs="+", metavar="SEQ", help="only these sequences of the list")
    add_precision_argument(p)  # the propagation network's; S2M and fusion are small and stay fp32
    add_device_argument(p)
    p.set_defaults(func=run_interactive)
    return p


def run_interactive(args: argparse.Namespace) -> int:
    from stcn.interactive.benchmark import format_result
    from stcn.interactive.benchmark import run_interactive as run

    result = run(args.root, args.out, weights=args.weights, s2m=args.s2m, fusion=args.fusion,
                 max_interactions=args.max_interactions, time_per_object=args.time_per_object,
                 device=args.device, sequences=args.sequences, precision=args.precision)
    print(format_result(result))
    print(f"wrote {Path(args.out) / 'report.csv'}, summary.json, jf_time.png")
    return 0
