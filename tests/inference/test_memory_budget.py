"""--max-memory / max_memory_bytes: parsing, what the planner chooses at given budgets (numbers), a one-line
failure at the start when the budget cannot be met (nothing left on disk), and a real run whose peak RSS
stays under its budget."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from stcn.cli import main
from stcn.data.synthetic import generate_video, write_frames
from stcn.errors import UserError
from stcn.inference import EngineOptions
from stcn.inference.budget import SAFETY, parse_bytes, plan_memory
from stcn.model import PRESETS

SRC = Path(__file__).resolve().parents[2] / "src"
MB = 2**20


def test_parse_bytes():
    assert parse_bytes("2GB") == 2 * 2**30 and parse_bytes("1.5G") == 3 * 2**29
    assert parse_bytes("800MB") == 800 * MB and parse_bytes("800mib") == 800 * MB and parse_bytes(4096) == 4096
    for bad in ("lots", "2XB", "0GB", "-1GB"):
        with pytest.raises(UserError, match="--max-memory"):
            parse_bytes(bad)


def _plan(budget: str, **kw):
    args = dict(height=480, width=854, num_frames=1000, num_objects=2, options=EngineOptions(),
                model_config=PRESETS["small"], baseline=700 * MB)
    return plan_memory(parse_bytes(budget), **{**args, **kw})


def test_plans_fit_their_budget_and_grow_with_it():
    small, medium, large = _plan("1GB", auto_size=True), _plan("2GB"), _plan("4GB")
    for plan in (small, medium, large):
        assert plan.estimate <= SAFETY * plan.budget and plan.bounded
    # 1000 frames: the automatic bound (60) fits 2 and 4 GB at 480 with the full work memory
    for plan in (medium, large):
        assert (plan.memory_frames, plan.options.size, plan.options.work_memory_mb) == (60, 480, 1024)
    # 1 GB (the process holds 700 MB): a smaller size, less work memory, fewer memory frames
    assert (small.memory_frames, small.options.size, small.options.work_memory_mb) == (31, 360, 32)
    assert small.options.max_memory_frames == small.memory_frames
    assert "memory budget 1.00 GB: at most 31 memory frames" in small.summary()
    # a short video keeps every memory frame when they fit: ceil(100 / 5) + 1
    short = _plan("2GB", num_frames=100)
    assert short.memory_frames == 21 and not short.bounded
    # 1080p costs more frames in flight, not more memory frames (the processing size is the same)
    hd = _plan("2GB", height=1080, width=1920)
    assert hd.memory_frames == 60 and hd.parts["io"] > medium.parts["io"]


def test_unmeetable_budget_fails_and_auto_size_lowers_the_size():
    with pytest.raises(UserError, match=r"--max-memory 1.00 GB cannot be met for 854x480 .*--auto-size"):
        _plan("1GB")
    with pytest.raises(UserError, match=r"cannot be met for 1920x1080 .*; raise it$"):
        _plan("1GB", height=1080, width=1920, auto_size=True)
    with pytest.raises(UserError, match="cannot be met"):
        _plan("700MB", auto_size=True)  # the process alone is over it


@pytest.fixture()
def clip(tmp_path):
    video = generate_video(101, num_frames=6, height=120, width=216, num_objects=2)
    write_frames(tmp_path / "frames", video)
    Image.fromarray(video.labels[3]).save(tmp_path / "m.png")
    names = sorted(p.stem for p in (tmp_path / "frames").iterdir())
    (tmp_path / "masks").mkdir()
    Image.fromarray(video.labels[3]).save(tmp_path / "masks" / f"{names[3]}.png")
    return tmp_path


def test_cli_budget_failure_is_one_line_and_leaves_nothing(clip, capsys):
    out = clip / "out"
    code = main(["segment", str(clip / "frames"), "--mask", str(clip / "masks"), "--out", str(out),
                 "--weights", "demo", "--max-memory", "300MB"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("stcn: error: --max-memory 300 MB cannot be met")
    assert sorted(p.name for p in clip.iterdir()) == ["frames", "m.png", "masks"]


def test_real_run_stays_under_its_budget(clip):
    # VmHWM: this process's own high-water mark (ru_maxrss would also count the pytest parent's size at fork,
    # which Linux carries across exec)
    child = ("import sys\nfrom stcn.cli import main\ncode = main(sys.argv[1:])\n"
             "hwm = [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
             "print('PEAK', hwm, file=sys.stderr)\nsys.exit(code)\n")
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    budget = "1.5GB"
    proc = subprocess.run([sys.executable, "-c", child, "segment", str(clip / "frames"), "--mask", str(clip / "masks"),
                           "--out", str(clip / "out"), "--weights", "demo", "--max-memory", budget, "--size", "240"],
                          env=env, capture_output=True, text=True, timeout=1800)  # the shared host can be slow
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if line.startswith("stcn: memory budget 1.50 GB")]
    assert said and "planned peak" in said[0]
    peak = int(proc.stderr.split("PEAK")[1].split()[0]) * 1024
    assert peak <= parse_bytes(budget), (peak, said)
    assert len(list((clip / "out").glob("*.png"))) == 6
    assert "max_memory_frames" in proc.stdout


# --- segment_video(max_memory_bytes=...): the same planner, the same numbers, the same results as segment() ---

BASELINE = 700 * MB  # the process's size, fixed so that both calls plan from the same numbers
SMALL_BUDGET = 915_700_000  # at this baseline: 3 of the 7 memory frames fit, with the least work memory
VIDEO_OPTIONS = EngineOptions(size=-1, mem_every=1, precision="fp32")


@pytest.fixture()
def fixed_baseline(monkeypatch):
    import stcn.inference.budget as budget

    monkeypatch.setattr(budget, "process_rss", lambda: BASELINE)


@pytest.fixture(scope="module")
def demo():
    import stcn

    return stcn.load_model("demo", device="cpu")


def test_segment_video_plans_as_segment_does(clip, demo, fixed_baseline):
    import numpy as np

    from stcn.inference import segment_video
    from stcn.inference.segment import segment
    from stcn.io.masks import read_label_png

    said_video, said_segment = [], []
    results = list(segment_video(clip / "frames", clip / "masks", model=demo, options=VIDEO_OPTIONS,
                                 max_memory_bytes=SMALL_BUDGET, info_line=said_video.append))
    done = segment(clip / "frames", clip / "masks", clip / "out", model=demo, options=VIDEO_OPTIONS,
                   max_memory_bytes=SMALL_BUDGET, info_line=said_segment.append, progress=False)
    # one line each, the same plan: 3 memory frames (of the 7 the video would use), 32 MB of work memory
    assert said_video == said_segment and len(said_video) == 1
    assert said_video[0].startswith("memory budget 873 MB: at most 3 memory frames, work memory 32 MB")
    assert done.max_memory_frames == 3 and done.options.work_memory_mb == 32 and done.memory_note == said_video[0]
    # the engine ran with that bound (and evicted), and wrote what segment() wrote
    engines = {r.direction: r.engine for r in results}
    assert set(engines) == {"backward", "forward"}
    assert all(e.memory.max_frames == 3 and len(e.memory) <= 3 for e in engines.values())
    assert sorted(r.index for r in results) == list(range(6))
    for r in results:
        np.testing.assert_array_equal(r.labels, read_label_png(clip / "out" / f"{r.name}.png")[0])
    # the plan grows with the budget: at 2 GB every memory frame fits, with the full work memory
    bigger = []
    segment_video(clip / "frames", clip / "masks", model=demo, options=VIDEO_OPTIONS, max_memory_bytes="2GB",
                  info_line=bigger.append).close()
    assert bigger[0].startswith("memory budget 2.00 GB: every memory frame (7), work memory 1024 MB")


def test_segment_video_budget_equals_the_explicit_bound(clip, demo, fixed_baseline):
    import numpy as np
    import torch

    from stcn.inference import segment_video

    budgeted = list(segment_video(clip / "frames", clip / "masks", model=demo, options=VIDEO_OPTIONS,
                                  max_memory_bytes=SMALL_BUDGET, info_line=lambda line: None))
    explicit = list(segment_video(clip / "frames", clip / "masks", model=demo,
                                  options=VIDEO_OPTIONS.replace(max_memory_frames=3, work_memory_mb=32)))
    assert [r.index for r in budgeted] == [r.index for r in explicit]
    assert any(r.labels.any() for r in budgeted)  # the demo model finds the objects: not a vacuous comparison
    for a, b in zip(budgeted, explicit):
        np.testing.assert_array_equal(a.labels, b.labels)
        assert torch.equal(a.probs, b.probs)


def test_segment_video_refuses_an_unmeetable_budget_at_the_start(clip, demo, capsys):
    import numpy as np

    from stcn.inference import segment_video

    for budget in ("300MB", 300 * MB):
        with pytest.raises(UserError) as caught:
            segment_video(clip / "frames", clip / "masks", model=demo, max_memory_bytes=budget)
        message = str(caught.value)
        assert "\n" not in message
        assert message.startswith("--max-memory 300 MB cannot be met for 216x120 with 2 objects")
    # before any frame is read: frames that do not exist are never opened (the size comes from the mask)
    labels = np.asarray(Image.open(clip / "m.png"))
    with pytest.raises(UserError, match="cannot be met for 216x120 with 2 objects"):
        segment_video([clip / "missing.png"] * 6, {3: labels}, model=demo, max_memory_bytes="300MB")
    with pytest.raises(UserError, match="--max-memory"):
        segment_video(clip / "frames", clip / "masks", model=demo, max_memory_bytes="lots")
    with pytest.raises(UserError, match="give --max-memory too"):
        segment_video(clip / "frames", clip / "masks", model=demo, auto_size=True)
    assert capsys.readouterr().err == ""  # nothing was said before the refusal
