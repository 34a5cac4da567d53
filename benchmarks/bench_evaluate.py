"""Throughput of ``stcn.eval.evaluate_davis`` on a DAVIS-2017-val-shaped synthetic set.

The set: 6 sequences x 70 frames at 854x480 with 2, 3, 2, 3, 2, 3 objects (moving, resizing
ellipses), written as palette PNGs to a temporary folder; the results are the GT objects dilated or
eroded by 0-3 px, shifted by up to 3 px, with noise on a band around the boundary. Each timed run
is a full evaluation, PNG reading included (1020 scored frame-objects, 828 PNGs read). Prints
frame-objects/s with one worker (one core) and with every core.

    python benchmarks/bench_evaluate.py [--repeats 3] [--sequences 6] [--frames 70]

The official toolkit scores a median 66 (fastest 84) frame-objects/s on one core of the project's
2-core VM (shared/reference/metrics/throughput.json).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from stcn.eval.davis_eval import evaluate_davis

TOOLKIT_MEDIAN = 66.4  # frame-objects/s, official toolkit, one core (throughput.json)
TOOLKIT_FASTEST = 84.4

PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0, 0, 0] * 251


def _save(labels: np.ndarray, path: Path) -> None:
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette(PALETTE)
    im.save(path)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(rx), int(ry)), angle, 0, 360, 1, thickness=-1)
    return mask.astype(bool)


def _perturb(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = mask.astype(np.uint8)
    k = int(rng.integers(0, 4))
    if k:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        out = cv2.dilate(out, kernel) if rng.random() < 0.5 else cv2.erode(out, kernel)
    dy, dx = rng.integers(-3, 4, size=2)
    out = np.roll(out, (int(dy), int(dx)), axis=(0, 1))
    band = cv2.dilate(out, np.ones((5, 5), np.uint8)) != cv2.erode(out, np.ones((5, 5), np.uint8))
    flip = band & (rng.random(out.shape) < 0.25)
    return (out.astype(bool) ^ flip)


def make_dataset(root: Path, n_seq: int, n_frames: int, seed: int = 0) -> tuple[Path, Path, int]:
    """Write the GT and results; return (gt_root, results_dir, scored frame-objects)."""
    rng = np.random.default_rng(seed)
    h, w = 480, 854
    gt_root = root / "DAVIS"
    res_root = root / "results"
    names = [f"seq{i:02d}" for i in range(n_seq)]
    (gt_root / "ImageSets" / "2017").mkdir(parents=True)
    (gt_root / "ImageSets" / "2017" / "val.txt").write_text("".join(n + "\n" for n in names))
    frame_objects = 0
    for i, name in enumerate(names):
        n_obj = 2 + i % 2
        frame_objects += n_obj * (n_frames - 2)
        (gt_root / "Annotations" / "480p" / name).mkdir(parents=True)
        (res_root / name).mkdir(parents=True)
        start = rng.uniform([80, 120, 30, 40, 0], [400, 730, 90, 140, 180], size=(n_obj, 5))
        speed = rng.uniform([-2, -3, -0.3, -0.5, -1], [2, 3, 0.3, 0.5, 1], size=(n_obj, 5))
        for t in range(n_frames):
            gt = np.zeros((h, w), np.uint8)
            res = np.zeros((h, w), np.uint8)
            for k in range(n_obj):
                cy, cx, ry, rx, ang = start[k] + t * speed[k]
                m = _ellipse(h, w, cy, cx, max(ry, 8), max(rx, 8), ang)
                gt[m] = k + 1
                res[_perturb(m, rng)] = k + 1
            _save(gt, gt_root / "Annotations" / "480p" / name / f"{t:05d}.png")
            _save(res, res_root / name / f"{t:05d}.png")
    return gt_root, res_root, frame_objects


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=6)
    parser.add_argument("--frames", type=int, default=70)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="the 'all cores' setting")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_evaluate_") as tmp:
        t0 = time.perf_counter()
        gt_root, res_root, n_fo = make_dataset(Path(tmp), args.sequences, args.frames)
        print(f"dataset: {args.sequences} sequences x {args.frames} frames at 854x480, {n_fo} scored "
              f"frame-objects (written in {time.perf_counter() - t0:.1f} s)")
        rows = []
        reference = None
        for workers in sorted({1, args.workers}):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                result = evaluate_davis(gt_root, res_root, workers=workers, progress=False)
                times.append(time.perf_counter() - t)
                if reference is None:
                    reference = result.global_csv()
                assert result.global_csv() == reference
            rows.append((workers, statistics.median(times), min(times)))
        print(f"global J&F-Mean on this set: {result.global_results['J&F-Mean']:.3f}")
        print()
        print("| workers | median s | fastest s | frame-objects/s (median) | (fastest) | vs toolkit median 66/s |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for workers, med, best in rows:
            print(f"| {workers} | {med:.2f} | {best:.2f} | {n_fo / med:.0f} | {n_fo / best:.0f} | "
                  f"{n_fo / med / TOOLKIT_MEDIAN:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
