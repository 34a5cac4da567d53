"""Training clips longer than the paper's 3 frames (``--clip-frames``): sampling, the clip pass, the loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from stcn.cli import main
from stcn.data.synthetic_clips import SyntheticClipConfig, SyntheticClips, sample_frame_indices
from stcn.model import STCN
from stcn.train.clip_pass import forward_clip
from stcn.train.losses import clip_losses
from stcn.train.presets import stage_config
from stcn.train.trainer import Trainer

TINY = dict(crop=64, video_frames=16, video_height=64, video_width=96, pool_size=4)


@pytest.mark.parametrize("count", [2, 4, 6, 8])
def test_long_clips_are_ordered_gapped_by_at_most_the_skip_and_inside_the_video(count):
    rng = np.random.default_rng(1)
    reversed_seen = 0
    for _ in range(300):
        idx = sample_frame_indices(rng, 24, 4, count)
        ordered = sorted(idx)
        assert len(idx) == count and idx in (ordered, ordered[::-1])
        reversed_seen += idx != ordered
        gaps = np.diff(ordered)
        assert ordered[0] >= 0 and ordered[-1] <= 23
        assert (gaps >= 1).all() and (gaps <= 4).all()  # distinct frames, at most max_skip apart
    assert 100 < reversed_seen < 200  # reversed with p = 0.5


def test_a_video_too_short_for_the_gaps_still_gives_distinct_frames_or_every_frame():
    rng = np.random.default_rng(2)
    for _ in range(50):
        idx = sorted(sample_frame_indices(rng, 8, 8, 6))  # 5 gaps of up to 8 rarely fit 8 frames
        assert len(set(idx)) == 6 and idx[-1] <= 7
    assert sorted(sample_frame_indices(rng, 6, 8, 6)) == [0, 1, 2, 3, 4, 5]
    assert sorted(sample_frame_indices(rng, 3, 5, 5)) == [0, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="at least 2"):
        sample_frame_indices(rng, 10, 5, 1)


def test_the_paper_clip_draws_are_unchanged_by_the_count_argument():
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [sample_frame_indices(a, 20, 5) for _ in range(50)] == [sample_frame_indices(b, 20, 5, 3)
                                                                    for _ in range(50)]


def test_long_synthetic_clips_have_t_frames_and_the_same_first_object():
    item = SyntheticClips(4, config=SyntheticClipConfig(**TINY, clip_frames=6))[2]
    assert item["rgb"].shape == (6, 3, 64, 64) and item["gt"].shape == (6, 1, 64, 64)
    assert item["cls_gt"].shape == (6, 64, 64)
    assert item["gt"][0].sum() > 0
    assert torch.equal(item["cls_gt"], (item["gt"][:, 0] + 2 * item["sec_gt"][:, 0]).long())


@pytest.mark.parametrize("single_object", [False, True])
def test_a_long_clip_pass_is_causal_and_its_prefix_is_the_three_frame_pass(single_object):
    """Frame i is segmented from frames 0..i-1 only: the first 3 frames of a 5-frame pass give exactly
    what the paper's 3-frame pass gives on those frames, and every later frame has its output."""
    torch.manual_seed(0)
    net = STCN(single_object=single_object).eval()
    frames = torch.randn(1, 5, 3, 32, 32)
    gt = (torch.rand(1, 5, 1, 32, 32) > 0.5).float()
    extra = () if single_object else (1 - gt, torch.ones(1, 2))
    with torch.no_grad():
        long = forward_clip(net, frames, gt, *extra)
        short = forward_clip(net, frames[:, :3], gt[:, :3], *[x[:, :3] if x.dim() == 5 else x for x in extra])
    assert sorted(k for k in long if k.startswith("logits")) == [f"logits_{i}" for i in range(1, 5)]
    for name in short:
        torch.testing.assert_close(long[name], short[name], rtol=1e-5, atol=1e-6)
    # frame 4 reads 4 memory frames: changing frame 3 (a memory frame of frame 4 only) moves frame 4 alone
    changed = frames.clone()
    changed[:, 3] = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        moved = forward_clip(net, changed, gt, *extra)
    torch.testing.assert_close(moved["logits_2"], long["logits_2"], rtol=1e-5, atol=1e-6)
    assert (moved["logits_4"] - long["logits_4"]).abs().max() > 1e-3


def test_the_loss_of_a_long_clip_counts_every_later_frame_and_memory_holds_the_predictions_graph():
    torch.manual_seed(0)
    net = STCN(single_object=True).eval()
    frames = torch.randn(1, 4, 3, 32, 32)
    gt = (torch.rand(1, 4, 1, 32, 32) > 0.5).float()
    encoded = []
    encode_value = net.encode_value

    def spy(frame, f16, mask, others):
        encoded.append(mask)
        return encode_value(frame, f16, mask, others)

    net.encode_value = spy
    out = forward_clip(net, frames, gt)
    # frames 0, 1, 2 enter memory (the last frame is only a query); 1 and 2 with their predicted masks,
    # not detached, so frame 3's loss reaches the earlier predictions
    assert len(encoded) == 3 and torch.equal(encoded[0], gt[:, 0])
    assert not encoded[0].requires_grad and encoded[1].grad_fn is not None and encoded[2].grad_fn is not None
    torch.testing.assert_close(encoded[2], out["mask_2"])
    losses = clip_losses(out, gt[:, :, 0].long(), gt, it=0, start=10)
    assert {"loss_1", "loss_2", "loss_3"} <= set(losses)
    torch.testing.assert_close(losses["total_loss"], losses["loss_1"] + losses["loss_2"] + losses["loss_3"])


def test_the_trainer_learns_on_long_clips_and_logs_every_frame(tmp_path):
    config = stage_config("synthetic", iterations=2, batch_size=2, crop=64, clip_frames=5, save_every=2)
    dataset = SyntheticClips(4, seed=config.seed, config=SyntheticClipConfig(**TINY, clip_frames=5))
    trainer = Trainer(config, dataset, tmp_path)
    items = [dataset[i] for i in range(2)]
    batch = {k: torch.stack([x[k] for x in items]) for k in items[0]}
    first = trainer.train_step(batch)
    assert {"loss_1", "loss_4"} <= set(first)
    for _ in range(4):
        last = trainer.train_step(batch)
    assert last["total_loss"] < first["total_loss"]
    grid = trainer._images()["clip/frames_gt_pred"]
    assert grid.shape == (3, 3 * 64, 5 * 64)  # frames / ground truth / predictions, 5 columns


def test_clip_frames_reach_the_dataset_and_are_refused_where_clips_are_the_papers(tmp_path, capsys):
    from types import SimpleNamespace

    from stcn.train.datasets import build_dataset

    config = stage_config("synthetic", iterations=2, batch_size=1, crop=64, clip_frames=4)
    assert build_dataset(config, SimpleNamespace(), 1).config.clip_frames == 4
    assert main(["train", "--stage", "0", "--run-dir", str(tmp_path / "r"), "--static-root", str(tmp_path),
                 "--clip-frames", "5"]) != 0
    assert "--clip-frames applies to --stage synthetic / real-video only" in capsys.readouterr().err
    assert main(["train", "--stage", "synthetic", "--run-dir", str(tmp_path / "r"), "--clip-frames", "40"]) != 0
    assert "must lie in 2..16" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before anything is written
