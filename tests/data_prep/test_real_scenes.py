"""Synthetic video with real appearance: deterministic, labels agree with what is drawn, exits return,
the training clips and both real-data stages run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from stcn.cli import main
from stcn.data.real_scenes import Cutout, RealMaterial, generate_real_video
from stcn.data.synthetic_clips import SyntheticClipConfig, SyntheticClips

GREEN, RED = (20, 200, 20), (220, 20, 20)


def _material(cutout_colour=RED, photo_colour=GREEN) -> RealMaterial:
    y, x = np.mgrid[:60, :40]
    person = ((y - 20) ** 2 / 400 + (x - 20) ** 2 / 150 < 1) | ((abs(x - 20) < 12) & (y > 30))
    photo = np.empty((300, 400, 3), np.uint8)
    photo[:] = photo_colour
    photo[::7] = np.array(photo_colour) // 2  # some structure for the camera to move over
    return RealMaterial(photos=(photo,), cutouts=(Cutout(np.full((60, 40, 3), cutout_colour, np.uint8), person),))


def test_same_seed_same_video_and_another_seed_another():
    m = _material()
    a = generate_real_video(5, m, num_frames=8, height=64, width=96)
    b = generate_real_video(5, m, num_frames=8, height=64, width=96)
    c = generate_real_video(6, m, num_frames=8, height=64, width=96)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.frames, c.frames)
    assert a.frames.shape == (8, 64, 96, 3) and a.labels.shape == (8, 64, 96) and a.object_ids == (1, 2)


def test_labels_are_where_objects_are_drawn():
    """Red cutouts / red-textured shapes over a green photo: a labelled pixel is red, background green."""
    red_photo_texture = RealMaterial(photos=_material().photos, cutouts=_material().cutouts)
    for seed in range(4):
        v = generate_real_video(seed, red_photo_texture, num_frames=6, height=64, width=96, noise_std=0,
                                cutout_fraction=1.0)
        red = v.frames[..., 0].astype(int) > v.frames[..., 1].astype(int)
        inner = np.ones_like(red)
        for t in range(len(v.labels)):  # leave out the one-pixel anti-aliased rim of each object
            lab = v.labels[t]
            edge = np.zeros_like(lab, bool)
            edge[1:] |= lab[1:] != lab[:-1]
            edge[:-1] |= lab[1:] != lab[:-1]
            edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
            edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
            inner[t] = ~edge
        assert ((v.labels > 0) == red)[inner].mean() > 0.999
        for k in v.object_ids:
            assert (v.labels[0] == k).sum() >= 0.01 * 64 * 96  # visible in the first frame


def test_textured_shapes_take_their_texture_from_the_photos():
    m = RealMaterial(photos=(np.full((200, 200, 3), RED, np.uint8),), cutouts=_material().cutouts)
    v = generate_real_video(1, m, num_frames=4, height=64, width=96, noise_std=0, cutout_fraction=0.0)
    # background and shapes come from the same red photo: everything is red, and the labels still hold shapes
    assert (v.frames[..., 0] > v.frames[..., 1]).all() and (v.labels[0] > 0).any()


def test_an_exiting_object_leaves_and_comes_back():
    m = _material()
    for seed in range(20):
        v = generate_real_video(seed, m, num_frames=30, height=64, width=96, num_objects=1, allow_exit=True)
        visible = [(v.labels[t] == 1).sum() for t in range(30)]
        if min(visible) == 0:
            gone = visible.index(0)
            assert max(visible[gone:]) >= 0.01 * 64 * 96
            return
    pytest.fail("no object left the frame in 20 seeds with allow_exit=True")


def test_training_clips_from_real_material():
    config = SyntheticClipConfig(crop=64, video_frames=8, video_height=64, video_width=96, pool_size=3,
                                 material=_material())
    item = SyntheticClips(4, config=config)[2]
    again = SyntheticClips(4, config=config)[2]
    assert item["rgb"].shape == (3, 3, 64, 64) and item["gt"][0].sum() > 0
    assert all(torch.equal(item[k], again[k]) for k in item)


def _static_root(tmp_path):
    root = tmp_path / "static" / "mine"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(root / f"{i}.jpg")
        mask = np.zeros((96, 128), np.uint8)
        mask[20:70, 30:90] = 255
        Image.fromarray(mask).save(root / f"{i}.png")
    return tmp_path / "static"


@pytest.mark.parametrize("stage", ["real-static", "real-video"])
def test_real_stages_fine_tune_the_demo_model(tmp_path, stage, capsys):
    root = _static_root(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--stage", stage, "--static-root", str(root), "--run-dir", str(run), "--iterations", "2",
                 "--batch-size", "1", "--crop", "64", "--load-network", "demo"]) == 0
    assert (run / "final.safetensors").is_file()
    import stcn

    model = stcn.load_model(str(run / "final.safetensors"))
    assert sum(p.numel() for p in model.parameters()) < 10_000_000  # the small preset


def _two_cutout_material() -> RealMaterial:
    """Two cutouts of distinct colours: a look-alike scene must draw every object in one of them."""
    base = _material()
    person = base.cutouts[0].mask
    blue = Cutout(np.full((60, 40, 3), (20, 20, 220), np.uint8), person)
    return RealMaterial(photos=base.photos, cutouts=(base.cutouts[0], blue))


def test_lookalike_scenes_draw_every_object_from_one_cutout():
    m = _two_cutout_material()
    mixed = 0
    for seed in range(6):
        v = generate_real_video(seed, m, num_frames=2, height=96, width=128, noise_std=0, num_objects=3,
                                lookalike=True)
        frame = v.frames[0].astype(int)
        colours = {("red" if frame[v.labels[0] == k][:, 0].mean() > frame[v.labels[0] == k][:, 2].mean()
                    else "blue") for k in v.object_ids}
        assert len(colours) == 1, seed
        other = generate_real_video(seed, m, num_frames=2, height=96, width=128, noise_std=0, num_objects=3,
                                    cutout_fraction=1.0)
        f = other.frames[0].astype(int)
        mixed += len({f[other.labels[0] == k][:, 0].mean() > f[other.labels[0] == k][:, 2].mean()
                      for k in other.object_ids}) > 1
    assert mixed > 0  # without lookalike the same seeds do mix the two cutouts


def test_plain_fraction_mixes_plain_synthetic_videos_into_the_pool():
    from stcn.data.synthetic import SyntheticVideo

    shape = dict(crop=64, video_frames=4, video_height=64, video_width=96, pool_size=20)
    plain_pool = SyntheticClips(4, config=SyntheticClipConfig(**shape))

    def kinds(plain: float) -> list[bool]:
        """Per pool video: is it exactly the plain generator's video of the same number?"""
        config = SyntheticClipConfig(**shape, material=_material(), plain_fraction=plain)
        clips = SyntheticClips(4, config=config)
        videos = [clips.video(n) for n in range(20)]
        assert all(isinstance(v, SyntheticVideo) for v in videos)
        return [np.array_equal(v.frames, plain_pool.video(n).frames) for n, v in enumerate(videos)]

    assert not any(kinds(0.0))
    assert all(kinds(1.0))
    assert 3 <= sum(kinds(0.5)) <= 17


def test_mix_flags_are_stored_in_the_run_config_and_checked(tmp_path, capsys):
    import yaml

    root = _static_root(tmp_path)
    run = tmp_path / "run"
    args = ["train", "--stage", "real-video", "--static-root", str(root), "--run-dir", str(run), "--iterations",
            "1", "--batch-size", "1", "--crop", "64", "--load-network", "demo"]
    assert main(args + ["--plain-fraction", "0.25", "--lookalike-fraction", "0.5"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["datasets"] == {"plain_fraction": 0.25, "lookalike_fraction": 0.5}
    capsys.readouterr()
    assert main(args[:-4] + ["--run-dir", str(tmp_path / "r2"), "--plain-fraction", "2"]) == 2
    assert "must lie in [0, 1]" in capsys.readouterr().err
    assert main(["train", "--stage", "synthetic", "--run-dir", str(tmp_path / "r3"), "--iterations", "1",
                 "--plain-fraction", "0.5"]) == 2
    assert "--plain-fraction applies to --stage real-video only" in capsys.readouterr().err


def test_an_entering_lookalike_comes_in_after_frame_0_and_stays_beside_an_object():
    """One red cutout over green: red pixels labelled 0 are the distractor. It is off-frame at frame 0,
    in the frame (unlabelled) by the end, next to the object."""
    m = _material()
    entered = 0
    for seed in range(4):
        v = generate_real_video(seed, m, num_frames=24, height=96, width=128, noise_std=0, num_objects=1,
                                cutout_fraction=1.0, lookalike=True, entering=True)
        red = v.frames[..., 0].astype(int) > v.frames[..., 1].astype(int) + 60
        stray = red & (v.labels == 0)
        assert stray[0].sum() <= 0.002 * 96 * 128, seed  # an anti-aliased rim at most, no distractor
        last = stray[-1]
        if last.sum() < 0.01 * 96 * 128:
            continue  # hidden behind the object or partly outside the frame
        entered += 1
        oy, ox = np.argwhere(v.labels[-1] == 1).mean(axis=0)
        dy, dx = np.argwhere(last).mean(axis=0)
        assert np.hypot(oy - dy, ox - dx) < 0.7 * 96, seed  # beside the object, not anywhere
    assert entered >= 2


@pytest.mark.parametrize("flag", ["entering", "occluded"])
def test_scene_kind_fraction_is_a_mix_flag(tmp_path, flag):
    """--entering-fraction / --occluded-fraction reach the run's config, and change about that share of the
    pool's videos, leaving the others exactly as without the flag."""
    import yaml

    root = _static_root(tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--stage", "real-video", "--static-root", str(root), "--run-dir", str(run),
                 "--iterations", "1", "--batch-size", "1", "--crop", "64", "--load-network", "demo",
                 f"--{flag}-fraction", "0.5"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["datasets"] == {f"{flag}_fraction": 0.5}
    shape = dict(crop=64, video_frames=24, video_height=64, video_width=96, pool_size=12, material=_material())
    none = SyntheticClips(4, config=SyntheticClipConfig(**shape))
    some = SyntheticClips(4, config=SyntheticClipConfig(**shape, **{f"{flag}_fraction": 0.5}))
    changed = sum(not np.array_equal(none.video(n).frames, some.video(n).frames) for n in range(12))
    assert 2 <= changed <= 10


def test_small_objects_are_a_fraction_of_the_usual_size_and_still_visible():
    """small=True: the same kind of scene, objects about 0.2-0.45 of the usual size (area 0.04-0.2),
    each still visible at frame 0; small=False leaves the video as it was."""
    m = _material()
    usual, small = [], []
    for seed in range(6):
        kwargs = dict(num_frames=6, height=96, width=128, noise_std=0, num_objects=2, cutout_fraction=1.0)
        plain = generate_real_video(seed, m, **kwargs)
        assert np.array_equal(plain.frames, generate_real_video(seed, m, small=False, **kwargs).frames)
        tiny = generate_real_video(seed, m, small=True, **kwargs)
        for k in (1, 2):
            usual.append(np.count_nonzero(plain.labels[0] == k))
            small.append(np.count_nonzero(tiny.labels[0] == k))
            assert small[-1] > 0, (seed, k)
    ratio = np.median(small) / np.median(usual)
    assert 0.02 < ratio < 0.25, ratio


def test_small_fraction_is_a_mix_flag():
    shape = dict(crop=64, video_frames=6, video_height=64, video_width=96, pool_size=12, material=_material())
    none = SyntheticClips(4, config=SyntheticClipConfig(**shape))
    some = SyntheticClips(4, config=SyntheticClipConfig(**shape, small_fraction=0.5))
    changed = sum(not np.array_equal(none.video(n).frames, some.video(n).frames) for n in range(12))
    assert 2 <= changed <= 10  # about half the pool, and the other videos exactly as without the flag


def test_occluders_hide_objects_and_leave_the_rest_of_the_scene_as_it_was():
    """occluders=True is the same scene with static things in front: a label only ever changes to 0,
    frame 0's objects stay visible, and in most scenes an object passes behind one."""
    m = _material()
    kwargs = dict(num_frames=16, height=96, width=128, noise_std=0, num_objects=2, cutout_fraction=1.0)
    passed_behind = 0
    for seed in range(6):
        plain = generate_real_video(seed, m, **kwargs)
        hidden = generate_real_video(seed, m, occluders=True, **kwargs)
        assert np.array_equal(hidden.frames, generate_real_video(seed, m, occluders=True, **kwargs).frames)
        relabelled = hidden.labels != plain.labels
        assert relabelled.any(), seed
        assert (hidden.labels[relabelled] == 0).all(), seed  # occluders hide, they never add
        repainted = (hidden.frames != plain.frames).any(axis=-1)
        assert (repainted | ~relabelled).all(), seed  # a hidden object pixel shows the occluder
        for k in (1, 2):
            assert np.count_nonzero(hidden.labels[0] == k) >= 0.01 * 96 * 128, (seed, k)
        lost = [(plain.labels[t] == k).sum() - (hidden.labels[t] == k).sum() for t in range(16) for k in (1, 2)]
        sizes = [(plain.labels[t] == k).sum() for t in range(16) for k in (1, 2)]
        passed_behind += any(d >= 0.1 * s > 0 for d, s in zip(lost, sizes))
    assert passed_behind >= 4


def test_occluders_stay_where_they_are_in_a_still_scene():
    """They are fixed to the background: with the camera still (speed 0) they cover the same pixels in
    every frame."""
    m = _material()
    kwargs = dict(num_frames=8, height=96, width=128, noise_std=0, speed=0.0, cutout_fraction=1.0)
    for seed in range(3):
        plain = generate_real_video(seed, m, **kwargs)
        hidden = generate_real_video(seed, m, occluders=True, **kwargs)
        repainted = (hidden.frames != plain.frames).any(axis=-1)
        assert repainted[0].any(), seed
        assert all(np.array_equal(repainted[0], repainted[t]) for t in range(8)), seed
