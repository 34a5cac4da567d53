#!/usr/bin/env python
"""The original STCN itself against this engine: same weights, same frames, one process, runs alternating.

    git clone https://github.com/hkchengrex/STCN /tmp/STCN    # anywhere outside this repository
    PYTHONPATH=src python benchmarks/bench_vs_original.py --original /tmp/STCN --frames 60 --repeats 2 \
        --modes exact bf16 auto --checkpoints 20 60

``--count-flops`` runs each engine once under ``torch.utils.flop_counter.FlopCounterMode`` instead of timing
it and prints the convolution and matrix-product FLOPs of every frame (elementwise work, top-k and gathers
are not counted, for either). These counts do not depend on the machine: their ratio is what exact mode's
speed-up over the original would be if both ran their kernels at the same rate, so measured ratio / FLOP
ratio is how fast our kernels run against the original's on that host. Within a kind of frame (memory frame
or not) a frame's FLOPs are an exact affine function of the number of memory frames, so a 60-frame count is
extrapolated to longer videos (the fit is checked to be exact on the frames counted).

Nothing of the original is copied or changed on disk: it is imported from ``--original`` and adapted to a
CPU at run time, the same adaptations as tests/data/reference (``.cuda()`` is the identity, tensors the
original creates on ``'cuda'`` are created on the CPU, no ImageNet download: every weight is overwritten by
the reference recipe's ``make_weights.py``, seed 0). Both engines get the synthetic 854x480 video of
bench_inference.py (2 objects, mask on frame 0, padded to 864x480) and the original's defaults (top-k 20,
memory every 5th frame, float32, no autocast).

The original segments a whole video in one call (its ``InferenceCore.interact``), so the engines alternate
per video, not per frame: each repeat runs every engine once, in reversed order on odd repeats. Frame
times are taken between the original's ``encode_key`` calls (one per frame); FPS at a checkpoint c is
c / (time of frames 0..c-1), the first frame included, for both. Ratios are per repeat (original time /
ours): on a shared machine read their spread, not one value. Label agreement is against the original's
argmax labels of the same repeat.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import statistics
import sys
import time
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_inference  # noqa: E402  (the same network recipe, frames and machine line)

PRECISION = {"exact": "fp32", "bf16": "bf16", "auto": "auto", "dense": "fp32"}  # dense: the benchmark baseline


@contextlib.contextmanager
def _cuda_is_cpu():
    """While the original builds its state: ``.cuda()`` is the identity and ``device='cuda'`` is the CPU."""
    import torch

    saved = torch.Tensor.cuda, torch.zeros

    def zeros(*size, device=None, **kw):
        return saved[1](*size, device="cpu" if device is not None and str(device).startswith("cuda") else device,
                        **kw)

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.zeros = zeros
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.zeros = saved


def load_original(root: Path):
    """(the original's eval network with the recipe weights, its InferenceCore class)."""
    import torchvision

    if not (root / "inference_core.py").is_file() or not (root / "model" / "eval_network.py").is_file():
        raise SystemExit(f"error: {root} is not a checkout of hkchengrex/STCN (no inference_core.py)")
    sys.path.insert(0, str(root))
    mod_resnet = importlib.import_module("model.mod_resnet")
    modules = importlib.import_module("model.modules")
    # no ImageNet download: every weight is replaced by the recipe's below
    mod_resnet.load_weights_sequential = lambda *args, **kwargs: None
    mod_resnet.model_zoo.load_url = lambda *args, **kwargs: {}
    resnet50 = torchvision.models.resnet50
    modules.models = types.SimpleNamespace(resnet50=lambda *args, **kwargs: resnet50(weights=None))
    eval_network = importlib.import_module("model.eval_network")
    core_class = importlib.import_module("inference_core").InferenceCore
    net = eval_network.STCN().eval()
    net.load_state_dict(bench_inference.recipe_state_dict())
    return net, core_class


def drive_original(net, core_class, frames: list[np.ndarray], mask: np.ndarray, mark) -> np.ndarray:
    """The original's DAVIS path on the whole video, calling ``mark()`` as each frame begins (at its
    ``encode_key`` calls); returns the (T, H, W) labels."""
    import torch

    from stcn.model.input import normalise

    images = normalise(torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]))[None]
    k = int(mask.max())
    one_hot = torch.stack([torch.from_numpy(mask == i + 1).float() for i in range(k)])[:, None]
    with torch.no_grad(), _cuda_is_cpu():
        core = core_class(net, images, k, top_k=20, mem_every=5)
        encode_key = core.encode_key

        @functools.wraps(encode_key)
        def marked(idx):
            mark()
            return encode_key(idx)

        core.encode_key = marked
        core.interact(one_hot, 0, len(frames))
    h, w = mask.shape
    top, left = core.pad[2], core.pad[0]
    return torch.argmax(core.prob[:, :, 0, top:top + h, left:left + w], dim=0).numpy().astype(np.uint8)


def _engine(model, mode: str):
    """Our exact engine, or (``dense``) stcn.inference.dense_reference.DenseReferenceCore, the calibrated
    baseline of bench_inference.py: the original's algorithm on our network code."""
    from stcn.inference import InferenceCore
    from stcn.inference.dense_reference import DenseReferenceCore

    if mode == "dense":
        return DenseReferenceCore(model, size=-1)
    return InferenceCore(model, size=-1, precision=PRECISION[mode])


def drive_ours(core, frames: list[np.ndarray], mask: np.ndarray, mark) -> np.ndarray:
    """``core`` over the video, mask on frame 0, ``mark()`` as each frame begins; the (T, H, W) labels."""
    labels = []
    for t, frame in enumerate(frames):
        mark()
        labels.append(np.asarray(core.labels(core.step(frame, mask if t == 0 else None))))
    return np.stack(labels)


def per_frame_seconds(drive) -> tuple[list[float], np.ndarray]:
    """(seconds of each frame, labels) of ``drive(mark)``: the time between consecutive marks."""
    stamps: list[float] = []
    labels = drive(lambda: stamps.append(time.perf_counter()))
    stamps.append(time.perf_counter())
    return [b - a for a, b in zip(stamps, stamps[1:])], labels


def per_frame_flops(drive) -> list[int]:
    """Convolution and matrix-product FLOPs of each frame of ``drive(mark)`` (FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    marks: list[int] = []
    with counter:
        drive(lambda: marks.append(counter.get_total_flops()))
    marks.append(counter.get_total_flops())
    return [b - a for a, b in zip(marks, marks[1:])]


def memory_frames_before(t: int, mem_every: int = 5) -> int:
    """Memory frames a frame t >= 1 reads (the annotated frame 0, then every ``mem_every``-th frame)."""
    return 1 + (t - 1) // mem_every


#: Which frame encodes a memory frame's values: the original right after segmenting it (frames 5, 10, ...;
#: not the video's last), this engine lazily in the next frame's step (6, 11, ...).
ENCODES_VALUES = {"original": lambda t: t % 5 == 0, "exact": lambda t: t % 5 == 1, "dense": lambda t: t % 5 == 1}


def affine_in_memory(flops: list[int], encodes_values, mem_every: int = 5):
    """Per kind of frame (encodes values or not), FLOPs = a + b * memory frames read, fitted on frames 1..;
    returns ``predict(t)`` and the largest misfit on the counted frames (0 when exact). The counted video's
    last frame, which the original does not store, is left out of the fit."""
    fits = {}
    for kind in (True, False):
        points = [(memory_frames_before(t, mem_every), f) for t, f in enumerate(flops[:-1])
                  if t >= 1 and bool(encodes_values(t)) == kind]
        (m0, f0), (m1, f1) = points[0], points[-1]
        b = (f1 - f0) / (m1 - m0) if m1 != m0 else 0.0
        fits[kind] = (f0 - b * m0, b)

    def predict(t: int) -> float:
        if t == 0:
            return flops[0]
        a, b = fits[bool(encodes_values(t))]
        return a + b * memory_frames_before(t, mem_every)

    misfit = max(abs(predict(t) - f) for t, f in enumerate(flops[:-1]))
    return predict, misfit


def report_flops(per: dict[str, list[int]], lengths: list[int]) -> None:
    """One row per video length: mean GFLOP per frame of each engine, the original's over each, and the
    last frames' GFLOP (a length beyond the counted video is extrapolated by :func:`affine_in_memory`)."""
    fits = {e: affine_in_memory(f, ENCODES_VALUES[e]) for e, f in per.items()}
    for engine, (_, misfit) in fits.items():
        print(f"# {engine}: frame FLOPs affine in the memory size within {misfit:.0f} FLOP "
              f"(of ~{statistics.mean(per[engine]) / 1e9:.0f} GFLOP a frame)")
    counted = len(next(iter(per.values())))
    ours = [e for e in per if e != "original"]
    print("\n| frames | " + " | ".join(f"{e} GFLOP / frame" for e in per) + " | "
          + " | ".join(f"original / {e}" for e in ours) + " | last 5 frames' GFLOP: " + ", ".join(per) + " |")
    print("| ---: " * (1 + len(per) + len(ours)) + "| ---: |")
    for n in lengths:
        mean = {e: statistics.mean(fits[e][0](t) for t in range(n)) for e in per}
        last = {e: statistics.mean(fits[e][0](t) for t in range(max(1, n - 5), n)) for e in per}
        note = "" if n <= counted else " (extrapolated)"
        print(f"| {n}{note} | " + " | ".join(f"{mean[e] / 1e9:.1f}" for e in per) + " | "
              + " | ".join(f"{mean['original'] / mean[e]:.2f}" for e in ours) + " | "
              + ", ".join(f"{last[e] / 1e9:.0f}" for e in per) + " |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--original", type=Path, required=True, help="a checkout of hkchengrex/STCN")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--modes", nargs="+", default=["exact", "bf16"], choices=sorted(PRECISION))
    p.add_argument("--checkpoints", type=int, nargs="+", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--count-flops", action="store_true",
                   help="count each engine's FLOPs per frame (exact mode only, no timing; see above)")
    args = p.parse_args(argv)
    if args.count_flops and args.frames < 20:  # the fit needs two value-encoding frames of each engine
        p.error("--count-flops needs --frames 20 or more")

    import torch

    torch.set_num_threads(args.threads)
    net, core_class = load_original(args.original.resolve())
    model, weights = bench_inference.build_model("cpu")
    mask, source = bench_inference.frame_source(480, 854, args.frames)
    frames = list(source)
    checkpoints = sorted(set(args.checkpoints or [args.frames]))
    print(f"# machine: {bench_inference.machine()}", flush=True)
    print(f"# 854x480 (padded 864x480), 2 objects, {args.frames} frames, {weights}", flush=True)
    if args.count_flops:
        counted = [m for m in args.modes if m in ("exact", "dense")] or ["exact"]  # bf16 has exact's FLOPs
        per = {"original": per_frame_flops(lambda mark: drive_original(net, core_class, frames, mask, mark)),
               **{m: per_frame_flops(lambda mark, m=m: drive_ours(_engine(model, m), frames, mask, mark))
                  for m in counted}}
        report_flops(per, sorted(set(checkpoints) | {300}))
        return
    engines = ["original", *args.modes]
    times: dict[str, list[list[float]]] = {e: [] for e in engines}
    agree: dict[str, list[float]] = {m: [] for m in args.modes}
    chosen: dict[str, str] = {}
    for r in range(args.repeats):
        ours: dict[str, np.ndarray] = {}
        for engine in engines if r % 2 == 0 else engines[::-1]:
            load = open("/proc/loadavg").read().split()[0]
            if engine == "original":
                per, reference = per_frame_seconds(lambda mark: drive_original(net, core_class, frames, mask, mark))
            else:
                core = _engine(model, engine)
                per, ours[engine] = per_frame_seconds(lambda mark, core=core: drive_ours(core, frames, mask, mark))
                chosen[engine] = core.precision
            times[engine].append(per)
            fps = ", ".join(f"{c / sum(per[:c]):.3f} FPS at {c}" for c in checkpoints)
            print(f"  repeat {r + 1} {engine}: {fps} (load average {load} before)", flush=True)
        for mode in args.modes:
            agree[mode].append(float((ours[mode] == reference).mean()))
    print("\n| frames | original FPS | " + " | ".join(f"{m} FPS" for m in args.modes) + " | "
          + " | ".join(f"{m} / original" for m in args.modes) + " |")
    print("| ---: " * (2 + 2 * len(args.modes)) + "|")
    for c in checkpoints:
        orig = [sum(t[:c]) for t in times["original"]]
        cells = [", ".join(f"{c / s:.3f}" for s in orig)]
        ratios = []
        for mode in args.modes:
            mode_times = [sum(t[:c]) for t in times[mode]]
            cells.append(", ".join(f"{c / s:.3f}" for s in mode_times))
            ratios.append(", ".join(f"{o / s:.2f}x" for o, s in zip(orig, mode_times)))
        print(f"| {c} | " + " | ".join(cells + ratios) + " |")
    for mode in args.modes:
        print(f"{mode} (ran as {chosen[mode]}): labels equal to the original's "
              + ", ".join(f"{100 * a:.3f} %" for a in agree[mode])
              + f"; median frame time over the last 10 frames {statistics.median(times[mode][-1][-10:]):.2f} s")
    print(f"original: median frame time over the last 10 frames {statistics.median(times['original'][-1][-10:]):.2f} s")


if __name__ == "__main__":
    main()
