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
