#!/usr/bin/env python
"""Whole-frame time against the number of memory frames, per precision (issue #14's flatness figure).

    PYTHONPATH=src python benchmarks/bench_frame_vs_memory.py --memory-frames 4 12 20 40 60 --precision fp32 bf16

The paper-sized network with the reference recipe's weights on bench_inference.py's synthetic 854x480
video (2 objects, padded to 864x480). For each (precision, memory size) one engine is filled by making
every frame a memory frame until its bank holds that many frames (a 60-frame memory is then reached
after 60 frames instead of the 300 of a video with memory every 5th frame; what is stored is the
same kind of keys and values). Memory writes are then switched off and the next frames are timed:
frames that read the memory and decode, as most frames of a video are (a memory frame adds the value
encoder, the same cost at every memory size). All engines stay alive and are timed alternately, frame
by frame, so that a busy machine slows them alike; the table gives the median of ``--repeats`` frames
and its ratio to the first memory size.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_inference  # noqa: E402  (the same network, frames and machine line)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--memory-frames", type=int, nargs="+", default=[4, 12, 20, 40, 60])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "auto"))
    p.add_argument("--repeats", type=int, default=5, help="timed frames per engine")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from stcn.inference import InferenceCore

    torch.set_num_threads(args.threads)
    model, weights = bench_inference.build_model("cpu")
    sizes = sorted(set(args.memory_frames))
    needed = sizes[-1] + 2 + args.repeats
    mask, source = bench_inference.frame_source(480, 854, needed)
    frames = list(source)
    print(f"# machine: {bench_inference.machine()}", flush=True)
    print(f"# 854x480 (padded 864x480), 2 objects, {weights}", flush=True)
    engines = {}
    for precision in args.precision:
        for n in sizes:
            core = InferenceCore(model, size=-1, precision=precision, mem_every=1)
            for t in range(n):  # every frame a memory frame; each value is stored at the next frame
                core.labels(core.step(frames[t], mask if t == 0 else None))
            core.mem_every = 10 ** 9  # no more: every timed frame reads n memory frames
            core.labels(core.step(frames[n]))  # stores the last pending value; warms this engine up
            if len(core.memory) != n:
                raise SystemExit(f"error: filled {len(core.memory)} memory frames instead of {n}")
            engines[precision, n] = (core, n + 1)
            print(f"  {precision} ({core.precision}): {len(core.memory)} memory frames", flush=True)
    times: dict[tuple[str, int], list[float]] = {key: [] for key in engines}
    for r in range(args.repeats + 1):  # round 0 untimed: the first frames after a switch of engine are slow
        for key in (list(engines) if r % 2 == 0 else list(engines)[::-1]):
            core, t = engines[key]
            start = time.perf_counter()
            core.labels(core.step(frames[t + r]))
            if r:
                times[key].append(time.perf_counter() - start)
            assert len(core.memory) == key[1]
    print("\n| precision | " + " | ".join(f"{n} memory frames" for n in sizes) + f" | {sizes[-1]} vs {sizes[0]} |")
    print("| --- " + "| ---: " * (len(sizes) + 1) + "|")
    for precision in args.precision:
        ms = [1000 * statistics.median(times[precision, n]) for n in sizes]
        print(f"| {precision} | " + " | ".join(f"{x:.0f} ms" for x in ms) + f" | {ms[-1] / ms[0]:.2f}x |")


if __name__ == "__main__":
    main()
