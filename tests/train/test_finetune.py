"""stcn train --stage finetune: sparse DIRs, clips of annotated frames only, errors, preset from the
checkpoint, exact resume, held-out J&F rising on a shifted synthetic domain."""
from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

import stcn
from stcn.cli import main
from stcn.data.finetune_set import read_finetune_set
from stcn.data.shifted_domain import write_sparse_set
from stcn.errors import DataError, UserError
from stcn.train.finetune import checkpoint_preset, finetune_dataset
from stcn.train.presets import stage_config

SMALL = dict(num_frames=9, height=64, width=80)


@pytest.fixture(scope="module")
def sparse_dir(tmp_path_factory):
    """5 videos of 9 frames, masks on frames 0, 2, 4, 6, 8."""
    return write_sparse_set(tmp_path_factory.mktemp("ft") / "data", range(5), annotate_every=2, **SMALL)


def _copy(src, tmp_path):
    dst = tmp_path / "data"
    shutil.copytree(src, dst)
    return dst


def test_clips_use_annotated_frames_only_and_are_a_pure_function_of_the_index(sparse_dir):
    data = read_finetune_set(sparse_dir)
    assert [v.annotated for v in data.train] == [(0, 2, 4, 6, 8)] * 5 and all(v.gap == 2 for v in data.train)
    config = stage_config("finetune", crop=48)
    dataset = finetune_dataset(config, data)
    # every clip frame is an annotated frame: sequences hold only the annotated frames' names
    for source in dataset.sources:
        assert all(int(f[:5]) % 2 == 0 for f in source.sequences[0].frames)
    item = dataset[3]
    assert item["rgb"].shape == (3, 3, 48, 48) and item["cls_gt"].shape == (3, 48, 48)
    again = pickle.loads(pickle.dumps(dataset))[3]  # picklable (spawned workers, torchrun): same item
    assert all(torch.equal(item[k], again[k]) for k in item)
    assert not torch.equal(dataset[4]["rgb"], item["rgb"])


def test_held_out_videos_are_chosen_by_name(sparse_dir, tmp_path):
    data = read_finetune_set(sparse_dir, val_fraction=0.4)
    assert len(data.val) == 2 and len(data.train) == 3
    held = {v.name for v in data.val}
    # removing a training video does not change which of the others are held out
    smaller = _copy(sparse_dir, tmp_path)
    gone = data.train[0].name
    shutil.rmtree(smaller / "JPEGImages" / gone)
    shutil.rmtree(smaller / "Annotations" / gone)
    assert {v.name for v in read_finetune_set(smaller, val_fraction=0.5).val} == held


@pytest.mark.parametrize("breakage, message", [
    ("no_annotations_folder", "Annotations not found"),
    ("video_without_masks", "has no annotation"),
    ("too_few_masks", "at least 3 annotated frames"),
    ("wrong_mask_size", "mask is 8x8 but its image"),
])
def test_bad_dirs_give_one_line_errors(sparse_dir, tmp_path, breakage, message):
    from PIL import Image

    root = _copy(sparse_dir, tmp_path)
    if breakage == "no_annotations_folder":
        shutil.rmtree(root / "Annotations")
    elif breakage == "video_without_masks":
        for f in (root / "Annotations" / "v0001").iterdir():
            f.unlink()
    elif breakage == "too_few_masks":
        for video in (root / "Annotations").iterdir():
            for f in sorted(video.iterdir())[2:]:
                f.unlink()
    else:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "Annotations" / "v0002" / "00004.png")
    with pytest.raises(DataError, match=message) as err:
        read_finetune_set(root)
    assert "\n" not in str(err.value)


def test_cli_errors_exit_2_with_one_line(sparse_dir, tmp_path, capsys):
    assert main(["train", "--stage", "finetune", "--run-dir", str(tmp_path / "r"), "--load-network", "demo"]) == 2
    assert "--data DIR" in capsys.readouterr().err
    assert main(["train", "--stage", "finetune", "--run-dir", str(tmp_path / "r"), "--data", str(sparse_dir),
                 "--load-network", "demo", "--model", "stcn"]) == 2
    err = capsys.readouterr().err
    assert "holds the small network" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_network_preset_comes_from_the_checkpoint(tmp_path):
    from stcn.model.network import PRESETS, STCN
    from stcn.weights.io import save_safetensors
    from stcn.weights.registry import resolve

    assert checkpoint_preset(resolve("demo")) == "small"
    with torch.device("meta"):
        paper = STCN(PRESETS["stcn"])
    sd = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in paper.state_dict().items()}
    save_safetensors(sd, tmp_path / "paper.safetensors", {})  # records no config: the paper's network
    assert checkpoint_preset(tmp_path / "paper.safetensors") == "stcn"
    with pytest.raises(UserError, match="none of the presets"):
        odd = PRESETS["small"].__class__(key_backbone="resnet18", value_dim=64, decoder_dim=64)
        save_safetensors({"x": torch.zeros(1)}, tmp_path / "odd.safetensors", {"stcn_config": odd.to_json()})
        checkpoint_preset(tmp_path / "odd.safetensors")


def test_finetune_resume_equals_uninterrupted(sparse_dir, tmp_path):
    """--iterations 4 in one go and 2 then --resume to 4: identical weights (no held-out videos: the
    held-out report is checked by test_finetune_domain.py)."""
    torch.use_deterministic_algorithms(True)
    try:
        common = ["train", "--stage", "finetune", "--data", str(sparse_dir), "--load-network", "demo",
                  "--batch-size", "2", "--crop", "48", "--save-every", "2"]
        assert main(common + ["--run-dir", str(tmp_path / "a"), "--iterations", "4"]) == 0
        assert main(common + ["--run-dir", str(tmp_path / "b"), "--iterations", "2"]) == 0
        assert main(common + ["--run-dir", str(tmp_path / "b"), "--iterations", "4", "--resume"]) == 0
    finally:
        torch.use_deterministic_algorithms(False)
    a = stcn.read_checkpoint(tmp_path / "a" / "final.safetensors").state_dict
    b = stcn.read_checkpoint(tmp_path / "b" / "final.safetensors").state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)
    demo = stcn.read_checkpoint(stcn.weights.registry.resolve("demo")).state_dict
    assert not torch.equal(a["decoder.pred.weight"], demo["decoder.pred.weight"])  # it did train from demo
    # frozen BatchNorm: the running statistics are the demo model's
    bn = [k for k in demo if k.endswith("running_mean")]
    assert bn and all(torch.equal(a[k], demo[k]) for k in bn)
    assert stcn.load_model(tmp_path / "a" / "final.safetensors").config.key_backbone == "resnet18"
    assert json.loads((tmp_path / "a" / "log.jsonl").read_text().splitlines()[-1])["it"] == 4


def test_held_out_scoring_starts_at_the_first_mask_and_scores_annotated_frames_only(sparse_dir, monkeypatch):
    """A prediction right on the annotated frames and wrong on the others scores J&F 1; all background 0."""
    import stcn.inference
    from stcn.io.masks import load_label_png
    from stcn.train.finetune import evaluate_held_out

    video = read_finetune_set(sparse_dir).train[0]
    truth = [load_label_png(video.mask_dir / f"{t:05d}.png") for t in range(0, 9, 2)]
    calls = []

    class Result:
        def __init__(self, labels):
            self.labels = labels

    def fake_segment_video(frames, masks, *, model, options):
        first_mask = masks[0]
        calls.append((len(frames), first_mask.copy()))
        pred = np.full((len(frames), *first_mask.shape), 7, np.uint8)  # wrong everywhere ...
        pred[0::2] = np.stack(truth) if fill else 0  # ... except (fill) on the annotated frames
        return [Result(p) for p in pred]

    monkeypatch.setattr(stcn.inference, "segment_video", fake_segment_video)
    model = torch.nn.Linear(1, 1)
    fill = True
    assert evaluate_held_out(model, [video])["J&F"] == pytest.approx(1.0)
    assert calls[0][0] == 9 and np.array_equal(calls[0][1], truth[0])  # frames 0..8, from the first mask
    fill = False
    assert evaluate_held_out(model, [video])["J&F"] == pytest.approx(0.0)
