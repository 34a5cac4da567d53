#!/usr/bin/env python
"""The memory read alone: the engine's bank read (top-k gather, chunked) vs the original's dense read,
for growing memory sizes, at 480p (30x54 positions per frame), 2 objects.

    PYTHONPATH=src python benchmarks/bench_memory_read.py --memory-frames 4 8 12 16 20 24 40 60

Random keys and values (the cost does not depend on them). Prints the best of ``--repeats`` per size.
The bank grows its capacity by doubling, so most sizes read a slice of a larger store: a read whose
time jumps between neighbouring sizes points at a non-contiguous fallback (see docs/performance.md).
"""
from __future__ import annotations

import argparse
import time


def best_of(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--memory-frames", type=int, nargs="+", default=[4, 8, 12, 16, 20, 24, 40, 60])
    parser.add_argument("--size", default="54x30", help="positions per frame, WxH (480p: 54x30)")
    parser.add_argument("--objects", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compare", choices=("dense", "one-gemm"), default="dense",
                        help="the other read: the original's dense read, or the one-GEMM top-k read "
                             "(stcn.model.memory.read_memory_pm, the bank's read before the blocked one)")
    args = parser.parse_args(argv)

    import torch

    from stcn.inference import MemoryBank
    from stcn.inference.dense_reference import dense_read
    from stcn.model.memory import read_memory_pm

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = (int(x) for x in args.size.lower().split("x"))
    ids = tuple(range(1, args.objects + 1))
    g = torch.Generator().manual_seed(0)
    print(f"# {w}x{h} positions per frame, {args.objects} objects, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; best of {args.repeats}")
    other = args.compare
    print(f"| memory frames | bank read ms | {other} read ms | {other} / bank | bank read vs 4 frames |")
    print("| ---: | ---: | ---: | ---: |")
    first = None
    for n in args.memory_frames:
        bank = MemoryBank(top_k=20)  # the blocked read (the default)
        for t in range(n):
            bank.add(5 * t, 3 * torch.randn(1, 64, h, w, generator=g),
                     {o: torch.randn(512, h, w, generator=g) for o in ids})
        query = 3 * torch.randn(1, 64, h, w, generator=g)
        # interleaved, so that a busy machine slows both alike
        flat = query.flatten(2).contiguous()
        if other == "dense":
            keys = torch.cat([e.key for e in bank.entries], dim=2).contiguous()
            values = [torch.cat([e.values[o] for e in bank.entries], dim=1)[None].contiguous() for o in ids]
            fn = lambda: [dense_read(keys, v, flat, 20) for v in values]
        else:
            used = len(bank) * h * w
            fn = lambda: read_memory_pm(bank._keys[:, :, :used], bank._values[:, :used], flat,
                                        mem_sq=bank._sq[:, :used])
        ours, theirs = float("inf"), float("inf")
        for _ in range(args.repeats):
            ours = min(ours, best_of(lambda: bank.read(query, ids), 1))
            theirs = min(theirs, best_of(fn, 1))
        first = first or ours
        print(f"| {n} | {1000 * ours:.1f} | {1000 * theirs:.1f} | {theirs / ours:.1f}x | {ours / first:.2f}x |",
              flush=True)


if __name__ == "__main__":
    main()
