#!/usr/bin/env python
"""One convolution of STCN's own shapes (480p) in fp32 / bf16, NCHW / channels-last: GFLOP/s per layout.

    python benchmarks/bench_conv_layouts.py --threads 2

Tells how much of the engine's speed-up over the original (fp32 NCHW) a host gives by layout and dtype
alone (benchmarks/RESULTS.md, issue 14). Best of ``--repeats`` calls after 3 warm-up calls.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SHAPES = [(256, 256, 120, 216, 3), (512, 512, 60, 108, 3), (1024, 512, 30, 54, 3), (512, 256, 60, 108, 3),
          (256, 1024, 30, 54, 1)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    args = p.parse_args(argv)

    import torch
    from bench_inference import machine

    torch.set_num_threads(args.threads)
    print(f"# machine: {machine()}")
    layouts = {"fp32 NCHW": (torch.float32, torch.contiguous_format),
               "fp32 channels-last": (torch.float32, torch.channels_last),
               "bf16 channels-last": (torch.bfloat16, torch.channels_last),
               "bf16 NCHW": (torch.bfloat16, torch.contiguous_format)}
    print("| convolution | " + " | ".join(layouts) + " |")
    print("| --- " + "| ---: " * len(layouts) + "|")
    for cin, cout, h, w, k in SHAPES:
        flops = 2 * cin * cout * k * k * h * w
        cells = []
        for dtype, fmt in layouts.values():
            conv = torch.nn.Conv2d(cin, cout, k, padding=k // 2).eval().to(dtype, memory_format=fmt)
            x = torch.randn(1, cin, h, w).to(dtype).contiguous(memory_format=fmt)
            with torch.inference_mode():
                for _ in range(3):
                    conv(x)
                best = float("inf")
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    conv(x)
                    best = min(best, time.perf_counter() - start)
            cells.append(f"{flops / best / 1e9:.0f}")
        print(f"| {cin}->{cout} {k}x{k}, {h}x{w} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
