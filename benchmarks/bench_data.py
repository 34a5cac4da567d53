"""Training-data throughput: clips/s of the static (stage 0, with its thin-plate-spline warps) and
video (stages 2/3: DAVIS + YouTube-VOS) pipelines at 384x384, through a DataLoader with 2 workers.

The data sets are small synthetic ones written to a temporary folder in the original layouts, at the
real data's sizes (static images 400x300, video frames 854x480), so the numbers include JPEG/PNG
decoding.

    .venv/bin/python benchmarks/bench_data.py [--clips 96] [--workers 2] [--crop 384]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stcn.data.static import StaticAugmentConfig, StaticClips, find_static_sets
from stcn.data.synthetic import generate_video, write_davis
from stcn.data.training import TrainingClips, davis_youtube_sources
from stcn.data.video_training import write_sequence_folders


def make_data(root: Path) -> None:
    # static: jpg + png pairs made from synthetic frames (one object's mask), DUTS-like size
    static = root / "static" / "DUTS-TR"
    static.mkdir(parents=True)
    for i in range(8):
        v = generate_video(100 + i, num_frames=1, height=300, width=400, num_objects=1)
        Image.fromarray(v.frames[0]).save(static / f"img_{i}.jpg", quality=90)
        Image.fromarray(((v.labels[0] == 1) * 255).astype(np.uint8)).save(static / f"img_{i}.png")
    kw = {"height": 480, "width": 854, "num_objects": 2, "speed": 1.0}
    write_davis(root / "DAVIS", {f"seq{i}": generate_video(i, num_frames=10, **kw) for i in range(2)}, split="train")
    yt = root / "YouTube" / "train_480p"
    write_sequence_folders(yt / "JPEGImages", yt / "Annotations",
                           {f"vid{i}": generate_video(10 + i, num_frames=20, appear_on_multiple_of=5, **kw)
                            for i in range(2)}, step=5)


def throughput(dataset, clips: int, workers: int, batch: int = 4) -> float:
    loader = DataLoader(dataset, batch_size=batch, sampler=range(clips + batch), num_workers=workers,
                        persistent_workers=False)
    it = iter(loader)
    next(it)  # worker start-up and first imports are not counted
    start = time.perf_counter()
    n = 0
    for b in it:
        n += b["rgb"].shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=96)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crop", type=int, default=384)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        make_data(root)
        print(f"synthetic data sets written in {time.perf_counter() - t:.1f} s")
        sets = find_static_sets(root / "static")
        cases = {
            "static (TPS p=1/3, the recipe)": TrainingClips(
                [(StaticClips(s, StaticAugmentConfig(crop=args.crop)), 1) for s in sets], seed=0),
            "static (TPS on every frame)": TrainingClips(
                [(StaticClips(s, StaticAugmentConfig(crop=args.crop, tps_p=1.0)), 1) for s in sets], seed=0),
            "video (DAVIS x5 + YouTube-VOS)": TrainingClips(
                davis_youtube_sources(root / "DAVIS", root / "YouTube", crop=args.crop), seed=0, max_skip=10),
        }
        print(f"{args.clips} clips of 3 frames at {args.crop}x{args.crop}, DataLoader(num_workers={args.workers}, "
              f"batch_size=4), torch threads per worker 1")
        for name, ds in cases.items():
            rate = throughput(ds, args.clips, args.workers)
            print(f"  {name:34s} {rate:6.1f} clips/s  ({rate * 3:6.1f} frames/s)")


if __name__ == "__main__":
    main()
