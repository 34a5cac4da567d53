"""stcn.eval.metrics / evaluate_davis against the official DAVIS 2017 toolkit's outputs.

The reference data (tests/data/metrics, see its README) comes from shared/reference/metrics.
"""
from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from stcn.eval import davis_eval
from stcn.eval.davis_eval import evaluate_davis
from stcn.eval.metrics import (
    boundary_f_measure,
    boundary_map,
    decay_bin_edges,
    disk,
    frame_scores,
    object_statistics,
    region_similarity,
    tolerance_radius,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "metrics"
PUBLIC = DATA / "public"
TOL = 1e-6

BOUNDARY = json.loads((DATA / "boundary_cases.json").read_text())
STATISTICS = json.loads((DATA / "statistics_cases.json").read_text())["cases"]
OFFICIAL = json.loads((PUBLIC / "official" / "official_results.json").read_text())


def _grid(rows: list[str]) -> np.ndarray:
    return np.array([[c == "1" for c in row] for row in rows], dtype=bool)


MASKS = {name: _grid(case["mask"]) for name, case in BOUNDARY["seg2bmap"].items()}


@pytest.fixture(scope="module")
def public_result():
    return evaluate_davis(PUBLIC / "DAVIS", PUBLIC / "results", workers=1, progress=False)


# --------------------------------------------------------------------------------------------------
# Boundary maps, disk, tolerance radius, tiny pairs
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(BOUNDARY["seg2bmap"]))
def test_boundary_map_matches_toolkit(name):
    case = BOUNDARY["seg2bmap"][name]
    got = boundary_map(MASKS[name])
    np.testing.assert_array_equal(got, _grid(case["boundary"]))
    assert int(got.sum()) == case["n_boundary"]


def test_boundary_map_is_vectorised_over_leading_axes():
    names = sorted(MASKS)
    stack = np.stack([MASKS[n] for n in names]).reshape(5, 5, 6, 7)
    got = boundary_map(stack).reshape(25, 6, 7)
    for i, n in enumerate(names):
        np.testing.assert_array_equal(got[i], boundary_map(MASKS[n]))


@pytest.mark.parametrize("radius", sorted(BOUNDARY["disk"], key=int))
def test_disk_matches_toolkit(radius):
    case = BOUNDARY["disk"][radius]
    d = disk(int(radius))
    assert d.shape == (2 * int(radius) + 1,) * 2
    assert int(d.sum()) == case["n_pixels"]
    if case["footprint"] is not None:
        np.testing.assert_array_equal(d.astype(bool), _grid(case["footprint"]))


@pytest.mark.parametrize(
    "hw, radius",
    [((480, 854), 8), ((854, 480), 8), ((720, 1280), 12), ((97, 131), 2), ((120, 160), 2),
     ((64, 96), 1), ((75, 100), 1), ((300, 400), 4), ((6, 7), 1), ((101, 77), 2)],
)
def test_tolerance_radius(hw, radius):
    assert tolerance_radius(*hw) == radius


@pytest.mark.parametrize("pair", sorted(BOUNDARY["tiny_pairs"]))
def test_tiny_pairs_match_toolkit(pair):
    gt_name, res_name = (part.split("=")[1] for part in pair.split())
    expected = BOUNDARY["tiny_pairs"][pair]
    gt, res = MASKS[gt_name], MASKS[res_name]
    assert abs(float(region_similarity(gt, res)) - expected["J"]) <= TOL
    assert abs(float(boundary_f_measure(gt, res)) - expected["F"]) <= TOL
    # The label-map fast path gives the same numbers.
    j, f = frame_scores(gt.astype(np.uint8), res.astype(np.uint8), 1)
    assert abs(j[0] - expected["J"]) <= TOL and abs(f[0] - expected["F"]) <= TOL


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------
def _exact_decay(values: list[float]) -> float:
    """Decay from the prose rule, with integer bin edges round(k(n-1)/4), halves up (no overflow)."""
    n = len(values)
    edges = [int(Fraction(k * (n - 1), 4) + Fraction(1, 2)) for k in range(5)]  # floor(x + 1/2)
    first = values[edges[0] : edges[1] + 1]
    last = values[edges[3] : edges[4] + 1]
    return float(np.mean(first) - np.mean(last))


@pytest.mark.parametrize("case", STATISTICS, ids=lambda c: f"n={c['n']}")
def test_statistics_match_toolkit(case):
    values = np.asarray(case["values"], dtype=np.float64)
    stats = object_statistics(values)
    assert abs(float(stats["Mean"]) - case["Mean"]) <= TOL
    assert abs(float(stats["Recall"]) - case["Recall"]) <= TOL
    if case["n"] < 256:
        assert abs(float(stats["Decay"]) - case["Decay"]) <= TOL
        assert decay_bin_edges(case["n"]).tolist() == case["bin_edges_as_computed"]
    else:
        # The toolkit stores the bin edges in 8 bits: from 256 frames on its last bin wraps around
        # and Decay is NaN. We compute the mathematically correct value (docs/evaluation.md).
        assert case["Decay"] is None
        assert np.isfinite(stats["Decay"])
        assert abs(float(stats["Decay"]) - _exact_decay(case["values"])) <= 1e-12
        edges = decay_bin_edges(case["n"])
        assert edges[0] == 0 and edges[4] == case["n"] - 1
        # The toolkit's edges are ours modulo 256 (the uint8 wrap-around).
        assert ((edges % 256) == np.asarray(case["bin_edges_as_computed"])).all()


def test_statistics_are_vectorised_over_objects():
    cases = [c for c in STATISTICS if c["n"] == 23]
    values = np.asarray(cases[0]["values"])
    stack = np.stack([values, values[::-1], np.full(23, 0.5)])
    stats = object_statistics(stack)
    for i, row in enumerate(stack):
        one = object_statistics(row)
        for key in ("Mean", "Recall", "Decay"):
            assert stats[key][i] == one[key]
    assert stats["Recall"][2] == 0.0  # exactly 0.5 is not "above 0.5"


@pytest.mark.parametrize("n, edges", [(1, [0, 0, 0, 0, 0]), (2, [0, 0, 1, 1, 1]), (3, [0, 1, 1, 2, 2]),
                                      (23, [0, 6, 11, 17, 22]), (300, [0, 75, 150, 224, 299])])
def test_decay_bin_edges(n, edges):
    assert decay_bin_edges(n).tolist() == edges


# --------------------------------------------------------------------------------------------------
# The reference set, end to end
# --------------------------------------------------------------------------------------------------
def test_every_per_frame_value_and_statistic_matches_toolkit(public_result):
    assert [s.name for s in public_result.sequences] == [s["name"] for s in OFFICIAL["sequences"]]
    n_checked = 0
    for ref, ours in zip(OFFICIAL["sequences"], public_result.sequences):
        assert ours.frame_ids == ref["frame_ids"]
        assert (ours.height, ours.width, ours.n_frames) == (ref["height"], ref["width"], ref["n_frames"])
        assert ours.n_objects == ref["n_objects"] == len(ours.objects)
        assert ours.disk_radius == ref["disk_radius"]
        for ref_obj, obj in zip(ref["objects"], ours.objects):
            assert (obj.id, obj.key) == (ref_obj["id"], ref_obj["key"])
            np.testing.assert_allclose(obj.J, ref_obj["J"], rtol=0, atol=TOL)
            np.testing.assert_allclose(obj.F, ref_obj["F"], rtol=0, atol=TOL)
            n_checked += len(obj.J)
            for key in ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"):
                assert abs(obj.stats[key] - ref_obj[key]) <= TOL, (obj.key, key)
            assert abs(obj.jf_mean - ref_obj["J&F-Mean"]) <= TOL
            detail = ref_obj["F_detail"]
            expected_counts = np.array([detail["n_res_boundary"], detail["n_gt_boundary"],
                                        detail["res_boundary_matched"], detail["gt_boundary_matched"]]).T
            np.testing.assert_array_equal(obj.f_counts, expected_counts, err_msg=obj.key)
    assert n_checked == 181  # every frame-object of the reference set
    for key, value in public_result.global_results.items():
        assert abs(value - OFFICIAL["global"][key]) <= TOL, key
    assert public_result.n_objects == OFFICIAL["global"]["n_objects"]


def test_csv_files_are_byte_identical(public_result):
    official = PUBLIC / "official"
    assert public_result.global_csv().encode() == (official / "global_results-val.csv").read_bytes()
    assert public_result.per_sequence_csv().encode() == (official / "per-sequence_results-val.csv").read_bytes()


def test_results_json_holds_full_precision(public_result):
    data = json.loads(public_result.to_json())
    for ref, ours in zip(OFFICIAL["sequences"], data["sequences"]):
        for ref_obj, obj in zip(ref["objects"], ours["objects"]):
            assert obj["J"] == ref_obj["J"] and obj["F"] == ref_obj["F"]  # exact round trip
            assert obj["F_detail"]["n_gt_boundary"] == ref_obj["F_detail"]["n_gt_boundary"]
    assert data["global"]["J&F-Mean"] == public_result.global_results["J&F-Mean"]


def test_mask_stack_api_matches_evaluator(public_result):
    """region_similarity / boundary_f_measure on (T, H, W) mask stacks give the evaluator's numbers."""
    for seq in public_result.sequences:
        folder = PUBLIC / "DAVIS" / "Annotations" / "480p" / seq.name
        gt = np.stack([np.asarray(Image.open(folder / f"{f}.png")) for f in seq.frame_ids])
        res = np.stack([np.asarray(Image.open(PUBLIC / "results" / seq.name / f"{f}.png")) for f in seq.frame_ids])
        for obj in seq.objects:
            np.testing.assert_array_equal(region_similarity(gt == obj.id, res == obj.id), obj.J)
            f, details = boundary_f_measure(gt == obj.id, res == obj.id, return_detail=True)
            np.testing.assert_array_equal(f, obj.F)
            assert [d.n_gt_boundary for d in details] == obj.f_counts[:, 1].tolist()


# --------------------------------------------------------------------------------------------------
# The crop used by the fast path is exact
# --------------------------------------------------------------------------------------------------
def _full_frame_scores(gt: np.ndarray, res: np.ndarray, k: int, radius: int):
    """J and F with no cropping: whole-frame boundary maps and whole-frame dilations."""
    g, r = gt == k, res == k
    union = np.count_nonzero(g | r)
    j = 1.0 if union == 0 else np.count_nonzero(g & r) / union
    gb, rb = boundary_map(g), boundary_map(r)
    kernel = disk(radius)
    gd = cv2.dilate(gb.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    rd = cv2.dilate(rb.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0
    n_r, n_g = int(rb.sum()), int(gb.sum())
    if n_r == 0 and n_g == 0:
        p, rc = 1.0, 1.0
    elif n_r == 0:
        p, rc = 1.0, 0.0
    elif n_g == 0:
        p, rc = 0.0, 1.0
    else:
        p, rc = np.count_nonzero(rb & gd) / n_r, np.count_nonzero(gb & rd) / n_g
    f = 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)
    return j, f


@pytest.mark.parametrize("seed", range(6))
def test_cropped_scores_equal_full_frame_scores(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(8, 60)), int(rng.integers(8, 60))
    gt = np.zeros((h, w), np.uint8)
    res = np.zeros((h, w), np.uint8)
    for k in (1, 2, 3):  # rectangles and specks, often touching the borders
        for labels in (gt, res):
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            y1, x1 = y0 + rng.integers(1, h), x0 + rng.integers(1, w)
            labels[y0:y1, x0:x1] = k
            labels[rng.random((h, w)) < 0.02] = k
    gt[rng.random((h, w)) < 0.03] = 255  # void: no object's pixel
    radius = int(rng.integers(1, 5))
    j, f = frame_scores(gt, res, 3, radius)
    for k in (1, 2, 3):
        jr, fr = _full_frame_scores(gt, res, k, radius)
        assert j[k - 1] == jr and f[k - 1] == fr


# --------------------------------------------------------------------------------------------------
# Evaluator behaviour beyond the reference set
# --------------------------------------------------------------------------------------------------
def _write_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0, 0, 0] * 253)
    im.save(path)


def _make_set(
    root: Path, frames: dict[str, tuple[list[np.ndarray], list[np.ndarray]]], year="2017"
) -> tuple[Path, Path]:
    gt_root, res_root = root / "DAVIS", root / "results"
    (gt_root / "ImageSets" / year).mkdir(parents=True)
    (gt_root / "ImageSets" / year / "val.txt").write_text("".join(f"{n}\n" for n in frames))
    for name, (gts, results) in frames.items():
        for t, (g, r) in enumerate(zip(gts, results)):
            _write_png(gt_root / "Annotations" / "480p" / name / f"{t:05d}.png", g)
            _write_png(res_root / name / f"{t:05d}.png", r)
    return gt_root, res_root


def test_pool_gives_the_serial_numbers(public_result, monkeypatch):
    monkeypatch.setattr(davis_eval, "POOL_MIN_PIXELS", 0)
    monkeypatch.setattr(davis_eval, "FRAMES_PER_TASK", 3)  # many tasks, several per sequence
    pooled = evaluate_davis(PUBLIC / "DAVIS", PUBLIC / "results", workers=2, progress=False)
    assert pooled.to_json() == public_result.to_json()
    assert pooled.global_csv() == public_result.global_csv()


def test_long_sequence_decay_is_exact(tmp_path):
    """300 scored frames: the toolkit's Decay would be NaN (8-bit edges); ours is the correct value."""
    n = 302
    rng = np.random.default_rng(1)
    gts, results = [], []
    for t in range(n):
        g = np.zeros((8, 10), np.uint8)
        g[2:6, 2:8] = 1
        r = np.zeros_like(g)
        r[2:6, 2 : 2 + int(rng.integers(1, 9))] = 1
        gts.append(g)
        results.append(r)
    gt_root, res_root = _make_set(tmp_path, {"long": (gts, results)})
    result = evaluate_davis(gt_root, res_root, workers=1, progress=False)
    obj = result.sequences[0].objects[0]
    assert len(obj.J) == 300
    assert obj.stats["J-Decay"] == pytest.approx(_exact_decay(obj.J.tolist()), abs=1e-12)
    assert np.isfinite(result.global_results["J-Decay"]) and np.isfinite(result.global_results["F-Decay"])


def test_year_2016_scores_one_merged_object(tmp_path):
    h, w = 20, 24
    gts, results = [], []
    for t in range(5):
        g = np.zeros((h, w), np.uint8)
        g[2:8, 2 + t : 9 + t] = 1
        g[10:16, 5:12] = 2
        r = np.zeros((h, w), np.uint8)
        r[3:8, 2 + t : 10 + t] = 255  # binary result, 0/255
        r[10:15, 5:13] = 255
        gts.append(g)
        results.append(r)
    gt_root, res_root = _make_set(tmp_path, {"bin": (gts, results)}, year="2016")
    result = evaluate_davis(gt_root, res_root, year=2016, workers=1, progress=False)
    seq = result.sequences[0]
    assert seq.n_objects == 1 and [o.key for o in seq.objects] == ["bin_1"]
    gt = np.stack(gts[1:-1]) > 0
    res = np.stack(results[1:-1]) > 0
    np.testing.assert_array_equal(seq.objects[0].J, region_similarity(gt, res))
    np.testing.assert_array_equal(seq.objects[0].F, boundary_f_measure(gt, res))
