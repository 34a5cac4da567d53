"""Training data sets in the original layouts: clip shapes and ranges, masks aligned with their images
under every augmentation, the sampling rules (objects, skips, repeats), and clear errors."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from PIL import Image

from stcn.cli import main
from stcn.data import video_training as video_module
from stcn.data.static import StaticAugmentConfig, static_clip
from stcn.data.synthetic import generate_video, write_davis
from stcn.data.training import TrainingClips, build_stage_dataset, davis_youtube_sources
from stcn.data.video_training import VideoAugmentConfig, VideoClips, find_sequences, write_sequence_folders
from stcn.errors import DataError, UserError
from stcn.io.masks import save_label_png
from stcn.model.input import IMAGENET_MEAN, IMAGENET_STD
from stcn.train.presets import stage_config

CROP = 64
MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def _pair(folder, name, rng, size=(48, 64)):
    h, w = size
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{name}.jpg")
    Image.fromarray(mask).save(folder / f"{name}.png")


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """Tiny data sets in the original layouts: static (FSS class folders, flat DUTS, BIG), DAVIS
    2017 trainval, YouTube-VOS train_480p (every 5th frame), BL30K."""
    base = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    static = base / "static"
    for cls in ("cat", "dog"):
        _pair(static / "fss" / cls, "1", rng)
    for i in range(3):
        _pair(static / "DUTS-TR", f"sun_{i}", rng)
    _pair(static / "BIG_small", "big", rng, size=(96, 80))
    kw = {"height": 48, "width": 64, "num_objects": 2}
    davis = write_davis(base / "DAVIS" / "2017" / "trainval",
                        {f"d{i}": generate_video(i, num_frames=8, **kw) for i in range(2)}, split="train")
    (davis / "ImageSets" / "2017" / "val.txt").write_text("d9\n")
    write_davis(davis, {"d9": generate_video(9, num_frames=8, **kw)}, split="val")  # not a training sequence
    youtube = base / "YouTube"
    write_sequence_folders(youtube / "train_480p" / "JPEGImages", youtube / "train_480p" / "Annotations",
                           {f"y{i}": generate_video(20 + i, num_frames=25, appear_on_multiple_of=5, **kw)
                            for i in range(3)}, step=5)
    bl30k = base / "BL30K"
    write_sequence_folders(bl30k / "JPEGImages", bl30k / "Annotations",
                           {"b0": generate_video(40, num_frames=6, **kw)})
    return argparse.Namespace(static_root=static, davis_root=base / "DAVIS", youtube_root=youtube,
                              bl30k_root=bl30k, base=base)


def _config(stage, **kw):
    return stage_config(stage, crop=CROP, batch_size=2, iterations=10, **kw)


def _check_item(item, single=False):
    assert item["rgb"].shape == (3, 3, CROP, CROP) and item["rgb"].dtype == torch.float32
    rgb = item["rgb"] * STD + MEAN
    assert rgb.min() >= -1e-5 and rgb.max() <= 1 + 1e-5
    for key in ("gt", "sec_gt"):
        assert item[key].shape == (3, 1, CROP, CROP) and item[key].dtype == torch.float32
        assert item[key].min() >= 0 and item[key].max() <= 1
    assert item["cls_gt"].shape == (3, CROP, CROP) and item["cls_gt"].dtype == torch.int64
    assert item["selector"].shape == (2,) and item["selector"][0] == 1
    expected = (item["gt"][:, 0] > 0.5).long() + 2 * (item["sec_gt"][:, 0] > 0.5).long()
    assert torch.equal(item["cls_gt"], expected)
    assert not ((item["gt"] > 0.5) & (item["sec_gt"] > 0.5)).any()
    if item["selector"][1] == 0:
        assert item["sec_gt"].sum() == 0
    if single:
        assert item["selector"][1] == 0


def test_static_stage_clips(roots):
    ds = build_stage_dataset(_config("0"), roots, 1)
    assert len(ds) == 2 + 3 + 5 * 1  # fss, DUTS-TR, BIG (counted five times)
    assert {s.name for s in ds.sources} == {"fss", "DUTS-TR", "BIG_small"}
    item = ds[3]
    _check_item(item, single=True)
    assert set(item["cls_gt"].unique().tolist()) == {0, 1}
    # a pure function of (seed, index): the same item again (a resumed run), another for another index
    again = build_stage_dataset(_config("0"), roots, 1)[3]
    assert all(torch.equal(item[k], again[k]) for k in item)
    assert not torch.equal(item["rgb"], ds[4]["rgb"])
    # indices past the epoch wrap into the next epoch's permutation
    _check_item(ds[len(ds) + 7], single=True)


def test_video_stage_clips(roots):
    ds = build_stage_dataset(_config("3"), roots, 1)
    davis, youtube = ds.sources
    assert [s.name for s in davis.sequences] == ["d0", "d1"]  # ImageSets/2017/train.txt only
    assert len(youtube) == 3 and youtube.skip_divisor == 5
    assert len(ds) == 5 * 2 + 3  # DAVIS counted five times
    seen_second = False
    for i in range(6):
        item = ds[i]
        _check_item(item)
        assert item["gt"][0].sum() > 0  # the target object is in the reference frame
        seen_second |= bool(item["selector"][1])
    assert seen_second
    item = ds[2]
    again = build_stage_dataset(_config("3"), roots, 1)[2]
    assert all(torch.equal(item[k], again[k]) for k in item)


def test_bl30k_stage_clips(roots):
    ds = build_stage_dataset(_config("1"), roots, 1)
    assert ds.sources[0].small_object_filter and ds.sources[0].config.crop_scale == (0.25, 1.0)
    _check_item(ds[0])


def test_epoch_is_a_permutation_of_the_repeated_sources(roots):
    ds = TrainingClips(davis_youtube_sources(roots.davis_root, roots.youtube_root, crop=CROP), seed=3)
    counts: dict = {}
    for i in range(len(ds)):
        source, position = ds.locate(i)
        counts[(source.name, position)] = counts.get((source.name, position), 0) + 1
    assert counts == {("DAVIS", 0): 5, ("DAVIS", 1): 5, ("YouTube-VOS", 0): 1, ("YouTube-VOS", 1): 1,
                      ("YouTube-VOS", 2): 1}
    first = [ds.locate(i) for i in range(len(ds))]
    second = [ds.locate(len(ds) + i) for i in range(len(ds))]
    assert first != second  # each epoch has its own order


def test_skip_curriculum_and_youtube_division(roots, monkeypatch):
    """The max skip is config.max_skip(index // (batch * world)), divided by 5 for YouTube-VOS."""
    config = stage_config("3", crop=CROP, batch_size=2, schedule_length=10)  # skips 5, 10 @1, 15 @2...
    ds = build_stage_dataset(config, roots, 2)
    recorded = []
    original = video_module.sample_frame_indices

    def spy(rng, n, skip):
        recorded.append((n, skip))
        return original(rng, n, skip)

    monkeypatch.setattr(video_module, "sample_frame_indices", spy)
    for index in (0, 3, 4, 8, 12, 19):
        recorded.clear()
        source, _ = ds.locate(index)
        ds[index]
        expected = config.max_skip(index // 4)
        if source.name == "YouTube-VOS":
            expected = max(1, expected // 5)
        assert recorded[0][1] == expected, (index, source.name)


def test_frames_are_sampled_by_the_paper_rule(roots, monkeypatch):
    recorded = []
    original = video_module.sample_frame_indices
    monkeypatch.setattr(video_module, "sample_frame_indices",
                        lambda rng, n, s: recorded.append(original(rng, n, s)) or recorded[-1])
    davis = video_module.davis_training_set(roots.davis_root, VideoAugmentConfig(crop=CROP))
    for seed in range(10):
        davis.clip(seed % 2, np.random.default_rng(seed), 3)
    for idx in recorded:
        ordered = sorted(idx)
        assert idx in (ordered, ordered[::-1]) and ordered[1] - ordered[0] <= 4 and ordered[2] - ordered[1] <= 4
    assert any(idx[0] > idx[-1] for idx in recorded) and any(idx[0] < idx[-1] for idx in recorded)


def test_bl30k_small_objects_are_not_picked():
    clips = VideoClips([], name="BL30K", config=VideoAugmentConfig(crop=384), small_object_filter=True)
    masks = [np.zeros((384, 384), np.uint8) for _ in range(3)]
    masks[0][:9, :9] = 1  # 81 px: too small
    masks[0][100:125, 100:125] = 2  # 625 px, stays small: kept
    masks[0][200:225, 200:225] = 3  # 625 px now, but large later: dropped
    masks[1][200:260, 200:260] = 3
    masks[0][300:340, 300:340] = 4  # 1600 px: kept
    assert clips._usable_objects(masks) == [2, 4]
    plain = VideoClips([], name="DAVIS", config=VideoAugmentConfig(crop=384))
    assert plain._usable_objects(masks) == [1, 2, 3, 4]


# --------------------------------------------------------------------------------------------------
# Alignment of masks and images under the augmentations
# --------------------------------------------------------------------------------------------------


def _encoded(h, w, rng, mask):
    """An image whose red channel says where the mask is; green/blue low and random."""
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.where(mask, 255, 0)
    image[..., 1] = rng.integers(0, 33, (h, w))
    image[..., 2] = rng.integers(0, 17, (h, w))
    return image


def _shape(h, w, shift=0):
    yy, xx = np.mgrid[:h, :w]
    ellipse = ((yy - h / 2) ** 2 / (h / 3) ** 2 + (xx - w / 2.5 - shift) ** 2 / (w / 3.5) ** 2) < 1
    return ellipse | ((xx > 0.8 * w) & (yy < 0.25 * h))


def _band(x: torch.Tensor, k: int) -> torch.Tensor:
    """Pixels within k // 2 of the edge of the binary map x."""
    x = x.float()[None, None]
    return ((nnf.max_pool2d(x, k, 1, k // 2) > 0) & (nnf.max_pool2d(-x, k, 1, k // 2) >= 0))[0, 0]


def _disagreement(rgb: torch.Tensor, mask: torch.Tensor) -> tuple[int, int, int]:
    """Compare 'red' (where the image says the object is) with mask > 0.5: (pixels that disagree,
    pixels on the mask's edge, disagreeing pixels farther than 2 px from the edges of both).
    Greyscale frames (the 5 % greyscale augmentation) give zeros."""
    if (rgb[0] - rgb[1]).abs().median() < 0.01:
        return 0, 0, 0
    red = (rgb[0] - rgb[1]) > 0.3
    gt = mask > 0.5
    differ = red ^ gt
    edge = gt & (nnf.max_pool2d(-gt.float()[None, None], 3, 1, 1)[0, 0] >= 0)
    far = differ & ~(_band(gt, 5) | _band(red, 5))
    return int(differ.sum()), int(edge.sum()), int(far.sum())


def _aligned(pairs) -> tuple[float, int]:
    """(disagreeing pixels per mask-edge pixel, disagreements away from any edge) over the pairs. An
    aligned pipeline gives about 0.4 (interpolation at the edges); a mask shifted by 2 px, over 1."""
    totals = np.zeros(3)
    for rgb, mask in pairs:
        totals += _disagreement(rgb, mask)
    assert totals[1] > 1000  # enough edge compared
    return totals[0] / totals[1], int(totals[2])


def _static_pairs(image, mask, seeds, **config):
    for seed in seeds:
        config.setdefault("crop", CROP)
        images, masks = static_clip(image, mask, np.random.default_rng(seed),
                                    StaticAugmentConfig(**{"tps_p": 1.0 if seed % 2 else 1 / 3, **config}))
        assert images.shape == (3, 3, CROP, CROP) and masks.shape == (3, 1, CROP, CROP)
        yield from ((images[t], masks[t, 0]) for t in range(3))


def test_static_masks_stay_aligned_with_images():
    """Every augmentation (the TPS warp in half the clips) moves image and mask together."""
    rng = np.random.default_rng(1)
    h, w = 90, 120
    image = _encoded(h, w, rng, _shape(h, w))
    ratio, far = _aligned(_static_pairs(image, _shape(h, w).astype(np.uint8) * 255, range(24)))
    assert ratio < 0.6 and far == 0, (ratio, far)


def test_static_misalignment_would_be_caught():
    """The same check fails for a mask shifted by 3 pixels."""
    rng = np.random.default_rng(1)
    h, w = 90, 120
    image = _encoded(h, w, rng, _shape(h, w))
    ratio, _ = _aligned(_static_pairs(image, _shape(h, w, shift=3).astype(np.uint8) * 255, range(12)))
    assert ratio > 0.8


def test_video_masks_stay_aligned_with_images(tmp_path):
    rng = np.random.default_rng(2)
    h, w = 72, 96
    root = tmp_path / "DAVIS"
    for name in ("a", "b"):
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for t in range(6):
            mask = _shape(h, w, shift=2 * t)
            labels = mask.astype(np.uint8) * (1 if name == "a" else 3)
            Image.fromarray(_encoded(h, w, rng, mask)).save(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg",
                                                              quality=100, subsampling=0)
            save_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", labels)
    for bl30k in (False, True):
        config = VideoAugmentConfig(crop=CROP, crop_scale=(0.25, 1.0) if bl30k else (0.36, 1.0))
        clips = VideoClips(find_sequences(root / "JPEGImages" / "480p", root / "Annotations" / "480p", what="t",
                                          expected="t"), name="t", config=config, small_object_filter=bl30k)
        pairs = []
        for seed in range(12):
            item = clips.clip(seed % 2, np.random.default_rng(seed), 3)
            _check_item(item)
            rgb = item["rgb"] * STD + MEAN
            pairs += [(rgb[t], item["gt"][t, 0]) for t in range(3)]
        ratio, far = _aligned(pairs)
        assert ratio < 0.6 and far <= 2, (bl30k, ratio, far)


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------


def test_missing_and_malformed_datasets(roots, tmp_path):
    args = argparse.Namespace(static_root=None, davis_root=tmp_path / "nowhere", youtube_root=roots.youtube_root,
                              bl30k_root=tmp_path / "empty")
    with pytest.raises(UserError, match="--static-root"):
        build_stage_dataset(_config("0"), args, 1)
    with pytest.raises(DataError, match=r"DAVIS root .*nowhere.*JPEGImages/480p"):
        build_stage_dataset(_config("2"), args, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"BL30K root .*empty: no JPEGImages"):
        build_stage_dataset(_config("1"), args, 1)
    # a sequence whose mask is missing
    broken = tmp_path / "bl"
    write_sequence_folders(broken / "JPEGImages", broken / "Annotations",
                           {"s": generate_video(1, num_frames=4, height=32, width=32, num_objects=1)})
    (broken / "Annotations" / "s" / "00002.png").unlink()
    with pytest.raises(DataError, match=r"Annotations/s/00002.png not found \(the mask of .*00002.jpg\)"):
        build_stage_dataset(_config("1"), argparse.Namespace(bl30k_root=broken), 1)
    # YouTube-VOS not yet resized
    (tmp_path / "yt" / "train" / "JPEGImages").mkdir(parents=True)
    with pytest.raises(DataError, match="stcn data resize-youtube"):
        video_module.youtube_training_set(tmp_path / "yt")
    # static: an image without its mask, and a mask of another size
    static = tmp_path / "static"
    _pair(static / "ecssd", "0", np.random.default_rng(0))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(static / "ecssd" / "lonely.jpg")
    with pytest.raises(DataError, match=r"lonely.jpg: no mask lonely.png"):
        build_stage_dataset(_config("0"), argparse.Namespace(static_root=static), 1)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(static / "ecssd" / "lonely.png")
    ds = build_stage_dataset(_config("0"), argparse.Namespace(static_root=static), 1)
    with pytest.raises(DataError, match=r"lonely.png: mask is 9x9 but lonely.jpg is 8x8"):
        for i in range(len(ds)):
            ds[i]


def test_cli_names_the_missing_dataset(roots, tmp_path, capsys):
    status = main(["train", "--stage", "3", "--run-dir", str(tmp_path / "run"), "--davis-root", str(tmp_path / "x"),
                   "--youtube-root", str(roots.youtube_root), "--model", "small", "--no-pretrained"])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0 and "DAVIS root" in err and str(tmp_path / "x") in err


def test_cli_trains_on_the_datasets(roots, tmp_path):
    """One iteration of stage 0 (single object) and stage 3 (two objects) on the tiny data sets."""
    common = ["--iterations", "1", "--batch-size", "1", "--crop", str(CROP), "--model", "small", "--no-pretrained",
              "--save-every", "1"]
    assert main(["train", "--stage", "0", "--run-dir", str(tmp_path / "s0"), "--static-root",
                 str(roots.static_root)] + common) == 0
    assert main(["train", "--stage", "3", "--run-dir", str(tmp_path / "s3"), "--davis-root", str(roots.davis_root),
                 "--youtube-root", str(roots.youtube_root)] + common) == 0
    for run in ("s0", "s3"):
        log = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        assert log[-1]["it"] == 1 and np.isfinite(log[-1]["loss/total_loss"])
        assert (tmp_path / run / "final.safetensors").is_file()
