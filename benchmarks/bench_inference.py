#!/usr/bin/env python
"""Inference speed and memory: the original's dense algorithm vs the engine's exact and fast modes, and
bounded memory on long videos. Results: benchmarks/RESULTS.md ("Inference speed"); docs/performance.md.

    # modes at 480p (854x480 -> 864x480 padded, 2 objects), 60 and 300 frames (long on a CPU)
    PYTHONPATH=src python benchmarks/bench_inference.py modes --frames 60 300 --modes dense exact bf16 compile
    # the same modes interleaved frame by frame in one process (robust on a busy shared machine)
    PYTHONPATH=src python benchmarks/bench_inference.py paired --frames 300 --modes dense exact --checkpoints 60 300
    # long videos with bounded memory: FPS and peak RSS at frames 100, 1000, 3000 (10,000)
    PYTHONPATH=src python benchmarks/bench_inference.py long --size 480x270 --frames 3000
    PYTHONPATH=src python benchmarks/bench_inference.py long --size 240x136 --frames 10000 \
        --checkpoints 100 1000 3000 10000

The video is synthetic (stcn.data.synthetic.generate_video, seed 0, 2 objects, mask on frame 0). The
weights are the reference recipe's (tests/data/reference/make_weights.py, seed 0: random but fixed;
speed does not depend on weights) or, without the tests folder, torch.manual_seed(0) initialisation.

Every (mode, length, repeat) runs in its own process (clean peak RSS and allocator state); modes run
alternately within a repeat so that a busy machine slows all of them alike. FPS counts processing only
(``core.step`` + ``core.labels``), as ``stcn segment`` reports it; the first frame is included except in
``compile`` mode, whose compilation time is reported separately. Label agreement compares each mode's
label maps with exact mode's of the same repeat.

Modes: ``dense`` (the original's computation: stcn.inference.dense_reference.DenseReferenceCore),
``exact`` (InferenceCore's default), ``bf16`` (exact + bfloat16 autocast on CPU), ``fp16`` (float16
autocast, CUDA only), ``compile`` (exact + torch.compile), ``bounded`` (exact + max_memory_frames).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "tests" / "data" / "reference"


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def recipe_state_dict() -> dict:
    """The reference recipe's multi-object weights, seed 0 (tests/data/reference/make_weights.py): the
    state-dict keys of the original's eval network, which are also ours."""
    spec = importlib.util.spec_from_file_location("make_weights", RECIPE / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_state_dict("mo", 0, str(RECIPE / "state_dict_manifest.json"))


def build_model(device: str, preset: str = "stcn"):
    import torch

    from stcn.model import PRESETS, STCN

    config = PRESETS[preset]
    if preset == "stcn" and (RECIPE / "make_weights.py").is_file():
        model = STCN(config)
        model.load_state_dict(recipe_state_dict())
        weights = "reference recipe (make_weights.py, seed 0)"
    else:
        torch.manual_seed(0)
        model = STCN(config)
        weights = "torch.manual_seed(0) initialisation"
    return model.eval().to(device), weights


def make_engine(mode: str, model, max_memory_frames: int | None, policy: str):
    from stcn.inference import InferenceCore
    from stcn.inference.dense_reference import DenseReferenceCore

    if mode == "dense":
        return DenseReferenceCore(model)
    exact = {"precision": "fp32"}  # amp=True: bf16 on a CPU, fp16 on CUDA
    options = {"exact": exact, "bf16": {"amp": True}, "fp16": {"amp": True}, "compile": {**exact, "compile": True},
               "bounded": {**exact, "max_memory_frames": max_memory_frames, "memory_policy": policy}}[mode]
    return InferenceCore(model, size=-1, **options)


def frame_source(height: int, width: int, frames: int, clip: int = 200):
    """(frame 0's mask, frame iterator): a generated clip played forwards and backwards (ping-pong)
    for videos longer than ``clip`` frames, so long runs hold one short clip in memory."""
    from stcn.data.synthetic import generate_video

    n = min(frames, clip)
    video = generate_video(0, num_frames=n, height=height, width=width, num_objects=2)

    def frames_iter():
        period = max(1, 2 * n - 2)
        for t in range(frames):
            i = t % period
            yield video.frames[i if i < n else period - i]

    return video.labels[0], frames_iter()


# --------------------------------------------------------------------------------------------------
# worker: one mode, one run, in its own process
# --------------------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model, weights = build_model(args.device, args.preset)
    width, height = args.size
    mask, frames = frame_source(height, width, args.frames)
    core = make_engine(args.mode, model, args.max_memory_frames, args.policy)
    base_rss = _rss_mb()
    times, cpu, labels, low_margin, marks = [], [], [], [], {}
    checkpoints = set(args.checkpoints or ())
    for t, frame in enumerate(frames):
        start, start_cpu = time.perf_counter(), time.process_time()
        probs = core.step(frame, mask if t == 0 else None)
        lab = core.labels(probs)
        if args.device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        if args.labels:
            labels.append(lab)
            top2 = probs.topk(2, dim=0).values if probs.shape[0] > 1 else torch.cat([probs, probs * 0])
            low_margin.append(np.packbits((top2[0] - top2[1] < 1e-3).cpu().numpy()))
        if t + 1 in checkpoints:
            window = times[-min(len(times), args.window):]
            marks[t + 1] = {"fps_window": 1 / statistics.median(window), "window": len(window),
                            "fps_so_far": (t + 1) / sum(times),
                            "peak_rss_mb": _peak_rss_mb(), "rss_mb": _rss_mb(),
                            "memory_frames": len(core.memory), "bank_mb": core.memory.nbytes() / 2**20}
            if args.progress:
                print(f"  frame {t + 1}: {marks[t + 1]}", file=sys.stderr, flush=True)
    skip = 2 if args.mode == "compile" else 0
    result = {
        "mode": args.mode, "frames": args.frames, "size": f"{width}x{height}", "device": args.device,
        "fps": (len(times) - skip) / sum(times[skip:]), "seconds": sum(times), "first_frames_s": sum(times[:skip]),
        "median_frame_s": statistics.median(times), "cpu_s_per_frame": sum(cpu[skip:]) / (len(cpu) - skip),
        "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base_rss,
        "memory_frames": len(core.memory), "weights": weights, "checkpoints": marks,
        "foreground": float(np.mean([np.mean(x > 0) for x in labels])) if labels else None,
    }
    if args.device.startswith("cuda"):
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if args.labels:
        np.savez(args.labels, labels=np.stack(labels), low_margin=np.stack(low_margin))
    return result


def _spawn(argv: list[str]) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "worker", *argv], env=env, check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------------------------------
# drivers
# --------------------------------------------------------------------------------------------------


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from stcn.inference.precision import cpu_flags

    flags = cpu_flags() or frozenset()
    amx = sorted(f for f in flags if f.startswith("amx"))
    cpu += f" (avx512_bf16: {'yes' if 'avx512_bf16' in flags else 'no'}, amx: {'/'.join(amx) or 'no'})"
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def run_modes(args: argparse.Namespace) -> None:
    rows = []
    common = ["--size", f"{args.size[0]}x{args.size[1]}", "--device", args.device, "--preset", args.preset]
    if args.threads:
        common += ["--threads", str(args.threads)]
    print(f"# machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for frames in args.frames:
            per_mode: dict[str, list[dict]] = {m: [] for m in args.modes}
            for rep in range(args.repeats):
                paths = {}
                for mode in args.modes:
                    frames_m = frames if mode not in args.short_modes else min(frames, args.short_frames)
                    paths[mode] = Path(tmp) / f"{mode}-{frames}-{rep}.npz"
                    r = _spawn(["--mode", mode, "--frames", str(frames_m), "--labels", str(paths[mode]), *common])
                    per_mode[mode].append(r)
                    print(f"{frames} frames, repeat {rep}: {mode:8s} {r['fps']:.3f} FPS, "
                          f"peak RSS {r['peak_rss_mb']:.0f} MB",
                          flush=True)
                if "exact" in paths:
                    with np.load(paths["exact"]) as f:
                        exact, low = f["labels"], f["low_margin"]
                    trusted = ~np.unpackbits(low, axis=1)[:, : exact[0].size].astype(bool).reshape(exact.shape)
                    for mode in args.modes:
                        with np.load(paths[mode]) as f:
                            ours = f["labels"]
                        n = min(len(ours), len(exact))
                        same = ours[:n] == exact[:n]
                        per_mode[mode][-1]["agreement"] = float(np.mean(same))
                        per_mode[mode][-1]["agreement_trusted"] = float(np.mean(same[trusted[:n]]))
                        per_mode[mode][-1]["low_margin"] = float(np.mean(~trusted[:n]))
            dense = statistics.median(r["fps"] for r in per_mode["dense"]) if "dense" in per_mode else None
            for mode in args.modes:
                runs = per_mode[mode]
                fps = statistics.median(r["fps"] for r in runs)
                rows.append({
                    "frames": runs[0]["frames"], "mode": mode, "fps_median": fps, "fps_all": [r["fps"] for r in runs],
                    "vs_dense": fps / dense if dense else None,
                    "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in runs),
                    "cpu_s_per_frame": statistics.median(r["cpu_s_per_frame"] for r in runs),
                    "agreement": statistics.median(r.get("agreement", float("nan")) for r in runs),
                    "agreement_trusted": statistics.median(r.get("agreement_trusted", float("nan")) for r in runs),
                    "low_margin": statistics.median(r.get("low_margin", float("nan")) for r in runs),
                    "foreground": runs[0]["foreground"], "first_frames_s": runs[0]["first_frames_s"],
                    **({"peak_cuda_mb": max(r["peak_cuda_mb"] for r in runs)} if "peak_cuda_mb" in runs[0] else {}),
                })
    print("\n| frames | mode | FPS (median) | runs | vs dense | CPU s / frame | peak RSS MB | labels = exact | "
          "where exact's margin >= 1e-3 |")
    print("| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        vs = f"{r['vs_dense']:.2f}x" if r["vs_dense"] else ""
        runs = ", ".join(f"{x:.3f}" for x in r["fps_all"])
        print(f"| {r['frames']} | {r['mode']} | {r['fps_median']:.3f} | {runs} | {vs} | {r['cpu_s_per_frame']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | "
              f"{100 * r['agreement']:.3f} % | {100 * r['agreement_trusted']:.3f} % |")
    if rows and rows[0].get("low_margin") == rows[0].get("low_margin"):
        print("(exact mode's top-two probability margin is below 1e-3 on "
              f"{100 * rows[0]['low_margin']:.2f} % of pixels; "
              f"foreground {100 * (rows[0]['foreground'] or 0):.1f} %)")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


def run_long(args: argparse.Namespace) -> None:
    print(f"# machine: {machine()}", flush=True)
    argv = ["--mode", "bounded", "--frames", str(args.frames[0]), "--size", f"{args.size[0]}x{args.size[1]}",
            "--device", args.device, "--preset", args.preset, "--max-memory-frames", str(args.max_memory_frames),
            "--policy", args.policy, "--window", str(args.window), "--progress",
            "--checkpoints", *map(str, args.checkpoints)]
    if args.threads:
        argv += ["--threads", str(args.threads)]
    r = _spawn(argv)
    marks = {int(k): v for k, v in r["checkpoints"].items()}
    first = marks[min(marks)]
    print(f"\n{args.size[0]}x{args.size[1]}, {args.frames[0]} frames, max_memory_frames={args.max_memory_frames} "
          f"({args.policy}); FPS = 1 / median frame time over the {args.window} frames before each checkpoint")
    print("| frame | FPS | vs first | peak RSS MB | vs first | RSS MB | memory entries | bank MB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in sorted(marks):
        m = marks[t]
        print(f"| {t} | {m['fps_window']:.2f} | {m['fps_window'] / first['fps_window']:.2f} | {m['peak_rss_mb']:.0f} | "
              f"{m['peak_rss_mb'] / first['peak_rss_mb']:.3f} | {m['rss_mb']:.0f} | {m['memory_frames']} | "
              f"{m['bank_mb']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "result": r}, indent=1))


def run_paired(args: argparse.Namespace) -> None:
    """Two or more modes in one process, frame by frame (the order alternating every frame), so that a
    busy shared machine slows them alike: per-mode FPS and the ratio of their total times."""
    import torch

    torch.set_num_threads(args.threads or torch.get_num_threads())
    print(f"# machine: {machine()}", flush=True)
    model, weights = build_model(args.device, args.preset)
    width, height = args.size
    frames = args.frames[0]
    mask, source = frame_source(height, width, frames)
    engines = {mode: make_engine(mode, model, args.max_memory_frames, args.policy) for mode in args.modes}
    times: dict[str, list[float]] = {mode: [] for mode in args.modes}
    checkpoints = set(args.checkpoints or (frames,))
    marks = {}
    for t, frame in enumerate(source):
        order = args.modes if t % 2 == 0 else args.modes[::-1]
        for mode in order:
            core = engines[mode]
            start = time.perf_counter()
            core.labels(core.step(frame, mask if t == 0 else None))
            times[mode].append(time.perf_counter() - start)
        if t + 1 in checkpoints:
            marks[t + 1] = {mode: (t + 1) / sum(times[mode]) for mode in args.modes}
            print(f"  frame {t + 1}: " + ", ".join(f"{m} {f:.3f} FPS" for m, f in marks[t + 1].items()), flush=True)
    base = args.modes[0]
    print(f"\n{width}x{height}, 2 objects, {weights}; modes interleaved frame by frame in one process")
    print("| frames | " + " | ".join(f"{m} FPS" for m in args.modes) + " | "
          + " | ".join(f"{m} vs {base}" for m in args.modes[1:]) + " |")
    print("| ---: " * (2 * len(args.modes)) + "|")
    for t in sorted(marks):
        fps = marks[t]
        print(f"| {t} | " + " | ".join(f"{fps[m]:.3f}" for m in args.modes) + " | "
              + " | ".join(f"{fps[m] / fps[base]:.2f}x" for m in args.modes[1:]) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "times": times, "marks": marks}, indent=1))


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("modes", "paired", "long", "worker"))
    parser.add_argument("--frames", type=int, nargs="+", default=None)
    parser.add_argument("--size", type=_size, default=None, help="WxH (modes: 854x480, long: 480x270)")
    parser.add_argument("--modes", nargs="+", default=["dense", "exact", "bf16", "compile"],
                        choices=("dense", "exact", "bf16", "fp16", "compile", "bounded"))
    parser.add_argument("--short-modes", nargs="*", default=[], help="modes run on --short-frames frames only")
    parser.add_argument("--short-frames", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--preset", default="stcn", choices=("stcn", "small"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-memory-frames", type=int, default=20)
    parser.add_argument("--policy", default="least_used", choices=("least_used", "oldest"))
    parser.add_argument("--checkpoints", type=int, nargs="+", default=None)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--json", help="also write the results here")
    # worker-only
    parser.add_argument("--mode", default="exact")
    parser.add_argument("--labels", help=argparse.SUPPRESS)
    parser.add_argument("--progress", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "worker":
        args.frames = args.frames[0]
        args.size = args.size or (854, 480)
        print(json.dumps(worker(args)))
    elif args.command == "paired":
        args.frames = args.frames or [300]
        args.size = args.size or (854, 480)
        run_paired(args)
    elif args.command == "modes":
        args.frames = args.frames or [60, 300]
        args.size = args.size or (854, 480)
        run_modes(args)
    else:
        args.frames = args.frames or [3000]
        args.size = args.size or (480, 270)
        args.checkpoints = args.checkpoints or [c for c in (100, 1000, 3000, 10000) if c <= args.frames[0]]
        run_long(args)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
