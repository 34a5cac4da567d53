#!/usr/bin/env python
"""Bounded memory vs unbounded memory in J&F, on long synthetic videos where objects leave and re-enter.

    PYTHONPATH=src python benchmarks/bench_memory_policies.py --frames 600 --videos 3 --max-memory-frames 8

Each video (stcn.data.synthetic.generate_video, seeds 500.., 2-3 objects, exits and re-entries,
occlusions; seeds far from the training range) is segmented from its first-frame mask with the built-in
demo model (or --weights) three times: unbounded memory (the paper's rule: every 5th frame kept), and
bounded to --max-memory-frames with the ``oldest`` and ``least_used`` policies. Prints J&F (DAVIS
protocol) per video and policy, FPS and the memory size at the end. Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None,
                        help="checkpoint path or registry name (default: the built-in demo model)")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=500)
    parser.add_argument("--size", default="432x240", help="WxH")
    parser.add_argument("--max-memory-frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from stcn.data.synthetic import generate_video
    from stcn.eval.metrics import clip_jf
    from stcn.inference import EngineOptions, segment_video
    from stcn.weights import registry
    from stcn.weights.io import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    weights = registry.resolve(args.weights, default=registry.DEMO)
    model = load_model(weights)
    width, height = (int(x) for x in args.size.lower().split("x"))
    runs = {"unbounded": {"max_memory_frames": 0},
            "oldest": {"max_memory_frames": args.max_memory_frames, "memory_policy": "oldest"},
            "least_used": {"max_memory_frames": args.max_memory_frames, "memory_policy": "least_used"}}
    results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
    print(f"# weights: {weights}; {args.videos} videos x {args.frames} frames at {width}x{height}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    for i in range(args.videos):
        seed = args.first_seed + i
        video = generate_video(seed, num_frames=args.frames, height=height, width=width,
                               num_objects=2 + i % 2, allow_exit=True, distractor=i % 2 == 1)
        for name, options in runs.items():
            run = list(segment_video(video.frames, {0: video.labels[0]}, model=model,
                                     options=EngineOptions(size=-1, precision="fp32", **options)))
            seconds = sum(r.seconds for r in run)
            fps, size = len(run) / seconds, len(run[-1].engine.memory)
            jf = clip_jf(video.labels, np.stack([r.labels for r in run]), list(video.object_ids))[2]
            results[name].append((jf, fps, size))
            print(f"seed {seed} ({len(video.object_ids)} objects): {name:10s} J&F {100 * jf:.2f}  "
                  f"{fps:.2f} FPS  {size} memory frames", flush=True)
    print("\n| memory | " + " | ".join(f"seed {args.first_seed + i}" for i in range(args.videos))
          + " | mean J&F | FPS | memory frames at the end |")
    print("| --- |" + " ---: |" * (args.videos + 3))
    for name, rows in results.items():
        label = name if name == "unbounded" else f"{name}, max {args.max_memory_frames}"
        print(f"| {label} | " + " | ".join(f"{100 * r[0]:.2f}" for r in rows)
              + f" | {100 * np.mean([r[0] for r in rows]):.2f} | {np.mean([r[1] for r in rows]):.2f} | "
              + f"{rows[-1][2]} |")


if __name__ == "__main__":
    main()
