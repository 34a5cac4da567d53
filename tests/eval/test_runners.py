"""Benchmark-set runners (stcn.eval.runners, `stcn eval {davis,youtube,generic}`) on small synthetic
datasets with the reference recipe weights: the right frames are written and equal the Python API's
labels, runs resume, torchrun splits the videos, the YouTube-VOS zip, one-line errors."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stcn.cli import main
from stcn.data.synthetic import generate_video, write_davis, write_youtube
from stcn.eval import runners
from stcn.eval.runners import davis_options, run_davis, run_generic, run_youtube
from stcn.inference import EngineOptions, InferenceCore
from stcn.io.masks import save_label_png

H, W, T = 48, 64, 6
# the outputs are compared bit for bit with the exact Python API: pin fp32 (auto is bf16 on some CPUs)
EXACT = davis_options(precision="fp32")


def _frames(folder: Path) -> list[np.ndarray]:
    return [np.array(Image.open(p).convert("RGB")) for p in sorted(folder.glob("*.jpg"))]


def _api_labels(model, frames, masks: dict[int, np.ndarray], need=None, **options) -> dict[int, np.ndarray]:
    """What the Python API gives: frame -> labels for the frames in ``need`` (default: all)."""
    core = InferenceCore(model, **{"size": -1, "precision": "fp32", **options})
    out = {}
    for t, f in enumerate(frames):
        wanted = need is None or t in need
        p = core.step(f, masks.get(t), need_output=wanted)
        if wanted:
            out[t] = core.labels(p)
    return out


def _read(path: Path) -> np.ndarray:
    return np.array(Image.open(path))


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("davis")
    videos = {f"seq{i}": generate_video(i, num_frames=T, height=H, width=W, num_objects=2) for i in (1, 2)}
    write_davis(root, videos)
    return root


@pytest.fixture(scope="module")
def davis_out(davis_root, mo_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("davis_out")
    summary = run_davis(davis_root, out, model=mo_model, options=EXACT, progress=False)
    return out, summary


# --------------------------------------------------------------------------------------------------
# DAVIS
# --------------------------------------------------------------------------------------------------
def test_davis_outputs_equal_the_api(davis_root, davis_out, mo_model):
    out, summary = davis_out
    assert summary.computed == ["seq1", "seq2"] and summary.complete and summary.frames == 2 * T
    assert summary.fps > 0
    for seq in ("seq1", "seq2"):
        frames = _frames(davis_root / "JPEGImages" / "480p" / seq)
        mask = _read(davis_root / "Annotations" / "480p" / seq / "00000.png")
        expected = _api_labels(mo_model, frames, {0: mask})
        written = sorted(p.name for p in (out / seq).iterdir())
        assert written == [f"{t:05d}.png" for t in range(T)]
        for t in range(T):
            image = Image.open(out / seq / f"{t:05d}.png")
            assert image.mode == "P"
            np.testing.assert_array_equal(np.array(image), expected[t])
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_davis_2016_writes_binary_greyscale(tmp_path, mo_model):
    video = generate_video(3, num_frames=4, height=H, width=W, num_objects=2)
    write_davis(tmp_path / "d16", {"bin": video}, year="2016")
    summary = run_davis(tmp_path / "d16", tmp_path / "out", year=2016, model=mo_model, options=EXACT,
                        progress=False)
    assert summary.computed == ["bin"]
    frames = _frames(tmp_path / "d16" / "JPEGImages" / "480p" / "bin")
    union = (video.labels[0] > 0).astype(np.uint8)
    expected = _api_labels(mo_model, frames, {0: union})
    for t in range(4):
        image = Image.open(tmp_path / "out" / "bin" / f"{t:05d}.png")
        assert image.mode == "L"
        np.testing.assert_array_equal(np.array(image), expected[t] * 255)


def test_resume_recomputes_only_what_is_missing(davis_root, davis_out, mo_model, tmp_path, monkeypatch):
    first, _ = davis_out
    out = tmp_path / "out"
    shutil.copytree(first, out)
    shutil.rmtree(out / "seq2")  # an interrupted run: seq2 never finished ...
    stale = out / ".seq2.tmp-12345-deadbeef"  # ... and left its temporary folder behind
    stale.mkdir()
    (stale / "00000.png").write_bytes(b"half-written")
    computed = []
    real = runners.write_video

    def counting(model, video, folder, options=None):
        computed.append(video.name)
        return real(model, video, folder, options)

    monkeypatch.setattr(runners, "write_video", counting)
    summary = run_davis(davis_root, out, model=mo_model, options=EXACT, progress=False)
    assert computed == ["seq2"] and summary.resumed == ["seq1"] and summary.computed == ["seq2"]
    assert not stale.exists()
    assert _tree(out) == _tree(first)

    (out / "seq1" / "00003.png").unlink()  # an incomplete folder is recomputed too
    computed.clear()
    run_davis(davis_root, out, model=mo_model, options=EXACT, progress=False)
    assert computed == ["seq1"]
    assert _tree(out) == _tree(first)

    computed.clear()
    summary = run_davis(davis_root, out, model=mo_model, options=EXACT, progress=False)
    assert computed == [] and summary.resumed == ["seq1", "seq2"] and summary.frames == 0


def test_torchrun_two_processes_split_the_videos(davis_root, davis_out, recipe_weights, tmp_path):
    first, _ = davis_out
    out = tmp_path / "out2"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "stcn.cli", "eval", "davis", "--root", str(davis_root), "--out", str(out),
           "--weights", str(recipe_weights("mo")), "--device", "cpu", "--precision", "fp32", "--quiet"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 0/2]" in result.stdout and "[rank 1/2]" in result.stdout
    assert _tree(out) == _tree(first)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_evaluate_prints_jf_next_to_fps(davis_root, davis_out, capsys):
    first, _ = davis_out
    # every sequence is complete, so this only evaluates (no weights are loaded)
    status = main(["eval", "davis", "--root", str(davis_root), "--out", str(first), "--weights", __file__,
                   "--evaluate", "--quiet"])
    assert status == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    assert header == ["videos", "resumed", "frames", "seconds", "FPS", "J&F-Mean", "J-Mean", "F-Mean"]
    assert lines[2].split()[:2] == ["0", "2"]
    assert (first / "global_results-val.csv").is_file()


# --------------------------------------------------------------------------------------------------
# YouTube-VOS
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def youtube_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("youtube")
    video = generate_video(7, num_frames=8, height=H, width=W, num_objects=2, late_objects=1, appear_on_multiple_of=2)
    assert video.first_frame[2] > 0
    write_youtube(root, {"vid": video}, every=2)
    return root


@pytest.mark.parametrize("all_frames", [False, True])
def test_youtube_outputs_and_zip(youtube_root, mo_model, tmp_path, all_frames):
    out = tmp_path / "out"
    summary = run_youtube(youtube_root, out, model=mo_model, options=EngineOptions(size=64, precision="fp32"),
                          all_frames=all_frames, progress=False)
    frames = _frames(youtube_root / "all_frames" / "valid_all_frames" / "JPEGImages" / "vid")
    ann_dir = youtube_root / "valid" / "Annotations" / "vid"
    masks = {int(p.stem): _read(p) for p in ann_dir.glob("*.png")}
    need = set(range(8)) if all_frames else {0, 2, 4, 6}  # meta.json lists every 2nd frame
    expected = _api_labels(mo_model, frames, masks, need, size=64)
    folder = out / "Annotations" / "vid"
    assert sorted(p.name for p in folder.iterdir()) == [f"{t:05d}.png" for t in sorted(need)]
    for t in need:
        np.testing.assert_array_equal(_read(folder / f"{t:05d}.png"), expected[t])
    assert summary.zip_path == out / "youtube-vos-2019-valid.zip"
    with zipfile.ZipFile(summary.zip_path) as zf:
        names = sorted(n for n in zf.namelist() if not n.endswith("/"))
        assert names == [f"Annotations/vid/{t:05d}.png" for t in sorted(need)]
        for n in names:
            assert zf.read(n) == (out / n).read_bytes()


def test_youtube_writes_nothing_before_the_first_annotation(tmp_path, mo_model):
    video = generate_video(8, num_frames=6, height=H, width=W, num_objects=1)
    root = tmp_path / "yt"
    write_youtube(root, {"late": video}, every=1)
    ann = root / "valid" / "Annotations" / "late"
    (ann / "00000.png").rename(ann / "00002.png")  # first annotated at frame 2 (mask of frame 0: fine here)
    summary = run_youtube(root, tmp_path / "out", model=mo_model,
                          options=EngineOptions(size=-1, precision="fp32"), progress=False)
    written = sorted(p.name for p in (tmp_path / "out" / "Annotations" / "late").iterdir())
    assert written == [f"{t:05d}.png" for t in range(2, 6)]
    assert summary.complete


# --------------------------------------------------------------------------------------------------
# Generic
# --------------------------------------------------------------------------------------------------
def test_generic_masks_on_any_frame(tmp_path, mo_model):
    video = generate_video(5, num_frames=T, height=H, width=W, num_objects=2)
    root = tmp_path / "generic"
    (root / "JPEGImages" / "clip").mkdir(parents=True)
    (root / "Annotations" / "clip").mkdir(parents=True)
    for t in range(T):
        Image.fromarray(video.frames[t]).save(root / "JPEGImages" / "clip" / f"f{t:03d}.png")
    first = np.where(video.labels[0] == 1, 1, 0).astype(np.uint8)
    later = np.where(video.labels[3] == 2, 2, 0).astype(np.uint8)  # object 2 given at frame 3 only
    save_label_png(root / "Annotations" / "clip" / "f000.png", first)
    save_label_png(root / "Annotations" / "clip" / "f003.png", later)
    summary = run_generic(root, tmp_path / "out", model=mo_model,
                          options=EngineOptions(size=-1, precision="fp32"), progress=False)
    assert summary.computed == ["clip"]
    expected = _api_labels(mo_model, list(video.frames), {0: first, 3: later})
    for t in range(T):
        np.testing.assert_array_equal(_read(tmp_path / "out" / "clip" / f"f{t:03d}.png"), expected[t])
    assert set(np.unique(expected[T - 1])) <= {0, 1, 2}


# --------------------------------------------------------------------------------------------------
# Errors: one line, exit status 2
# --------------------------------------------------------------------------------------------------
def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("stcn: error: ")
    return err


def test_missing_dataset_folder(tmp_path, capsys):
    err = _one_line_error(capsys, ["eval", "davis", "--root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "nope" in err
    (tmp_path / "empty").mkdir()
    err = _one_line_error(capsys, ["eval", "generic", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert "JPEGImages" in err


def test_missing_meta_json(youtube_root, tmp_path, capsys):
    root = tmp_path / "yt"
    shutil.copytree(youtube_root, root)
    (root / "valid" / "meta.json").unlink()
    err = _one_line_error(capsys, ["eval", "youtube", "--root", str(root), "--out", str(tmp_path / "o")])
    assert "meta.json" in err
    (root / "valid" / "meta.json").write_text("{not json")
    err = _one_line_error(capsys, ["eval", "youtube", "--root", str(root), "--out", str(tmp_path / "o")])
    assert "meta.json" in err and "JSON" in err


def test_missing_weights_says_how_to_get_them(davis_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STCN_HOME", str(tmp_path / "home"))
    err = _one_line_error(capsys, ["eval", "davis", "--root", str(davis_root), "--out", str(tmp_path / "o")])
    assert "stcn weights download" in err
