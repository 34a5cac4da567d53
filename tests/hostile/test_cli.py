"""Hostile inputs through the command line, each in its own process.

Each case runs ``stcn.cli.main(argv)`` in a process forked after the imports (tests/hostile/cli_forks.py,
what ``python -m stcn.cli`` is once torch is imported), so that the table costs one torch import
instead of one per case; a few cases are also run as true ``python -m stcn.cli`` subprocesses and must
give the same line. For every case: exit status 2, exactly one stderr line ``stcn: error: ...`` that matches what the
case expects (so the message says something true), no traceback, and nothing added under the case's
folder (no output folder, no hidden staging, no temp file). The cases run a few at a time.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hostile_inputs import (
    Result,
    assert_one_line_error,
    bomb_png,
    child_env,
    label_map,
    listing,
    run_cli,
    run_many,
    unwritable_folder,
    write_frames,
    write_mask,
)
from PIL import Image

UNWRITABLE = unwritable_folder()


@dataclass
class Case:
    id: str
    build: Callable[[dict, Path], list]  # (clip, case folder) -> argv after `stcn`
    expect: str  # regular expression the error line must match
    env: dict = field(default_factory=dict)
    needs_unwritable: bool = False


def seg(clip, d: Path, *extra, frames=None, mask=None, out=None, size="48", weights="demo") -> list:
    return ["segment", frames or clip["frames"], "--mask", mask or clip["mask"], "--out", out or d / "out",
            "--weights", weights, "--size", size, *extra]


def frames_with(d: Path, name: str, make: Callable[[Path], object]) -> Path:
    folder = write_frames(d / "in_frames")
    make(folder / name)
    return folder


def _jpeg_mask(d: Path, name: str, mode: str = "L") -> Path:
    labels = label_map() * 100
    image = Image.fromarray(labels) if mode == "L" else Image.fromarray(np.stack([labels] * 3, -1))
    image.save(d / name, format="JPEG", quality=60)
    return d / name


def _rgb_png(d: Path) -> Path:
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(d / "rgb.png")
    return d / "rgb.png"


def _png16(d: Path) -> Path:
    Image.fromarray(label_map().astype(np.uint16) * 300).save(d / "ids16.png")
    return d / "ids16.png"


def _bytes(d: Path, name: str) -> Path:
    (d / name).write_bytes(np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return d / name


def _mkdir(p: Path) -> Path:
    p.mkdir()
    return p


def _file(d: Path, name: str = "a_file") -> Path:
    (d / name).write_text("not a folder")
    return d / name


def _truncate(p: Path) -> None:
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(p, quality=95)
    p.write_bytes(p.read_bytes()[:300])


def _truncated_video(d: Path) -> Path:
    import av

    path = d / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(12):
            frame = np.full((48, 64, 3), 20 * t, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _generic_root(d: Path, *, bad_annotation: bool) -> Path:
    root = d / "generic"
    write_frames(root / "JPEGImages" / "seq")
    ann = root / "Annotations" / "seq"
    ann.mkdir(parents=True)
    if bad_annotation:
        (ann / "00000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    else:
        write_mask(ann / "00000.png")
    return root


def _eval(d: Path, *, bad_annotation: bool = False, size: str = "48") -> list:
    return ["eval", "generic", "--root", _generic_root(d, bad_annotation=bad_annotation), "--out", d / "eval_out",
            "--weights", "demo", "--size", size, "--quiet"]


def _earlier_demo(d: Path) -> Path:
    (d / "stcn-demo").mkdir()
    (d / "stcn-demo" / "first_frame_mask.png").write_bytes(b"an earlier run")
    return d / "stcn-demo"


def _thin(d: Path) -> tuple[Path, Path]:
    return write_frames(d / "thin", frames=2, h=16, w=4000), write_mask(d / "thin_mask.png", label_map(16, 4000))


def _weights(c, d, key):
    return seg(c, d, weights=c[key])


UNW = UNWRITABLE or Path("/nonexistent-unwritable")
# run again as true `python -m stcn.cli` subprocesses, to show the forked runs stand for them
SUBPROCESS_CASES = ("size_100000", "mask_jpeg_renamed_png", "weights_nan", "demo_overwrite_without_force")

CASES = [
    # ---- sizes and resources (stcn.guards) ----
    Case("mask_20000x20000_png", lambda c, d: seg(c, d, mask=bomb_png(d / "bomb.png", mode=3)), r"megapixel limit"),
    Case("frame_20000x20000_png", lambda c, d: seg(c, d, frames=frames_with(d, "00009.png", bomb_png)),
         r"megapixel limit"),
    Case("size_100000", lambda c, d: seg(c, d, size="100000"), r"--size 100000 is larger than"),
    Case("size_999999999", lambda c, d: seg(c, d, size="999999999"), r"--size"),
    Case("size_0", lambda c, d: seg(c, d, size="0"), r"--size must be a positive"),
    Case("size_minus_5", lambda c, d: seg(c, d, size="-5"), r"--size must be a positive"),
    Case("frame_16x4000_default_size",
         lambda c, d: (lambda fm: seg(c, d, frames=fm[0], mask=fm[1], size="480"))(_thin(d)),
         r"megapixel limit; use a smaller --size"),
    Case("first_frame_exceeds_memory", lambda c, d: seg(c, d, size="480"), r"GiB.*use a smaller --size",
         env={"STCN_MEMORY_LIMIT_MB": "1"}),
    # ---- file systems ----
    Case("out_is_a_file", lambda c, d: seg(c, d, out=_file(d)), r"not a folder"),
    Case("out_under_a_file", lambda c, d: seg(c, d, out=_file(d) / "out"), r"is a file, not a folder"),
    Case("out_in_unwritable_folder", lambda c, d: seg(c, d, out=UNW / "stcn-out"),
         r"cannot create .*(permission|not permitted|read-only)", needs_unwritable=True),
    Case("out_existing_unwritable_force", lambda c, d: seg(c, d, "--force", out=UNW),
         r"(permission|not permitted|read-only)", needs_unwritable=True),
    Case("overlay_in_unwritable_folder", lambda c, d: seg(c, d, "--overlay", UNW / "o.mp4"),
         r"--overlay.*(permission|not permitted|read-only)", needs_unwritable=True),
    Case("overlay_under_a_file", lambda c, d: seg(c, d, "--overlay", _file(d) / "o.mp4"), r"--overlay"),
    Case("overlay_bad_extension", lambda c, d: seg(c, d, "--overlay", d / "o.gif"), r"--overlay"),
    Case("overlay_exists", lambda c, d: seg(c, d, "--overlay", _file(d, "o.mp4")), r"--force"),
    Case("out_is_input_folder", lambda c, d: seg(c, d, frames=write_frames(d / "f"), out=d / "f"), r"INPUT"),
    Case("out_not_empty_without_force", lambda c, d: seg(c, d, out=_earlier_demo(d)), r"--force"),
    Case("weights_convert_unwritable", lambda c, d: ["weights", "convert", c["demo"], UNW / "x.safetensors"],
         r"(permission|not permitted|read-only)", needs_unwritable=True),
    Case("weights_convert_under_a_file", lambda c, d: ["weights", "convert", c["demo"], _file(d) / "x.safetensors"],
         r"is a file, not a folder"),
    # ---- masks ----
    Case("mask_grey_jpeg", lambda c, d: seg(c, d, mask=_jpeg_mask(d, "m.jpg")), r"JPEG image; masks must be PNG"),
    Case("mask_jpeg_renamed_png", lambda c, d: seg(c, d, mask=_jpeg_mask(d, "m.png")),
         r"JPEG image; masks must be PNG"),
    Case("mask_colour_jpeg", lambda c, d: seg(c, d, mask=_jpeg_mask(d, "m.jpg", "RGB")),
         r"JPEG image; masks must be PNG"),
    Case("mask_rgb_png", lambda c, d: seg(c, d, mask=_rgb_png(d)), r"colour image"),
    Case("mask_ids_above_255", lambda c, d: seg(c, d, mask=_png16(d)), r"255"),
    Case("mask_all_background", lambda c, d: seg(c, d, mask=write_mask(d / "z.png", label_map() * 0)),
         r"no objects"),
    Case("mask_wrong_size", lambda c, d: seg(c, d, mask=write_mask(d / "s.png", label_map(20, 20))), r"20x20"),
    Case("mask_missing", lambda c, d: seg(c, d, mask=d / "nope.png"), r"no such"),
    Case("mask_random_bytes_png", lambda c, d: seg(c, d, mask=_bytes(d, "r.png")), r"cannot be read"),
    # ---- frames and videos ----
    Case("input_missing", lambda c, d: seg(c, d, frames=d / "nothing"), r"no such"),
    Case("input_empty_folder", lambda c, d: seg(c, d, frames=_mkdir(d / "empty")), r"no frames"),
    Case("frames_mixed_sizes", lambda c, d: seg(c, d, frames=frames_with(
        d, "00003.jpg", lambda p: Image.new("RGB", (30, 30)).save(p))), r"same size"),
    Case("frame_truncated_jpeg", lambda c, d: seg(c, d, frames=frames_with(d, "00004.jpg", _truncate)), r"00004"),
    Case("video_truncated", lambda c, d: seg(c, d, frames=_truncated_video(d)), r"truncated|corrupt"),
    Case("video_random_bytes", lambda c, d: seg(c, d, frames=_bytes(d, "v.mp4")), r"video"),
    # ---- options ----
    Case("top_k_0", lambda c, d: seg(c, d, "--top-k", "0"), r"--top-k"),
    Case("mem_every_0", lambda c, d: seg(c, d, "--mem-every", "0"), r"--mem-every"),
    Case("fps_negative", lambda c, d: seg(c, d, "--fps", "-1"), r"--fps"),
    Case("max_memory_frames_1", lambda c, d: seg(c, d, "--max-memory-frames", "1"), r"--max-memory-frames"),
    # ---- checkpoints ----
    Case("weights_nan", lambda c, d: _weights(c, d, "ckpt_nan"), r"NaN or infinite"),
    Case("weights_integer", lambda c, d: _weights(c, d, "ckpt_int"), r"not floating point"),
    Case("weights_random_bytes", lambda c, d: _weights(c, d, "ckpt_random"),
         r"not a PyTorch checkpoint \(neither"),
    Case("weights_truncated", lambda c, d: _weights(c, d, "ckpt_truncated"), r"truncated|corrupt"),
    Case("weights_code_pickle", lambda c, d: _weights(c, d, "ckpt_pickle"), r"arbitrary code"),
    Case("weights_empty_file", lambda c, d: _weights(c, d, "ckpt_empty"), r"checkpoint"),
    Case("weights_missing", lambda c, d: seg(c, d, weights=d / "none.pth"), r"not found"),
    Case("weights_info_nan", lambda c, d: ["weights", "info", c["ckpt_nan"]], r"NaN"),
    # ---- demo ----
    Case("demo_out_existing_file", lambda c, d: ["demo", "--out", _file(d)], r"not a folder"),
    Case("demo_overwrite_without_force", lambda c, d: ["demo", "--out", _earlier_demo(d)], r"--force"),
    Case("demo_frames_huge", lambda c, d: ["demo", "--out", d / "demo", "--frames", "100000"], r"--frames"),
    Case("demo_height_huge", lambda c, d: ["demo", "--out", d / "demo", "--height", "20000"], r"--height"),
    Case("demo_objects_300", lambda c, d: ["demo", "--out", d / "demo", "--objects", "300"], r"--objects"),
    # ---- ui (refused before any frame is decoded or network loaded) ----
    Case("ui_out_existing_file", lambda c, d: ["ui", c["frames"], "--out", _file(d)], r"not a folder"),
    Case("ui_size_0", lambda c, d: ["ui", c["frames"], "--out", d / "u", "--size", "0"], r"--size"),
    Case("ui_size_100000", lambda c, d: ["ui", c["frames"], "--out", d / "u", "--size", "100000"], r"--size"),
    Case("ui_port_99999", lambda c, d: ["ui", c["frames"], "--out", d / "u", "--port", "99999"], r"--port"),
    Case("ui_objects_300", lambda c, d: ["ui", c["frames"], "--out", d / "u", "--objects", "300"], r"255"),
    # ---- eval ----
    Case("eval_generic_bad_annotation", lambda c, d: _eval(d, bad_annotation=True), r"00000.png"),
    Case("eval_generic_size_100000", lambda c, d: _eval(d, size="100000"), r"--size"),
]


@pytest.fixture(scope="module")
def results(clip, tmp_path_factory) -> dict[str, tuple[Result, set, set, Path]]:
    """Every case run once, side by side: id -> (result, listing before, listing after, case folder)."""
    from stcn.weights import registry

    clip = {**clip, "demo": registry.resolve("demo")}
    prepared = []
    for case in CASES:
        if case.needs_unwritable and UNWRITABLE is None:
            continue
        d = tmp_path_factory.mktemp(case.id)
        prepared.append((case, case.build(clip, d), d, listing(d)))
    done = run_many([(argv, d, case.env) for case, argv, d, _ in prepared], workers=max(2, min(4, os.cpu_count() or 2)))
    return {case.id: (result, before, listing(d), d) for (case, _, d, before), result in zip(prepared, done)}


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS_CASES], ids=lambda c: c.id)
def test_the_forked_runs_are_what_python_m_stcn_cli_gives(case, clip, results, tmp_path):
    """A few cases again through ``python -m stcn.cli`` itself: the same status and the same line."""
    if case.id not in results:
        pytest.skip("no folder on this host refuses new files to root")
    from stcn.weights import registry

    argv = case.build({**clip, "demo": registry.resolve("demo")}, tmp_path)
    before = listing(tmp_path)
    result = run_cli(argv, cwd=tmp_path, env=child_env(**case.env))
    line = assert_one_line_error(result)
    forked = results[case.id]
    assert line.replace(str(tmp_path), "") == forked[0].stderr.strip().replace(str(forked[3]), "")
    assert listing(tmp_path) == before


def test_the_table_covers_at_least_40_inputs():
    assert len({c.id for c in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_gives_one_line_and_leaves_nothing(case, results):
    if case.id not in results:
        pytest.skip("no folder on this host refuses new files to root")
    result, before, after, folder = results[case.id]
    line = assert_one_line_error(result)
    assert re.search(case.expect, line), line
    added = sorted(after - before)
    assert not added, f"{case.id} left {added} in {folder}"
