"""Resuming: InferenceCore.state_dict / load_state_dict continue bit for bit (bounded memory, usage counts,
pending and temporary memory), and ``stcn segment --resume`` after an interruption (Ctrl-C held until the frame
is complete) or a hard kill (a subprocess that dies mid-run) writes byte-identical PNGs; a checkpoint made
for other options, masks or video is refused with one line."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stcn
from stcn.cli import main
from stcn.data.synthetic import generate_video, write_frames
from stcn.inference import InferenceCore
from stcn.inference.resume import STATE_FOLDER, load_state, progress_folder, save_state
from stcn.io import writers

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="module")
def demo():
    return stcn.load_model("demo")


def test_engine_state_round_trip_is_exact(demo, tmp_path):
    video = generate_video(101, num_frames=12, height=64, width=96, num_objects=2, late_objects=1)
    masks = {0: video.labels[0], video.first_frame[2]: video.labels[video.first_frame[2]]}
    settings = dict(size=-1, precision="fp32", mem_every=1, include_last=True, max_memory_frames=3,
                    memory_policy="least_used")
    reference = InferenceCore(demo, **settings)
    split = InferenceCore(demo, **settings)
    with torch.inference_mode():
        for t in range(6):
            reference.step(video.frames[t], masks.get(t))
            split.step(video.frames[t], masks.get(t))
        assert reference.memory.evicted and reference._pending is not None  # bounded, a value pending
        save_state(tmp_path / "state", *split.state_dict())
        assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["engine.safetensors", "state.json"]
        meta, tensors = load_state(tmp_path / "state")
        resumed = InferenceCore(demo, **settings)
        resumed.load_state_dict(meta, tensors)
        assert [e.usage for e in resumed.memory.entries] == [e.usage for e in reference.memory.entries]
        assert resumed.object_ids == reference.object_ids and resumed.memory_frames == reference.memory_frames
        for t in range(6, 12):
            assert torch.equal(resumed.step(video.frames[t], masks.get(t)),
                               reference.step(video.frames[t], masks.get(t))), t
        assert resumed.memory.evicted == reference.memory.evicted
    with pytest.raises(ValueError, match="mem_every"):
        InferenceCore(demo, **{**settings, "mem_every": 2}).load_state_dict(meta, tensors)


def _inputs(tmp_path: Path, annotated: int, num_frames: int = 14):
    video = generate_video(101, num_frames=num_frames, height=64, width=96, num_objects=2)
    write_frames(tmp_path / "frames", video)
    names = sorted(p.stem for p in (tmp_path / "frames").iterdir())
    (tmp_path / "masks").mkdir()
    Image.fromarray(video.labels[annotated]).save(tmp_path / "masks" / f"{names[annotated]}.png")
    return ["segment", str(tmp_path / "frames"), "--mask", str(tmp_path / "masks"), "--weights", "demo",
            "--size", "-1", "--precision", "fp32", "--device", "cpu", "--quiet", "--mem-every", "2",
            "--max-memory-frames", "3", "--save-probs"]


def _same_files(a: Path, b: Path) -> int:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    return len(files)


def test_interrupt_then_resume_gives_the_same_files(tmp_path, capsys, monkeypatch):
    argv = _inputs(tmp_path, annotated=3)
    assert main([*argv, "--out", str(tmp_path / "ref")]) == 0
    original, calls = writers.LabelWriter.write, []

    def interrupting(self, *args, **kwargs):  # Ctrl-C arrives while frame 8 of the run is written
        original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 8:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(writers.LabelWriter, "write", interrupting)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out), "--resume", "--checkpoint-every", "100"]) == 130
    folder = progress_folder(out)
    assert not out.exists() and folder.is_dir()
    meta = json.loads((folder / STATE_FOLDER / "state.json").read_text())
    # backward pass: frames 2, 1, 0; then forward from the annotation: 3..7: the 8th frame written is 7
    assert meta["after"] == ["forward", 7] and meta["progress"]["count"] == 8
    assert len(list(folder.glob("*.png"))) == 8

    monkeypatch.setattr(writers.LabelWriter, "write", original)
    capsys.readouterr()
    assert main([*argv, "--out", str(out), "--resume", "--size", "48"]) == 2  # other options: refused
    err = capsys.readouterr().err.strip()
    assert err.startswith("stcn: error: --resume:") and "another options (size -1 now 48)" in err
    assert len(err.splitlines()) == 1 and folder.is_dir()  # the progress is kept
    assert main([*argv, "--out", str(out), "--resume"]) == 0
    assert not folder.exists()
    assert _same_files(tmp_path / "ref", out) == 28  # 14 PNGs + 14 probability files, byte for byte


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    argv = _inputs(tmp_path, annotated=0, num_frames=12)
    assert main([*argv, "--out", str(tmp_path / "ref")]) == 0
    out = tmp_path / "out"
    # a child process that dies (no cleanup, no checkpoint on the way out) while writing its 8th frame
    child = (
        "import os, sys\n"
        "from stcn.io import writers\n"
        "calls = []\n"
        "original = writers.LabelWriter.write\n"
        "def dying(self, *a, **k):\n"
        "    calls.append(1)\n"
        "    if len(calls) == 8:\n"
        "        os._exit(9)\n"
        "    original(self, *a, **k)\n"
        "writers.LabelWriter.write = dying\n"
        "from stcn.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", child, *argv, "--out", str(out), "--resume", "--checkpoint-every",
                           "3", "--direction", "forward"], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 9, proc.stderr
    meta = json.loads((progress_folder(out) / STATE_FOLDER / "state.json").read_text())
    assert meta["after"] == ["forward", 5]  # checkpoints after frames 2 and 5: 6 and 7 are done again
    assert main([*argv, "--out", str(out), "--resume", "--direction", "forward"]) == 0
    assert _same_files(tmp_path / "ref", out) == 24


def test_other_model_or_masks_are_refused(tmp_path, capsys, monkeypatch):
    argv = _inputs(tmp_path, annotated=4, num_frames=8)
    original = writers.LabelWriter.write

    def interrupting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(writers.LabelWriter, "write", interrupting)
    assert main([*argv, "--out", str(tmp_path / "out"), "--resume"]) == 130
    monkeypatch.setattr(writers.LabelWriter, "write", original)
    capsys.readouterr()
    other_model = [("real" if a == "demo" else a) for a in argv]  # the other built-in model
    assert main([*other_model, "--out", str(tmp_path / "out"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was made for another model" in err and len(err.strip().splitlines()) == 1
    mask = next((tmp_path / "masks").iterdir())
    labels = np.array(Image.open(mask))
    moved = np.ascontiguousarray(labels[:, ::-1])  # the same objects, drawn elsewhere
    assert not np.array_equal(moved, labels)
    Image.fromarray(moved).save(mask)
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "out"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "was made for another masks" in err and len(err.strip().splitlines()) == 1
