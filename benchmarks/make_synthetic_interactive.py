#!/usr/bin/env python
"""Write a synthetic DAVIS-interactive set (DAVIS layout + Scribbles/ drawn by our robot from the
generator's ground truth) and, since trained S2M / FusionNet weights cannot be had offline, the
reference recipe's deterministic S2M and FusionNet weights (tests/interactive/recipe_interactive.py,
seed 0, verified against the reference checksums) for `stcn eval interactive`:

    PYTHONPATH=src python benchmarks/make_synthetic_interactive.py --root runs/interactive_set \
        --weights-dir runs/interactive_weights --seeds 0 1 2 --frames 24 --size 432x240
    stcn eval interactive --root runs/interactive_set --out runs/interactive_eval \
        --weights demo \
        --s2m runs/interactive_weights/s2m_seed0.pth --fusion runs/interactive_weights/fusion_seed0.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_recipe_weights(folder: Path) -> list[Path]:
    import torch

    sys.path.insert(0, str(ROOT / "tests" / "interactive"))
    import recipe_interactive  # noqa: E402 - the tests' recipe, not part of the package

    data = ROOT / "tests" / "data" / "interactive"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for net in ("s2m", "fusion"):
        sd = recipe_interactive.make_state_dict(net, 0, str(data / f"manifest_{net}.json"))
        bad = recipe_interactive.verify(sd, str(data / "weights_checksums.json"), f"{net}_seed0")
        if bad:
            raise SystemExit(f"the {net} recipe differs from the reference checksums: {bad[:3]}")
        path = folder / f"{net}_seed0.pth"
        torch.save(sd, path)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--weights-dir", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="432x240", help="WxH")
    parser.add_argument("--objects", type=int, default=2)
    args = parser.parse_args(argv)

    from stcn.interactive.synthetic import write_synthetic_interactive

    width, height = (int(x) for x in args.size.lower().split("x"))
    root = write_synthetic_interactive(args.root, args.seeds, num_frames=args.frames, height=height, width=width,
                                       num_objects=args.objects)
    print(f"wrote {root} ({len(args.seeds)} sequences, {args.frames} frames, {width}x{height})")
    if args.weights_dir:
        for path in write_recipe_weights(Path(args.weights_dir)):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
