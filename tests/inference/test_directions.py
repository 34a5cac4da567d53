"""Both directions from the annotated frames (``segment_video(direction=...)``, ``stcn segment
--direction``): which pass writes which frame, the backward pass reaching frames before the first
annotation with the demo model, the forward result unchanged, and the CLI over an mp4 read backwards."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import stcn
from stcn.cli import main
from stcn.data.synthetic import generate_video
from stcn.errors import UserError
from stcn.eval.metrics import frame_scores
from stcn.inference import EngineOptions, InferenceCore, segment_video
from stcn.inference.video import plan_directions

EXACT = EngineOptions(size=-1, precision="fp32")


def _jf(gt: np.ndarray, pred: np.ndarray, ids) -> float:
    """J&F (x100) of one frame over the objects ``ids`` (ids absent from both maps count as perfect)."""
    dense_gt, dense_pred = np.zeros_like(gt), np.zeros_like(pred)
    for i, oid in enumerate(ids, start=1):
        dense_gt[gt == oid] = i
        dense_pred[pred == oid] = i
    j, f = frame_scores(dense_gt, dense_pred, len(ids))
    return 100 * (float(np.nanmean(j)) + float(np.nanmean(f))) / 2


@pytest.fixture(scope="module")
def demo():
    return stcn.load_model("demo")


def test_plan_nearer_annotation_wins_ties_go_forward():
    assert plan_directions(5, [0]) == ["forward"] * 5
    assert plan_directions(5, [4]) == ["backward"] * 4 + ["forward"]
    # 2 and 8: frames 3..5 are nearer 2 (5 is a tie: forward), 6..7 nearer 8
    assert plan_directions(10, [2, 8]) == ["backward"] * 2 + ["forward"] * 4 + ["backward"] * 2 + ["forward"] * 2
    assert plan_directions(10, [2, 8], "forward") == ["forward"] * 10
    assert plan_directions(3, []) == ["forward"] * 3
    with pytest.raises(UserError, match="--direction"):
        plan_directions(3, [0], "backward")


def test_last_frame_annotation_reaches_frame_0_forward_leaves_background(demo):
    video = generate_video(101, num_frames=12, height=120, width=216, num_objects=2)
    last = len(video.frames) - 1
    ids = list(video.object_ids)
    both = list(segment_video(video.frames, {last: video.labels[last]}, model=demo, options=EXACT))
    # each frame once: the backward pass from the annotation down to frame 0, then the annotated frame
    # itself from the forward pass (annotated frames always are)
    assert [r.index for r in both] == [*range(last - 1, -1, -1), last]
    assert [r.direction for r in both] == ["backward"] * last + ["forward"]
    by_index = {r.index: r for r in both}
    scores = [_jf(video.labels[t], by_index[t].labels, ids) for t in range(last)]
    assert scores[0] > 85 and min(scores) > 85, scores  # measured: 91.1 at frame 0, all >= 89.4
    assert set(np.unique(by_index[0].labels)) == {0, *ids}

    forward = list(segment_video(video.frames, {last: video.labels[last]}, model=demo, options=EXACT,
                                 direction="forward"))
    assert [r.index for r in forward] == list(range(last + 1))
    assert all(not r.labels.any() for r in forward[:last])  # before the annotation: background
    np.testing.assert_array_equal(forward[last].labels, by_index[last].labels)


def test_forward_frames_equal_forward_mode_backward_frames_equal_a_reversed_run(demo):
    video = generate_video(100, num_frames=12, height=120, width=216, num_objects=2)
    masks = {2: video.labels[2], 8: video.labels[8]}
    forward = {r.index: r for r in segment_video(video.frames, masks, model=demo, options=EXACT,
                                                 direction="forward")}
    both = list(segment_video(video.frames, masks, model=demo, options=EXACT))
    assert sorted(r.index for r in both) == list(range(12))  # every frame exactly once
    plan = plan_directions(12, masks)
    for r in both:
        assert r.direction == plan[r.index]
        if r.direction == "forward":  # the forward pass is the forward mode's, bit for bit
            assert torch.equal(r.probs, forward[r.index].probs)
    # the backward pass is the engine stepped over the reversed frames from the last annotation
    core = InferenceCore(demo, size=-1, precision="fp32")
    backward = {}
    with torch.inference_mode():
        for t in range(8, -1, -1):
            backward[t] = core.step(video.frames[t], masks.get(t))
    for r in both:
        if r.direction == "backward":
            assert torch.equal(r.probs, backward[r.index])
    assert {r.index for r in both if r.direction == "backward"} == {0, 1, 6, 7}


def test_frame_0_annotation_both_equals_forward(demo):
    video = generate_video(101, num_frames=8, height=120, width=216, num_objects=2)
    a = list(segment_video(video.frames, {0: video.labels[0]}, model=demo, options=EXACT))
    b = list(segment_video(video.frames, {0: video.labels[0]}, model=demo, options=EXACT, direction="forward"))
    assert [r.index for r in a] == list(range(8))
    for x, y in zip(a, b):
        assert torch.equal(x.probs, y.probs)


def test_cli_mp4_backwards_with_overlay(tmp_path, capsys, demo):
    import av

    from stcn.io.frames import iter_frames
    from stcn.io.writers import pick_video_encoder

    video = generate_video(101, num_frames=10, height=64, width=96, num_objects=2)
    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream(pick_video_encoder(), rate=24)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.gop_size = 4  # several groups of pictures: the reverse reader seeks back between them
        for frame in video.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (tmp_path / "masks").mkdir()
    Image.fromarray(video.labels[6]).save(tmp_path / "masks" / "00006.png")
    out = tmp_path / "out"
    code = main(["segment", str(clip), "--mask", str(tmp_path / "masks"), "--out", str(out), "--weights", "demo",
                 "--size", "-1", "--precision", "fp32", "--device", "cpu", "--overlay", str(out / "o.mp4")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    decoded = [f for _, f in iter_frames(clip)]
    core = InferenceCore(demo, size=-1, precision="fp32")
    expected = {}
    with torch.inference_mode():
        for t in range(6, -1, -1):
            expected[t] = core.labels(core.step(decoded[t], video.labels[6] if t == 6 else None))
    for t in range(7):
        with Image.open(out / f"{t:05d}.png") as image:
            np.testing.assert_array_equal(np.array(image), expected[t], err_msg=f"frame {t}")
    assert np.array(Image.open(out / "00000.png")).any()  # objects before the annotation
    with av.open(str(out / "o.mp4")) as container:
        assert sum(1 for _ in container.decode(container.streams.video[0])) == 10  # every frame, in order
