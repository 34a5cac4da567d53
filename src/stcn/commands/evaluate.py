"""``stcn evaluate``: DAVIS J&F with the official toolkit's numbers, faster, with plots.

Heavy imports (numpy, OpenCV, matplotlib) happen in :func:`run`, so ``stcn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stcn.errors import DataError


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="score DAVIS results (J, F, J&F) like the official DAVIS 2017 toolkit",
        description=(
            "Score semi-supervised DAVIS results with the official DAVIS 2017 toolkit's numbers. Writes "
            "results.json, global_results-<split>.csv and per-sequence_results-<split>.csv (byte-identical to the "
            "toolkit's), per-sequence.png and per-frame/<seq>.png into --out, and prints the global table. "
            "Always recomputes; never reuses CSVs of an earlier run."
        ),
    )
    parser.add_argument("--gt", required=True, metavar="ROOT",
                        help="DAVIS root holding ImageSets/<year>/<split>.txt and Annotations/480p/")
    parser.add_argument("--results", required=True, metavar="DIR", help="results folder: <seq>/<frame>.png")
    parser.add_argument("--split", default="val", help="sequence list ImageSets/<year>/<split>.txt (default: val)")
    parser.add_argument("--year", default="2017", choices=("2016", "2017"),
                        help="2017: every object id (default); 2016: one object, every non-zero value")
    parser.add_argument("--out", metavar="DIR", help="where to write the outputs (default: the results folder)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes scoring frames (default: every core)")
    parser.add_argument("--no-plots", action="store_true", help="skip the two plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, no tables")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from stcn.eval.davis_eval import evaluate_davis, format_table

    if args.workers is not None and args.workers < 1:
        raise DataError(f"--workers must be at least 1, not {args.workers}")
    gt = Path(args.gt)
    results = Path(args.results)
    out = Path(args.out) if args.out else results
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} exists and is not a folder")

    result = evaluate_davis(
        gt, results, split=args.split, year=args.year, workers=args.workers, progress=not args.quiet
    )
    for note in result.warnings:
        print(f"stcn: warning: {note}", file=sys.stderr)

    try:
        paths = result.write(out)
        if not args.no_plots:
            from stcn.eval.plots import plot_per_frame, plot_per_sequence

            paths["per_sequence_png"] = plot_per_sequence(result, out / "per-sequence.png")
            plot_per_frame(result, out / "per-frame")
            paths["per_frame_dir"] = out / "per-frame"
    except OSError as exc:
        raise DataError(f"cannot write the outputs into {out}: {exc}") from None

    if not args.quiet:
        print(format_table(result))
        print()
        print("Wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
