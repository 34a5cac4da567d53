"""Fine-tune the demo model on a shifted synthetic domain (docs/training.md, "Fine-tune on your own
videos"): held-out J&F before and after, wall time.

    python benchmarks/finetune_shifted_domain.py --out /tmp/ft --iterations 40 --train-videos 5 --val-videos 3
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--train-videos", type=int, default=5)
    p.add_argument("--val-videos", type=int, default=3)
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--train-bn", action="store_true")
    args = p.parse_args()

    import torch

    from stcn.cli import main as stcn_main
    from stcn.data.shifted_domain import write_sparse_set

    torch.set_num_threads(2)
    shutil.rmtree(args.out, ignore_errors=True)
    n = args.train_videos + args.val_videos
    data = write_sparse_set(args.out / "data", range(args.first_seed, args.first_seed + n), num_frames=args.frames,
                            height=args.height, width=args.width)
    fraction = args.val_videos / n
    cmd = ["train", "--stage", "finetune", "--data", str(data), "--load-network", "demo", "--val-fraction",
           f"{fraction:.4f}", "--run-dir", str(args.out / "run"), "--iterations", str(args.iterations),
           "--crop", str(args.crop), "--batch-size", str(args.batch_size)]
    cmd += ["--lr", str(args.lr)]
    if args.train_bn:
        import stcn.train.presets as presets

        presets.STAGES["finetune"] = presets.STAGES["finetune"].override(train_bn=True)
    start = time.perf_counter()
    assert stcn_main(cmd) == 0
    wall = time.perf_counter() - start
    record = json.loads((args.out / "run" / "held_out.json").read_text())
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or platform.machine())
    print(json.dumps({"before": record["before"]["J&F"], "after": record["after"]["J&F"], "wall_s": round(wall, 1),
                      "cpu": cpu, "threads": torch.get_num_threads(), "cmd": " ".join(cmd)}))


if __name__ == "__main__":
    main()
