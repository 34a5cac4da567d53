#!/usr/bin/env python
"""Propagating both ways from annotated frames (``segment_video(direction=...)``), measured in J&F.

    PYTHONPATH=src python benchmarks/bench_directions.py --videos 4 --frames 40
    PYTHONPATH=src python benchmarks/bench_directions.py --videos 1 --frames 200 --only middle   # RESULTS.md

Each synthetic video (stcn.data.synthetic.generate_video, seeds 100.., 2-3 objects, exits and re-entries,
240x432 like the demo model's validation videos; seeds far from its training range) is segmented with the
built-in demo model (native size, fp32) from

* ``first``: its frame-0 mask, forward (the reference: what a first-frame annotation gives);
* ``middle``: its middle frame's mask only;
* ``last``: its last frame's mask only;
* ``middle+last``: both masks (frames between them are reached from both sides);

and each annotated run is scored with ``--direction forward`` (frames before the annotation are background),
with ``both`` (the rule ``stcn segment`` uses: the pass whose annotation is nearer writes the frame), and,
for the frames between two annotations, with a soft merge (the mean of the two passes' probabilities, then
the arg-max) to compare the two rules. J&F is the DAVIS mean over objects of the per-frame J and F, over
every frame except the first, the last and the annotated ones (the same frames for every rule).
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def _score(gt: np.ndarray, pred: np.ndarray, ids: list[int], frames: list[int]) -> float:
    from stcn.eval.metrics import frame_scores

    dense_gt, dense_pred = np.zeros_like(gt), np.zeros_like(pred)
    for i, oid in enumerate(ids, start=1):
        dense_gt[gt == oid] = i
        dense_pred[pred == oid] = i
    js, fs = zip(*(frame_scores(dense_gt[t], dense_pred[t], len(ids)) for t in frames))
    j = float(np.nanmean(np.stack(js), axis=0).mean())
    f = float(np.nanmean(np.stack(fs), axis=0).mean())
    return 100 * (j + f) / 2


def _pass(core, video, masks: dict, start: int, reverse: bool) -> dict:
    """{frame: (K+1, H, W) probabilities, object ids} of one pass over every frame it reaches."""
    from stcn.inference.video import _frames, _propagate

    frames = _frames(video.frames)
    annotations = {t: (m, None) for t, m in masks.items()}
    return {r.index: (r.probs.clone(), r.object_ids) for r in _propagate(core, frames, annotations, None,
                                                                         start=start, reverse=reverse)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="demo")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--size", default="432x240", help="WxH")
    parser.add_argument("--only", choices=("middle", "last", "middle+last"), default=None,
                        help="one annotation setting (plus the first-frame reference)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from stcn.data.synthetic import generate_video
    from stcn.inference import EngineOptions, InferenceCore, segment_video
    from stcn.inference.video import plan_directions
    from stcn.weights.io import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    model = load_model(args.weights)
    options = EngineOptions(size=-1, precision="fp32")
    settings = [args.only] if args.only else ["middle", "last", "middle+last"]
    rows: dict[str, list[float]] = {}
    start_time = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.videos):
        video = generate_video(seed, num_frames=args.frames, height=height, width=width,
                               num_objects=2 + seed % 2, allow_exit=True, distractor=bool(seed % 3 == 0))
        gt, ids, T = np.stack(video.labels), list(video.object_ids), args.frames
        marks_of = {"first": [0], "middle": [T // 2], "last": [T - 1], "middle+last": [T // 2, T - 1]}

        def run(marks, direction):
            out = {r.index: r.labels for r in segment_video(video.frames, {t: gt[t] for t in marks}, model=model,
                                                            options=options, direction=direction)}
            return np.stack([out[t] for t in range(T)])

        first_pred = run([0], "forward")
        line = [f"seed {seed}"]
        for setting in settings:
            marks = marks_of[setting]
            scored = [t for t in range(1, T - 1) if t not in marks]
            ref = _score(gt, first_pred, ids, scored)
            fwd = _score(gt, run(marks, "forward"), ids, scored)
            both = _score(gt, run(marks, "both"), ids, scored)
            rows.setdefault(f"{setting}: first-frame reference (forward)", []).append(ref)
            rows.setdefault(f"{setting}: forward only", []).append(fwd)
            rows.setdefault(f"{setting}: both (nearer annotation wins)", []).append(both)
            line.append(f"{setting}: ref {ref:.1f} forward {fwd:.1f} both {both:.1f}")
            if len(marks) == 2:  # frames between the annotations, by both rules
                a, b = marks
                between = [t for t in range(a + 1, b)]
                plan = plan_directions(T, marks)
                nearer = run(marks, "both")
                fw = _pass(InferenceCore.from_options(model, options, num_frames=T), video,
                           {t: gt[t] for t in marks}, a, False)
                bw = _pass(InferenceCore.from_options(model, options, num_frames=T), video,
                           {t: gt[t] for t in marks}, b, True)
                merged = nearer.copy()
                for t in between:
                    # channels aligned by object id: an object one pass does not know has probability 0 there
                    union = sorted({*fw[t][1], *bw[t][1]})
                    mean = 0
                    for probs, known in (fw[t], bw[t]):
                        aligned = torch.zeros(len(union) + 1, *probs.shape[1:])
                        aligned[0] = probs[0]
                        for c, oid in enumerate(known, start=1):
                            aligned[union.index(oid) + 1] = probs[c]
                        mean = mean + aligned / 2
                    merged[t] = np.array([0, *union])[mean.argmax(0).numpy()]
                n = _score(gt, nearer, ids, between)
                m = _score(gt, merged, ids, between)
                rows.setdefault(f"{setting}: between, nearer wins", []).append(n)
                rows.setdefault(f"{setting}: between, soft merge", []).append(m)
                line.append(f"between: nearer {n:.1f} merge {m:.1f} ({plan.count('backward')} backward frames)")
        print("; ".join(line), flush=True)
    print(f"\n{args.videos} videos x {args.frames} frames, {width}x{height}, weights {args.weights}, "
          f"{time.perf_counter() - start_time:.0f} s")
    print("| setting | mean J&F | per video |\n| --- | ---: | --- |")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()
