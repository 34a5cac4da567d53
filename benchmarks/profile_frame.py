#!/usr/bin/env python
"""Where one frame's time goes, per stage and per op (torch.profiler), in each precision.

    PYTHONPATH=src python benchmarks/profile_frame.py --precision fp32 bf16 --memory-frames 12 --threads 2

The paper-sized network (the reference recipe's weights, as bench_inference.py) on a synthetic 854x480
video (padded to 864x480), 2 objects, mask on frame 0, memory every 5th frame. The engine first runs
until the bank holds ``--memory-frames`` frames, then ``--frames`` frames are profiled. Stages are the
engine's own parts (stcn.inference.frame_step.FrameStep's methods, STCN.query_features and
MemoryBank.read), timed with
``record_function`` around them; ops are aten ops by self CPU time. Dtype conversions (``aten::to`` /
``aten::copy_`` / ``aten::_to_copy``) and layout copies (``aten::contiguous`` / ``aten::clone``) are listed
separately: in a mode without round trips they stay a small share.

Prints, per precision: the stage table (ms per frame and share), then the top ops. Shares are what to
read on a shared machine; milliseconds move with its load (the header gives the CPU, its
``avx512_bf16`` / ``amx`` flags and ``uptime``'s load).
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_inference  # noqa: E402  (the same network, frames and machine line)

STAGES = (
    ("FrameStep", "encode_key", "key encoder"),
    ("MemoryBank", "read", "memory read (affinity, top-k, read-out)"),
    ("STCN", "query_features", "decoder's query half (once per frame)"),
    ("FrameStep", "decode", "decoder (per object)"),
    ("FrameStep", "encode_values", "value encoder"),
)
CONVERSIONS = ("aten::to", "aten::_to_copy", "aten::copy_")
LAYOUT = ("aten::contiguous", "aten::clone")


def _instrument() -> None:
    """Wrap each stage's method in a record_function of the stage's name (this process only)."""
    import torch

    from stcn.inference.frame_step import FrameStep
    from stcn.inference.memory_bank import MemoryBank
    from stcn.model.network import STCN

    owners = {"FrameStep": FrameStep, "MemoryBank": MemoryBank, "STCN": STCN}
    for owner, method, label in STAGES:
        cls = owners[owner]
        original = getattr(cls, method)

        @functools.wraps(original)
        def timed(*args, __original=original, __label=label, **kwargs):
            with torch.profiler.record_function(__label):
                return __original(*args, **kwargs)

        setattr(cls, method, timed)


def profile(precision: str, memory_frames: int, frames: int, size: tuple[int, int]) -> tuple[list, list, str]:
    """(stage rows, op rows, resolved precision) for ``frames`` profiled frames."""
    import torch

    from stcn.inference import InferenceCore

    model, _ = bench_inference.build_model("cpu", "stcn")
    width, height = size
    warm = 5 * (memory_frames - 1) + 1  # frames 0, 5, 10, ... enter the memory
    mask, source = bench_inference.frame_source(height, width, warm + frames)
    core = InferenceCore(model, size=-1, precision=precision)
    source = iter(source)
    with torch.inference_mode():
        for t in range(warm):
            core.labels(core.step(next(source), mask if t == 0 else None))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(frames):
                core.labels(core.step(next(source)))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / frames / 1000  # ms per frame
    stage_rows = []
    for _, _, label in STAGES:
        match = [e for e in events if e.key == label]
        ms = match[0].cpu_time_total / frames / 1000 if match else 0.0
        stage_rows.append((label, ms, 100 * ms / total))
    staged = sum(r[1] for r in stage_rows)
    rest = total - staged
    stage_rows.append(("rest (preprocessing, sigmoid, aggregation, labels)", rest, 100 * rest / total))
    stage_rows.append(("frame", total, 100.0))
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    op_rows = [(e.key, e.self_cpu_time_total / frames / 1000, 100 * e.self_cpu_time_total / frames / 1000 / total,
                e.count // frames) for e in ops]
    return stage_rows, op_rows, core.frame_step.precision


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "bf16", "auto"))
    p.add_argument("--memory-frames", type=int, default=12, help="frames in the memory bank while profiling")
    p.add_argument("--frames", type=int, default=3, help="frames profiled (after the warm-up)")
    p.add_argument("--size", type=bench_inference._size, default=(854, 480), help="WxH")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--top", type=int, default=15, help="ops listed")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    _instrument()
    print(f"{bench_inference.machine()}, load {os.getloadavg()[0]:.1f}; "
          f"paper-sized network, {args.size[0]}x{args.size[1]}, 2 objects, {args.memory_frames} memory frames, "
          f"{args.frames} frames profiled")
    for precision in args.precision:
        stages, ops, resolved = profile(precision, args.memory_frames, args.frames, args.size)
        print(f"\n### precision={precision} (ran as {resolved})\n")
        print("| stage | ms / frame | share |\n| --- | ---: | ---: |")
        for label, ms, share in stages:
            print(f"| {label} | {ms:.0f} | {share:.1f} % |")
        print("\n| op (self CPU) | ms / frame | share | calls / frame |\n| --- | ---: | ---: | ---: |")
        for key, ms, share, calls in ops[: args.top]:
            print(f"| {key} | {ms:.1f} | {share:.1f} % | {calls} |")
        conv = [r for r in ops if r[0] in CONVERSIONS]
        layout = [r for r in ops if r[0] in LAYOUT]
        print(f"\ndtype conversions ({', '.join(CONVERSIONS)}): {sum(r[1] for r in conv):.1f} ms / frame "
              f"({sum(r[2] for r in conv):.1f} %), {sum(r[3] for r in conv)} calls; layout copies "
              f"({', '.join(LAYOUT)}): {sum(r[1] for r in layout):.1f} ms ({sum(r[2] for r in layout):.1f} %)")


if __name__ == "__main__":
    main()
