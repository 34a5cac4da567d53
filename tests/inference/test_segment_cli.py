"""``stcn segment`` through ``stcn.cli.main``: a frame folder and an mp4, late objects, palettes, probabilities,
overlays, and one clean one-line error (with nothing left behind) for each kind of bad input.

The recipe weights are random, so the masks are arbitrary but deterministic: the command's outputs are
compared with InferenceCore run directly on the same decoded frames, not with the ground truth.
"""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from media import write_mp4
from PIL import Image

from stcn.cli import main
from stcn.data.synthetic import generate_video, write_frames
from stcn.inference import InferenceCore
from stcn.io.masks import DAVIS_PALETTE, save_label_png

H, W = 48, 64


def _run(capsys, *argv) -> tuple[int, str, str]:
    """``stcn segment ARGV``; exact fp32 unless the test asks for a precision (``auto`` is bf16 on
    AVX512_BF16 hosts, and these tests compare against the exact engine)."""
    argv = [str(a) for a in argv]
    if "--precision" not in argv and "--amp" not in argv:
        argv += ["--precision", "fp32"]
    code = main(["segment", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _png(path: Path) -> tuple[np.ndarray, list[int] | None]:
    with Image.open(path) as image:
        return np.array(image), image.getpalette()


def _api(model, frames, masks: dict[int, np.ndarray], **kwargs):
    """Labels and probabilities from InferenceCore on the same frames (the reference for the CLI)."""
    core = InferenceCore(model, **{"size": -1, "precision": "fp32", **kwargs})
    out = []
    for t, frame in enumerate(frames):
        probs = core.step(frame, masks.get(t))
        out.append((core.labels(probs), probs.numpy().copy(), list(core.object_ids)))
    return out


def _decode_mp4(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(container.streams.video[0])]


def _only(labels: np.ndarray, obj: int, new_id: int) -> np.ndarray:
    return np.where(labels == obj, new_id, 0).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Runs that work
# --------------------------------------------------------------------------------------------------
def test_frame_folder_late_object_custom_palette_probs_overlay(tmp_path, capsys, recipe_weights, mo_model):
    video = generate_video(3, num_frames=4, height=H, width=W, num_objects=2, late_objects=1)
    assert video.first_frame == {1: 0, 2: 2}
    frames_dir = write_frames(tmp_path / "frames", video)
    palette = DAVIS_PALETTE.copy()
    palette[3], palette[7] = (10, 200, 30), (250, 5, 100)
    masks = {0: _only(video.labels[0], 1, 3), 2: _only(video.labels[2], 2, 7)}  # ids 3 and 7
    (tmp_path / "masks").mkdir()
    save_label_png(tmp_path / "masks" / "00000.png", masks[0], palette)
    save_label_png(tmp_path / "masks" / "00002.png", masks[2])  # the first mask's palette wins
    out, overlay = tmp_path / "out", tmp_path / "overlay.mp4"

    code, stdout, stderr = _run(capsys, frames_dir, "--mask", tmp_path / "masks", "--out", out,
                                "--weights", recipe_weights("mo"), "--size", -1, "--mem-every", 2,
                                "--device", "cpu", "--save-probs", "--overlay", overlay)
    assert code == 0, stderr
    assert "frames: 4" in stdout and "objects: 2 (ids 3, 7)" in stdout and "64x48" in stdout
    assert "device: cpu" in stdout and "FPS" in stdout

    frames = [np.array(Image.open(p).convert("RGB")) for p in sorted(frames_dir.glob("*.jpg"))]
    expected = _api(mo_model, frames, masks, mem_every=2)
    assert sorted(p.name for p in out.iterdir()) == [f"{t:05d}.png" for t in range(4)] + ["probs"]
    for t, (labels, probs, ids) in enumerate(expected):
        got, got_palette = _png(out / f"{t:05d}.png")
        np.testing.assert_array_equal(got, labels, err_msg=f"frame {t}")
        assert np.array(got_palette[:24]).reshape(-1, 3).tolist() == palette[:8].tolist()
        with np.load(out / "probs" / f"{t:05d}.npz") as f:
            assert f["probs"].dtype == np.float32 and f["probs"].shape == (len(ids) + 1, H, W)
            assert f["object_ids"].tolist() == ids == ([3] if t < 2 else [3, 7])
            np.testing.assert_allclose(f["probs"].sum(axis=0), 1, atol=1e-4)
            np.testing.assert_allclose(f["probs"], probs, atol=1e-6)
    np.testing.assert_array_equal(_png(out / "00000.png")[0], masks[0])  # an annotated frame keeps its mask
    assert (_png(out / "00002.png")[0] == 7).any()

    decoded = _decode_mp4(overlay)
    assert len(decoded) == 4 and decoded[0].shape == (H, W, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "masks", "out", "overlay.mp4"]


def test_mp4_objects_start_later_grey_masks(tmp_path, capsys, recipe_weights, mo_model):
    video = generate_video(0, num_frames=4, height=H, width=W, num_objects=2, late_objects=1)
    assert video.first_frame == {1: 0, 2: 3}
    clip = write_mp4(tmp_path / "clip.mp4", video.frames)
    masks = {1: _only(video.labels[1], 1, 1), 3: _only(video.labels[3], 2, 2)}
    (tmp_path / "masks").mkdir()
    Image.fromarray(masks[1]).save(tmp_path / "masks" / "00001.png")  # greyscale ids
    Image.fromarray(masks[3]).save(tmp_path / "masks" / "3.png")  # a video's frame numbers work too
    Image.fromarray(masks[3]).save(tmp_path / "masks" / "00099.png")  # no such frame: warned about
    out = tmp_path / "out"

    code, stdout, stderr = _run(capsys, clip, "--mask", tmp_path / "masks", "--out", out, "--weights",
                                recipe_weights("mo"), "--size", -1, "--device", "cpu",
                                "--overlay", out / "overlay.mp4", "--direction", "forward")
    assert code == 0, stderr
    assert "stcn: warning:" in stderr and "00099" in stderr
    assert "frames: 4" in stdout and "objects: 2 (ids 1, 2)" in stdout

    expected = _api(mo_model, _decode_mp4(clip), masks)
    assert sorted(p.name for p in out.iterdir()) == [f"{t:05d}.png" for t in range(4)] + ["overlay.mp4"]
    for t, (labels, _, _) in enumerate(expected):
        got, got_palette = _png(out / f"{t:05d}.png")
        np.testing.assert_array_equal(got, labels, err_msg=f"frame {t}")
        assert bytes(got_palette[:768]) == DAVIS_PALETTE.tobytes()
    assert not _png(out / "00000.png")[0].any()  # before the first mask: background
    decoded = _decode_mp4(out / "overlay.mp4")
    assert len(decoded) == 4 and decoded[0].shape == (H, W, 3)


def test_failure_mid_run_leaves_nothing(tmp_path, capsys, recipe_weights):
    video = generate_video(1, num_frames=2, height=H, width=W, num_objects=1)
    frames_dir = write_frames(tmp_path / "frames", video)
    bad = frames_dir / "00001.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) - 300])  # frame 1's data is cut: found after frame 0 was processed
    save_label_png(tmp_path / "first.png", video.labels[0])
    code, _, stderr = _run(capsys, frames_dir, "--mask", tmp_path / "first.png", "--out", tmp_path / "a" / "out",
                           "--weights", recipe_weights("mo"), "--size", -1, "--device", "cpu",
                           "--overlay", tmp_path / "o.mp4", "--save-probs")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stcn: error:") and "00001.jpg" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.png", "frames"]


# --------------------------------------------------------------------------------------------------
# Bad inputs: one line on stderr, status 2, nothing written
# --------------------------------------------------------------------------------------------------
def _frames_dir(root: Path, n: int = 3, size=(24, 32)) -> Path:
    folder = root / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


def _mask(path: Path, size=(24, 32), ids=(1,)) -> Path:
    labels = np.zeros(size, np.uint8)
    for k, i in enumerate(ids):
        labels[2 + 3 * k: 5 + 3 * k, 2:10] = i
    save_label_png(path, labels)
    return path


def _case_mask_size(root):
    return _frames_dir(root), _mask(root / "m.png", size=(20, 32)), "mask is 32x20 but the frames"


def _case_empty_mask(root):
    save_label_png(root / "m.png", np.zeros((24, 32), np.uint8))
    return _frames_dir(root), root / "m.png", "no objects"


def _case_too_many_objects(root):
    labels = np.zeros((24, 32), np.uint16)
    labels[0, :] = np.arange(32) * 10  # ids up to 310
    Image.fromarray(labels).save(root / "m.png")
    return _frames_dir(root), root / "m.png", "at most 255 objects"


def _case_no_mask_matches(root):
    (root / "masks").mkdir()
    _mask(root / "masks" / "00042.png")
    return _frames_dir(root), root / "masks", "no mask is named after a frame"


def _case_mixed_sizes(root):
    frames = _frames_dir(root)
    Image.fromarray(np.zeros((24, 30, 3), np.uint8)).save(frames / "00001.png")
    return frames, _mask(root / "m.png"), "same size"


def _case_corrupt_image(root):
    frames = _frames_dir(root)
    (frames / "00000.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return frames, _mask(root / "m.png"), "00000.png"


def _case_truncated_first_frame(root):
    frames = _frames_dir(root)
    data = (frames / "00000.png").read_bytes()
    (frames / "00000.png").write_bytes(data[: len(data) // 2])
    return frames, _mask(root / "m.png"), "truncated or corrupt"


def _case_truncated_video(root):
    clip = write_mp4(root / "clip.mp4", np.zeros((4, 24, 32, 3), np.uint8))
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    return clip, _mask(root / "m.png"), "truncated or corrupt"


def _case_empty_folder(root):
    (root / "frames").mkdir()
    return root / "frames", _mask(root / "m.png"), "no frames"


def _case_missing_input(root):
    return root / "nowhere", _mask(root / "m.png"), "no such file"


def _case_rgb_mask(root):
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "m.png")
    return _frames_dir(root), root / "m.png", "colour image"


CASES = {
    "mask_size": _case_mask_size,
    "empty_mask": _case_empty_mask,
    "too_many_objects": _case_too_many_objects,
    "no_mask_matches": _case_no_mask_matches,
    "mixed_sizes": _case_mixed_sizes,
    "corrupt_image": _case_corrupt_image,
    "truncated_first_frame": _case_truncated_first_frame,
    "truncated_video": _case_truncated_video,
    "empty_folder": _case_empty_folder,
    "missing_input": _case_missing_input,
    "rgb_mask": _case_rgb_mask,
}


def _assert_one_line_error(code: int, stderr: str, needle: str) -> None:
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("stcn: error:") and needle in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tmp_path, capsys, recipe_weights):
    data = tmp_path / "data"
    data.mkdir()
    frames, mask, needle = CASES[case](data)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, frames, "--mask", mask, "--out", out, "--weights",
                                recipe_weights("mo"), "--size", -1, "--device", "cpu",
                                "--overlay", tmp_path / "o.mp4")
    _assert_one_line_error(code, stderr, needle)
    assert not out.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing left behind


def test_unwritable_output(tmp_path, capsys, recipe_weights):
    frames, mask = _frames_dir(tmp_path), _mask(tmp_path / "m.png")
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    common = ["--weights", recipe_weights("mo"), "--device", "cpu"]
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", blocker / "out", *common)
    _assert_one_line_error(code, stderr, "cannot create the output folder")
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", blocker, *common)
    _assert_one_line_error(code, stderr, "not a folder")
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", tmp_path / "o", "--overlay",
                           tmp_path / "missing" / "o.mp4", *common)
    _assert_one_line_error(code, stderr, "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "frames", "m.png"]


def test_non_empty_output_needs_force(tmp_path, capsys, recipe_weights):
    frames, mask = _frames_dir(tmp_path), _mask(tmp_path / "m.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", out, "--weights", recipe_weights("mo"),
                           "--device", "cpu")
    _assert_one_line_error(code, stderr, "--force")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", frames, "--force", "--weights",
                           recipe_weights("mo"), "--device", "cpu")
    _assert_one_line_error(code, stderr, "is the INPUT folder")
    assert len(list(frames.iterdir())) == 3


def test_missing_weights_says_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("STCN_HOME", str(tmp_path / "home"))
    frames, mask = _frames_dir(tmp_path), _mask(tmp_path / "m.png")
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", tmp_path / "out")
    _assert_one_line_error(code, stderr, "stcn weights download")
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", tmp_path / "out", "--weights",
                           tmp_path / "nope.pth")
    _assert_one_line_error(code, stderr, "nope.pth")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(tmp_path, capsys, recipe_weights):
    frames, mask = _frames_dir(tmp_path), _mask(tmp_path / "m.png")
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", tmp_path / "out", "--weights",
                           recipe_weights("mo"), "--device", "cuda")
    _assert_one_line_error(code, stderr, "CUDA is not available")


def test_interrupt_leaves_nothing_and_stops_threads(tmp_path, capsys, monkeypatch, recipe_weights, mo_model):
    import threading

    import stcn.weights.io

    frames, mask = _frames_dir(tmp_path, n=6), _mask(tmp_path / "m.png")
    monkeypatch.setattr(stcn.weights.io, "load_model", lambda *a, **k: mo_model)  # no second load
    calls = []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return torch.ones(1, 24, 32)

    monkeypatch.setattr(InferenceCore, "step", interrupted)
    code, _, stderr = _run(capsys, frames, "--mask", mask, "--out", tmp_path / "out", "--weights",
                           recipe_weights("mo"), "--device", "cpu", "--overlay", tmp_path / "o.mp4",
                           "--save-probs")
    assert code == 130 and "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "m.png"]
    assert not [t for t in threading.enumerate() if t.name.startswith("stcn-") and t.is_alive()]
