"""stcn.segment_video, the whole-video API: the same outputs as stepping InferenceCore by hand, from
every kind of input (array, frame list, frame folder), with the options reaching the engine."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import stcn
from stcn.data.synthetic import generate_video
from stcn.errors import UserError
from stcn.inference import EngineOptions, InferenceCore, segment_video
from stcn.io.masks import save_label_png
from stcn.model import PRESETS, STCN

OPTIONS = EngineOptions(size=-1, max_memory_frames=2, memory_policy="oldest", mem_every=1, precision="fp32")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return STCN(PRESETS["small"]).eval()


@pytest.fixture(scope="module")
def video():
    return generate_video(3, num_frames=7, height=64, width=96, num_objects=2)


def _by_hand(model, video, masks):
    core = InferenceCore(model, size=-1, precision="fp32", max_memory_frames=2, memory_policy="oldest", mem_every=1)
    probs, labels = [], []
    with torch.inference_mode():
        for t, frame in enumerate(video.frames):
            p = core.step(frame, masks.get(t))
            probs.append(p)
            labels.append(core.labels(p))
    return probs, labels, core


def test_segment_video_equals_stepping_the_engine(model, video):
    masks = {0: video.labels[0], 4: video.labels[4]}  # a second annotation mid-way (re-annotates)
    probs, labels, core = _by_hand(model, video, masks)
    results = list(segment_video(video.frames, masks, model=model, options=OPTIONS, direction="forward"))
    assert [r.index for r in results] == list(range(7)) and [r.name for r in results][:2] == ["00000", "00001"]
    for r, p, lab in zip(results, probs, labels):
        assert torch.equal(r.probs, p)
        np.testing.assert_array_equal(r.labels, lab)
        assert r.seconds > 0 and r.image.shape == (64, 96, 3)
    engine = results[-1].engine
    assert engine.memory.permanent == 2 and engine.memory.evicted  # the options reached the engine
    assert engine.memory_frames == core.memory_frames


def test_every_input_kind_gives_the_same_labels(model, video, tmp_path):
    expected = [r.labels for r in segment_video(np.stack(video.frames), {0: video.labels[0]}, model=model,
                                                options=OPTIONS)]
    frames_dir = tmp_path / "frames"  # PNG frames are lossless: the folder gives exactly the arrays
    frames_dir.mkdir()
    for t, f in enumerate(video.frames):
        Image.fromarray(f).save(frames_dir / f"{t:05d}.png")
    save_label_png(tmp_path / "first.png", video.labels[0])
    from_folder = [r.labels for r in segment_video(frames_dir, tmp_path / "first.png", model=model, options=OPTIONS)]
    from_names = [r.labels for r in segment_video(sorted(frames_dir.iterdir()), {"00000": video.labels[0]},
                                                  model=model, options=OPTIONS)]
    for a, b, c in zip(expected, from_folder, from_names):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_outputs_skips_frames(model, video):
    results = list(segment_video(video.frames, {0: video.labels[0]}, model=model,
                                 options=OPTIONS.replace(mem_every=3), outputs={0, 6}))
    assert [r.index for r in results] == [0, 6]


def test_engine_options_are_validated_once():
    with pytest.raises(UserError, match="--top-k"):
        EngineOptions(top_k=0)
    with pytest.raises(UserError, match="--precision"):
        EngineOptions(precision="fp8")
    assert EngineOptions().size == 480 == InferenceCore.__init__.__kwdefaults__["size"]  # one default
    assert stcn.segment_video is segment_video


def test_options_round_trip_through_the_flags():
    import argparse

    from stcn.inference import add_engine_arguments

    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args(["--top-k", "7", "--size", "-1", "--precision", "bf16", "--max-memory-frames", "0"])
    options = EngineOptions.from_args(args)
    assert options == EngineOptions(top_k=7, size=-1, precision="bf16", max_memory_frames=0)
    assert EngineOptions.from_args(parser.parse_args([])) == EngineOptions()
    assert options.to_dict()["top_k"] == 7
