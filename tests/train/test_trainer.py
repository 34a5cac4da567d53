"""The training loop: learning happens, resume is exact, checkpoints are safe, stage-0 weights load."""
from __future__ import annotations

import json

import pytest
import torch

import stcn
from stcn.cli import main
from stcn.data.synthetic_clips import SyntheticClipConfig, SyntheticClips, sample_frame_indices
from stcn.train.presets import stage_config
from stcn.train.trainer import Trainer, extend_single_object_state

TINY = dict(crop=64, video_frames=10, video_height=64, video_width=96, pool_size=6)


def _trainer(tmp_path, iterations=4, **overrides):
    config = stage_config("synthetic", iterations=iterations, batch_size=2, crop=64, save_every=2, **overrides)
    dataset = SyntheticClips(iterations * 2, seed=config.seed, config=SyntheticClipConfig(**TINY))
    return Trainer(config, dataset, tmp_path)


def test_clips_have_the_right_shapes_and_values():
    item = SyntheticClips(4, config=SyntheticClipConfig(**TINY))[1]
    assert item["rgb"].shape == (3, 3, 64, 64) and item["gt"].shape == (3, 1, 64, 64)
    assert item["cls_gt"].shape == (3, 64, 64) and item["cls_gt"].dtype == torch.int64
    assert set(item["gt"].unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(item["cls_gt"], (item["gt"][:, 0] + 2 * item["sec_gt"][:, 0]).long())
    assert item["gt"][0].sum() > 0  # the first object is visible in the first frame
    # identical for the same index (resume replays the same data), different otherwise
    again = SyntheticClips(4, config=SyntheticClipConfig(**TINY))[1]
    assert all(torch.equal(item[k], again[k]) for k in item)


def test_frame_sampling_follows_the_paper_rule():
    import numpy as np

    rng = np.random.default_rng(0)
    for _ in range(500):
        idx = sample_frame_indices(rng, 20, 5)
        ordered = sorted(idx)
        assert idx in (ordered, ordered[::-1])
        assert 0 <= ordered[0] and ordered[2] <= 19 and ordered[1] - ordered[0] <= 6 and ordered[2] - ordered[1] <= 6


def test_one_step_lowers_the_loss_on_its_batch(tmp_path):
    trainer = _trainer(tmp_path)
    items = [trainer.dataset[i] for i in range(2)]
    batch = {k: torch.stack([x[k] for x in items]) for k in items[0]}
    before = {k: v.clone() for k, v in trainer.network.state_dict().items()}
    first = trainer.train_step(batch)["total_loss"]
    changed = [k for k, v in trainer.network.state_dict().items() if not torch.equal(v, before[k])]
    assert "decoder.pred.weight" in changed and "key_encoder.conv1.weight" in changed
    for _ in range(5):
        last = trainer.train_step(batch)["total_loss"]
    assert last < first


def test_resume_equals_uninterrupted(tmp_path):
    """--iterations 4 in one go and --iterations 2 then --resume --iterations 4: identical weights."""
    torch.use_deterministic_algorithms(True)
    try:
        common = ["train", "--stage", "synthetic", "--batch-size", "2", "--crop", "64", "--save-every", "2"]
        assert main(common + ["--run-dir", str(tmp_path / "a"), "--iterations", "4"]) == 0
        assert main(common + ["--run-dir", str(tmp_path / "b"), "--iterations", "2"]) == 0
        assert main(common + ["--run-dir", str(tmp_path / "b"), "--iterations", "4", "--resume"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    a = stcn.read_checkpoint(tmp_path / "a" / "final.safetensors").state_dict
    b = stcn.read_checkpoint(tmp_path / "b" / "final.safetensors").state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = stcn.load_model(tmp_path / "a" / "final.safetensors")
    assert model.config.key_backbone == "resnet18"  # the small preset, rebuilt from the file
    logged = [json.loads(line)["it"] for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert logged[-1] == 4


def test_existing_run_needs_resume(tmp_path, capsys):
    args = ["train", "--stage", "synthetic", "--batch-size", "1", "--crop", "64", "--iterations", "1",
            "--run-dir", str(tmp_path)]
    assert main(args) == 0
    assert main(args) == 2
    assert "--resume" in capsys.readouterr().err


@pytest.mark.filterwarnings("error:Converting a tensor with requires_grad=True")  # issue 18: no such warning
def test_non_finite_loss_stops_with_a_clear_message(tmp_path):
    trainer = _trainer(tmp_path)
    items = [trainer.dataset[i] for i in range(2)]
    batch = {k: torch.stack([x[k] for x in items]) for k in items[0]}
    batch["rgb"][0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(stcn.UserError, match="non-finite loss"):
        trainer.train_step(batch)


def test_stage0_checkpoint_extends_into_multi_object_training(recipe):
    so = recipe.make_state_dict("so", 0)
    extended = extend_single_object_state(so)
    w = extended["value_encoder.conv1.weight"]
    assert w.shape == (64, 5, 7, 7)
    assert torch.equal(w[:, :4], so["value_encoder.conv1.weight"])
    assert w[:, 4].abs().sum() > 0  # orthogonal init, not zeros
    net = stcn.STCN()
    net.load_state_dict(extended)  # fits the multi-object network of stages 1-3
