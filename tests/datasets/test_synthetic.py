"""Tests for the synthetic video generator (stcn.data.synthetic) and the label PNG helpers (stcn.io.masks)."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stcn.data import synthetic
from stcn.data.synthetic import SyntheticVideo, generate_video, write_davis, write_frames, write_youtube
from stcn.errors import DataError
from stcn.io.masks import DAVIS_PALETTE, davis_palette, load_label_png, save_label_png

H, W = 72, 128  # small frames keep the file fast
MIN_PIXELS = math.ceil(0.002 * H * W)


def small(seed: int, **kw) -> SyntheticVideo:
    kw.setdefault("num_frames", 12)
    kw.setdefault("height", H)
    kw.setdefault("width", W)
    return generate_video(seed, **kw)


def counts(video: SyntheticVideo) -> np.ndarray:
    """(T, K) visible pixel counts per frame and object."""
    return np.stack([(video.labels == k).sum(axis=(1, 2)) for k in video.object_ids], axis=1)


@pytest.fixture(scope="module")
def rich() -> SyntheticVideo:
    """A clip with everything switched on, and the full silhouettes."""
    return generate_video(7, num_frames=24, height=H, width=W, num_objects=4, late_objects=2,
                          allow_exit=True, distractor=True, return_silhouettes=True)


# ------------------------------------------------------------------------------------- generator


def test_shapes_dtypes_and_ids():
    video = small(0, num_frames=5, num_objects=3)
    assert video.frames.shape == (5, H, W, 3) and video.frames.dtype == np.uint8
    assert video.labels.shape == (5, H, W) and video.labels.dtype == np.uint8
    assert video.object_ids == (1, 2, 3)
    assert video.first_frame == {1: 0, 2: 0, 3: 0}
    assert video.seed == 0 and video.silhouettes is None
    assert (video.num_frames, video.height, video.width) == (5, H, W)
    assert set(np.unique(video.labels)) == {0, 1, 2, 3}
    assert np.array_equal(video.mask(2), video.labels == 2)
    with pytest.raises(KeyError):
        video.mask(4)
    assert "seed=0" in repr(video)


def test_same_seed_is_bit_identical_and_seeds_differ():
    kw = dict(num_frames=6, late_objects=1, allow_exit=True, distractor=True)
    a, b, c = small(3, **kw), small(3, **kw), small(4, **kw)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.labels, b.labels)
    assert a.first_frame == b.first_frame
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.labels, c.labels)
    # the noise has its own stream: turning it off changes no geometry, and changes pixels mildly
    clean = small(3, noise_std=0.0, **kw)
    assert np.array_equal(clean.labels, a.labels)
    diff = np.abs(clean.frames.astype(int) - a.frames.astype(int))
    assert 1.0 < diff.mean() < 2.5  # E|N(0, 2)| = 1.6
    assert diff.max() <= 12


def test_golden_checksums():
    """Pin the output bits, so that any machine (or refactor) producing other pixels is caught.

    Update these digests only for a deliberate change to the generator.
    """
    video = generate_video(11, num_frames=4, height=32, width=48, num_objects=2, noise_std=0.0,
                           distractor=True)
    digest = lambda a: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
    assert (digest(video.labels), digest(video.frames)) == GOLDEN


GOLDEN = ("10e4244e25624df3", "80f72a873724860c")


def test_labels_agree_with_silhouettes(rich):
    video = rich
    assert video.silhouettes.shape == (24, 4, H, W) and video.silhouettes.dtype == bool
    assert set(np.unique(video.labels)) <= {0, *video.object_ids}
    for index, k in enumerate(video.object_ids):
        visible = video.labels == k
        assert not (visible & ~video.silhouettes[:, index]).any()  # visible pixels lie in the shape
        assert not video.silhouettes[: video.first_frame[k], index].any()  # no shape before it appears
    # without a distractor every silhouette pixel is labelled with some object
    plain = small(5, num_frames=8, num_objects=3, return_silhouettes=True)
    assert np.array_equal(plain.silhouettes.any(axis=1), plain.labels > 0)


@pytest.mark.parametrize("kw", [
    dict(num_objects=3),
    dict(num_objects=4, late_objects=3, num_frames=20),
    dict(num_objects=3, late_objects=2, num_frames=24, allow_exit=True, distractor=True),
    dict(num_objects=6, late_objects=1, num_frames=16, appear_on_multiple_of=5, distractor=True),
])
def test_each_object_visible_in_its_first_frame_and_absent_before(kw):
    late = kw.get("late_objects", 0)
    for seed in (1, 2):
        video = small(seed, **kw)
        visible = counts(video)
        firsts = [video.first_frame[k] for k in video.object_ids]
        assert firsts == sorted(firsts)  # ids in order of appearance
        assert sum(f > 0 for f in firsts) == late
        for index, k in enumerate(video.object_ids):
            first = video.first_frame[k]
            assert visible[first, index] >= MIN_PIXELS
            assert (visible[:first, index] == 0).all()
            if "appear_on_multiple_of" in kw:
                assert first % kw["appear_on_multiple_of"] == 0
        if late == 0:
            assert (visible[0] >= MIN_PIXELS).all()


def test_objects_leave_the_frame_and_come_back(rich):
    silhouette = rich.silhouettes.sum(axis=(2, 3))
    visible = counts(rich)
    found = False
    for index, k in enumerate(rich.object_ids):
        gone = [t for t in range(rich.first_frame[k], 24) if silhouette[t, index] == 0]
        if gone and (visible[gone[-1]:, index] >= MIN_PIXELS).any():
            found = True  # fully outside the frame (not merely hidden), later back in view
    assert found
    for seed in (0, 1, 2):  # also with other seeds and no late objects
        video = small(seed, num_frames=16, allow_exit=True, return_silhouettes=True)
        sil = video.silhouettes.sum(axis=(2, 3))
        exits = [i for i in range(3) if (sil[:, i] == 0).any()]
        assert exits
        for i in exits:
            last_gone = np.nonzero(sil[:, i] == 0)[0].max()
            assert (sil[last_gone + 1:, i] > 0).any()  # it re-enters


def test_without_exit_objects_stay_in_frame():
    video = small(9, num_frames=24, num_objects=3, late_objects=1, return_silhouettes=True)
    sil = video.silhouettes.sum(axis=(2, 3))
    for index, k in enumerate(video.object_ids):
        assert (sil[video.first_frame[k]:, index] > 0).all()


def test_occlusion_and_depth_swaps_happen():
    occluded = swapped = False
    for seed in range(4):
        video = small(seed, num_frames=24, num_objects=4, return_silhouettes=True)
        full = video.silhouettes.sum(axis=(2, 3)).astype(float)
        shown = counts(video)
        # an object's visible area is well below its full (in-frame) silhouette
        occluded |= bool(((full - shown) > 0.25 * np.maximum(full, 1)).any())
        in_front = set()
        for (i, j), t in itertools.product(itertools.combinations(range(4), 2), range(24)):
            overlap = video.silhouettes[t, i] & video.silhouettes[t, j]
            if overlap.sum() >= 5:
                labels = video.labels[t][overlap]
                in_front.add((i, j, (labels == i + 1).sum() > (labels == j + 1).sum()))
        swapped |= any((i, j, True) in in_front and (i, j, False) in in_front
                       for i, j in itertools.combinations(range(4), 2))
    assert occluded
    assert swapped


def test_objects_are_textured_and_coloured_apart_from_background():
    for seed in (0, 1):
        video = small(seed, num_frames=6, num_objects=3, noise_std=0.0)
        pixels = video.frames.reshape(-1, 3).astype(float)
        labels = video.labels.reshape(-1)
        background = pixels[labels == 0]
        chroma = lambda p: (p.max(axis=1) - p.min(axis=1)).mean()
        means = []
        for k in video.object_ids:
            obj = pixels[labels == k]
            assert chroma(obj) > chroma(background) + 40  # saturated objects on a muted background
            assert np.linalg.norm(obj.mean(axis=0) - background.mean(axis=0)) > 30
            assert obj.std(axis=0).mean() > 5  # a texture, not a flat colour
            means.append(obj.mean(axis=0))
        for a, b in itertools.combinations(means, 2):
            assert np.linalg.norm(a - b) > 25  # objects differ from each other
        assert background.std(axis=0).mean() > 5  # the background is textured too


def test_background_pans_and_objects_move():
    video = small(2, num_frames=10, num_objects=1, noise_std=0.0, speed=2.0)
    both_bg = (video.labels[0] == 0) & (video.labels[9] == 0)
    change = np.abs(video.frames[0].astype(int) - video.frames[9].astype(int))[both_bg]
    assert change.mean() > 3
    centroid = lambda t: np.argwhere(video.labels[t] == 1).mean(axis=0)
    assert np.linalg.norm(centroid(0) - centroid(9)) > 2
    still = small(2, num_frames=3, num_objects=2, speed=0.0)
    assert (still.labels == still.labels[0]).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        small(0, num_objects=2, late_objects=2)
    with pytest.raises(ValueError):
        small(0, num_frames=6, late_objects=1, appear_on_multiple_of=10)
    with pytest.raises(ValueError):
        small(-1)
    with pytest.raises(ValueError):
        small(0, height=8)
    with pytest.raises(TypeError):
        small(1.5)


# ------------------------------------------------------------------------------------- palette


def test_davis_palette():
    assert DAVIS_PALETTE.shape == (256, 3) and DAVIS_PALETTE.dtype == np.uint8
    assert DAVIS_PALETTE[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    assert DAVIS_PALETTE[8].tolist() == [64, 0, 0] and DAVIS_PALETTE[255].tolist() == [224, 224, 192]
    assert len(np.unique(DAVIS_PALETTE, axis=0)) == 256
    assert davis_palette() == DAVIS_PALETTE.tobytes() and len(davis_palette()) == 768


def test_label_png_round_trip_and_modes(tmp_path):
    labels = np.random.default_rng(0).integers(0, 256, size=(17, 23), dtype=np.uint8)
    save_label_png(tmp_path / "a.png", labels)
    with Image.open(tmp_path / "a.png") as image:
        assert image.mode == "P"
        assert image.getpalette()[3:6] == [128, 0, 0]
    assert np.array_equal(load_label_png(tmp_path / "a.png"), labels)
    # a custom palette changes the colours, not the indices
    save_label_png(tmp_path / "b.png", labels, palette=[[1, 2, 3], [4, 5, 6]])
    with Image.open(tmp_path / "b.png") as image:
        assert image.getpalette()[:6] == [1, 2, 3, 4, 5, 6]
    assert np.array_equal(load_label_png(tmp_path / "b.png"), labels)
    # greyscale masks read as their grey values
    Image.fromarray(labels).save(tmp_path / "grey.png")
    assert np.array_equal(load_label_png(tmp_path / "grey.png"), labels)
    # colour masks and missing files are data errors naming the file
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png"):
        load_label_png(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="missing.png"):
        load_label_png(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="junk.png"):
        load_label_png(tmp_path / "junk.png")
    with pytest.raises(ValueError):
        save_label_png(tmp_path / "c.png", np.full((2, 2), 300))


# ------------------------------------------------------------------------------------- writers


def no_temporaries(root: Path) -> bool:
    return not [p for p in root.rglob("*") if p.name.startswith(".")]


def test_write_davis_layout(tmp_path):
    videos = {"alpha": small(1, num_frames=4, num_objects=2), "beta": small(2, num_frames=3)}
    assert write_davis(tmp_path, videos) == tmp_path
    for name, video in videos.items():
        jpgs = sorted(p.name for p in (tmp_path / "JPEGImages" / "480p" / name).iterdir())
        pngs = sorted(p.name for p in (tmp_path / "Annotations" / "480p" / name).iterdir())
        assert jpgs == [f"{t:05d}.jpg" for t in range(video.num_frames)]
        assert pngs == [f"{t:05d}.png" for t in range(video.num_frames)]
        for t in range(video.num_frames):
            png = tmp_path / "Annotations" / "480p" / name / f"{t:05d}.png"
            assert np.array_equal(load_label_png(png), video.labels[t])
            with Image.open(png) as image:
                assert image.mode == "P" and image.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
            with Image.open(tmp_path / "JPEGImages" / "480p" / name / f"{t:05d}.jpg") as image:
                assert image.format == "JPEG" and image.size == (W, H)
                decoded = np.asarray(image.convert("RGB"), dtype=float)
            assert np.abs(decoded - video.frames[t]).mean() < 4  # quality 95
    image_sets = tmp_path / "ImageSets" / "2017" / "val.txt"
    assert image_sets.read_text() == "alpha\nbeta\n"
    # a second call merges the names and replaces a sequence as a whole; test-set style annotations
    write_davis(tmp_path, {"gamma": small(3, num_frames=3), "alpha": small(4, num_frames=2)},
                all_annotations=False)
    assert image_sets.read_text() == "alpha\nbeta\ngamma\n"
    assert sorted(p.name for p in (tmp_path / "JPEGImages" / "480p" / "alpha").iterdir()) == \
        ["00000.jpg", "00001.jpg"]
    for name in ("alpha", "gamma"):
        assert [p.name for p in (tmp_path / "Annotations" / "480p" / name).iterdir()] == ["00000.png"]
    write_davis(tmp_path, {"delta": small(5, num_frames=1)}, year="2016", split="train")
    assert (tmp_path / "ImageSets" / "2016" / "train.txt").read_text() == "delta\n"
    assert no_temporaries(tmp_path)
    with pytest.raises(ValueError):
        write_davis(tmp_path, {"../evil": small(5, num_frames=1)})


def test_interrupted_write_leaves_no_half_folder(tmp_path, monkeypatch):
    video = small(1, num_frames=4)
    write_davis(tmp_path, {"seq": video})
    before = sorted(p.name for p in (tmp_path / "Annotations" / "480p" / "seq").iterdir())
    calls = []

    def failing_save(path, labels, palette=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # e.g. Ctrl-C half-way through a sequence
        save_label_png(path, labels, palette)

    monkeypatch.setattr(synthetic, "save_label_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        write_davis(tmp_path, {"seq": small(2, num_frames=4), "new": small(3, num_frames=4)})
    # the old annotations are intact, the new sequence's annotations do not exist, no temp folders
    annotations = tmp_path / "Annotations" / "480p"
    assert sorted(p.name for p in (annotations / "seq").iterdir()) == before
    assert np.array_equal(load_label_png(annotations / "seq" / "00000.png"), video.labels[0])
    assert not (annotations / "new").exists()
    assert no_temporaries(tmp_path)


def test_write_frames(tmp_path):
    video = small(1, num_frames=7)
    folder = write_frames(tmp_path / "clip", video, step=3)
    assert sorted(p.name for p in folder.iterdir()) == ["00000.jpg", "00003.jpg", "00006.jpg"]
    write_frames(tmp_path / "clip", video)  # replaces the folder
    assert len(list(folder.iterdir())) == 7 and no_temporaries(tmp_path)


def test_write_youtube_layout(tmp_path):
    every = 5
    video = generate_video(4, num_frames=17, height=H, width=W, num_objects=4, late_objects=2,
                           appear_on_multiple_of=every)
    firsts = video.first_frame
    assert write_youtube(tmp_path, {"vid0": video}, every=every) == tmp_path
    kept = [f"{t:05d}" for t in range(0, 17, every)]
    assert kept == ["00000", "00005", "00010", "00015"]
    assert sorted(p.stem for p in (tmp_path / "valid" / "JPEGImages" / "vid0").iterdir()) == kept
    all_frames = tmp_path / "all_frames" / "valid_all_frames" / "JPEGImages" / "vid0"
    assert sorted(p.name for p in all_frames.iterdir()) == [f"{t:05d}.jpg" for t in range(17)]
    annotation_dir = tmp_path / "valid" / "Annotations" / "vid0"
    starts = sorted(set(firsts.values()))
    assert sorted(p.name for p in annotation_dir.iterdir()) == [f"{t:05d}.png" for t in starts]
    for t in starts:
        stored = load_label_png(annotation_dir / f"{t:05d}.png")
        ids_here = [k for k in video.object_ids if firsts[k] == t]
        expected = np.where(np.isin(video.labels[t], ids_here), video.labels[t], 0)
        assert np.array_equal(stored, expected)
        assert set(np.unique(stored)) == {0, *ids_here}
    meta = json.loads((tmp_path / "valid" / "meta.json").read_text())
    assert meta == {"videos": {"vid0": {"objects": {
        str(k): {"category": "synthetic",
                 "frames": [f"{t:05d}" for t in range(firsts[k], 17, every)]}
        for k in video.object_ids}}}}
    for k in video.object_ids:  # each object's first annotated frame is listed first
        assert meta["videos"]["vid0"]["objects"][str(k)]["frames"][0] == f"{firsts[k]:05d}"
    # a second call adds to meta.json
    write_youtube(tmp_path, {"vid1": small(5, num_frames=6)}, every=every)
    meta = json.loads((tmp_path / "valid" / "meta.json").read_text())
    assert sorted(meta["videos"]) == ["vid0", "vid1"]
    assert meta["videos"]["vid1"]["objects"]["1"]["frames"] == ["00000", "00005"]
    assert no_temporaries(tmp_path)
    # objects first appearing off the kept frames cannot be annotated
    off_grid = small(6, num_frames=12, late_objects=1, appear_on_multiple_of=3)
    assert any(t % every for t in off_grid.first_frame.values())
    with pytest.raises(ValueError, match="appear_on_multiple_of"):
        write_youtube(tmp_path / "other", {"v": off_grid}, every=every)
