#!/usr/bin/env python
"""Peak resident memory of ``stcn segment --max-memory B`` against the budget B, for 480p and 1080p videos.

    PYTHONPATH=src python benchmarks/bench_memory_budget.py --frames 1000                 # the issue's setting
    PYTHONPATH=src python benchmarks/bench_memory_budget.py --frames 40 --budgets 1GB 2GB 4GB

For each resolution (854x480, 1920x1080) a synthetic video (stcn.data.synthetic.generate_video, 2 objects,
seed 7; a 50-frame clip played back and forth to the requested length, so that no more than 50 frames are
ever generated; for 1080p drawn at 960x540 and upscaled) is written as an mp4, annotated at its middle frame
(so both passes run, the backward one decoding the mp4 in chunks), and segmented by a fresh
``stcn segment`` process with the built-in demo model (the `small` network) at the default processing size,
once per budget. The child reports its peak RSS (``VmHWM`` of /proc/self/status); the table shows it beside the
budget and what the budget chose (the line ``stcn segment`` prints).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# VmHWM is the child's own high-water mark; ru_maxrss (used for the first table in docs/segment.md) also
# counts the parent's size at fork, which Linux carries across exec, so it is only an upper bound.
CHILD = (
    "import sys\n"
    "from stcn.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
    "print(f'PEAK_RSS_KB {hwm}', file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _write_video(path: Path, width: int, height: int, frames: int, seed: int) -> np.ndarray:
    """Write the mp4; return the middle frame's label map (at the video's size)."""
    import av
    from PIL import Image

    from stcn.data.synthetic import generate_video
    from stcn.io.writers import pick_video_encoder

    scale = 2 if height > 720 else 1
    clip = generate_video(seed, num_frames=min(50, frames), height=height // scale, width=width // scale,
                          num_objects=2)
    order = [i % (2 * len(clip.frames) - 2 or 1) for i in range(frames)]
    order = [i if i < len(clip.frames) else 2 * len(clip.frames) - 2 - i for i in order]

    def big(a: np.ndarray, resample) -> np.ndarray:
        return a if scale == 1 else np.array(Image.fromarray(a).resize((width, height), resample))

    with av.open(str(path), "w") as container:
        stream = container.add_stream(pick_video_encoder(), rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in order:
            frame = av.VideoFrame.from_ndarray(big(clip.frames[i], Image.BILINEAR), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return big(clip.labels[order[frames // 2]], Image.NEAREST)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--budgets", nargs="+", default=["1GB", "2GB", "4GB"])
    parser.add_argument("--resolutions", nargs="+", default=["854x480", "1920x1080"])
    parser.add_argument("--weights", default="demo")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more stcn segment flags")
    args = parser.parse_args(argv)

    from PIL import Image

    from stcn.inference.budget import parse_bytes

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for res in args.resolutions:
            width, height = (int(v) for v in res.split("x"))
            video = tmp / f"{res}.mp4"
            labels = _write_video(video, width, height, args.frames, seed=7)
            (tmp / f"masks{res}").mkdir()
            Image.fromarray(labels).save(tmp / f"masks{res}" / f"{args.frames // 2:05d}.png")
            for budget in args.budgets:
                out = tmp / f"out-{res}-{budget}"
                cmd = [sys.executable, "-c", CHILD, "segment", str(video), "--mask", str(tmp / f"masks{res}"),
                       "--out", str(out), "--weights", args.weights, "--max-memory", budget, *args.extra]
                start = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True)
                seconds = time.perf_counter() - start
                peak = next((int(line.split()[1]) * 1024 for line in proc.stderr.splitlines()
                             if line.startswith("PEAK_RSS_KB")), 0)
                said = next((line for line in proc.stderr.splitlines()
                             if line.startswith(("stcn: memory budget", "stcn: error"))), "")
                written = len(list(out.glob("*.png"))) if out.is_dir() else 0
                rows.append((res, budget, peak, parse_bytes(budget), proc.returncode, written, seconds, said))
                print(f"{res} {budget}: peak RSS {peak / 2**20:.0f} MB, exit {proc.returncode}, {written} masks, "
                      f"{seconds:.0f} s; {said}", flush=True)
    print(f"\n{args.frames} frames per video, weights {args.weights}\n")
    print("| video | budget | peak RSS | under budget | exit | masks | seconds | chosen |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | --- |")
    for res, budget, peak, limit, code, written, seconds, said in rows:
        print(f"| {res} | {budget} | {peak / 2**20:.0f} MB | {'yes' if 0 < peak <= limit else 'no'} | {code} | "
              f"{written} | {seconds:.0f} | {said.removeprefix('stcn: ')} |")


if __name__ == "__main__":
    main()
