"""The scribble robot, per-frame J / F and the summary against davisinteractive 1.0.4's outputs
(reference robot/ and summary_case/, copied in tests/data/interactive; reference README sections 6, 7).
Tolerances (README section 8): robot paths and J / F to 1e-12, summary to 1e-12."""
from __future__ import annotations

import csv
import gzip
import json

import numpy as np
import pytest
from interactive_data import INTERACTIVE, load_npz

from stcn.interactive.protocol import (
    batched_f_measure,
    batched_jaccard,
    next_frame,
    summarize_report,
)
from stcn.interactive.robot import ScribbleRobot, bezier_curve
from stcn.interactive.scribbles import rasterize_paths
from stcn.interactive.skeleton import medial_axis

TOL = 1e-12
CASES = ("shift7", "missing_and_bleed", "empty_f0", "ring", "tiny_hole")


@pytest.fixture(scope="module")
def reference():
    with gzip.open(INTERACTIVE / "robot_cases.json.gz") as f:
        return json.loads(f.read()), load_npz("robot_cases.npz")


def test_parameters_are_the_services(reference):
    cases, _ = reference
    assert cases["robot_parameters"] == {"kernel_size": 0.2, "max_kernel_radius": 16, "min_nb_nodes": 4,
                                         "nb_points": 1000}
    assert ScribbleRobot() == ScribbleRobot(**cases["robot_parameters"])


@pytest.mark.parametrize("name", CASES)
def test_robot_case(reference, name):
    cases, arrays = reference
    case = cases["cases"][name]
    gt, pred = arrays[f"{name}_gt"], arrays[f"{name}_pred"]
    out = ScribbleRobot()(name, gt, pred, case["nb_objects"], case["frame_arg"])
    assert out["sequence"] == name and len(out["scribbles"]) == len(gt)
    assert [t for t, paths in enumerate(out["scribbles"]) if paths] == case["scribbled_frames"]
    paths = out["scribbles"][case["scribbled_frames"][0]]
    assert [p["object_id"] for p in paths] == [p["object_id"] for p in case["paths"]]
    for got, ref in zip(paths, case["paths"]):
        assert np.abs(np.asarray(got["path"]) - np.asarray(ref["path"])).max() <= TOL
    raster = rasterize_paths(paths, gt.shape[1:])
    assert np.array_equal(raster, arrays[f"{name}_raster"])


@pytest.mark.parametrize("name", CASES)
def test_batched_jaccard_and_f(reference, name):
    cases, arrays = reference
    case = cases["cases"][name]
    gt, pred = arrays[f"{name}_gt"], arrays[f"{name}_pred"]
    j = batched_jaccard(gt, pred, case["nb_objects"])
    f = batched_f_measure(gt, pred, case["nb_objects"])
    assert np.abs(j - np.asarray(case["jaccard_per_frame_obj"])).max() <= TOL
    assert np.abs(f - np.asarray(case["f_per_frame_obj"])).max() <= TOL


def test_medial_axis_basics():
    assert not medial_axis(np.zeros((5, 6), bool)).any()
    bar = np.zeros((7, 20), bool)
    bar[2:5, 2:18] = True
    skel = medial_axis(bar)
    assert skel[3, 3:17].all() and skel.sum() <= 18 and not skel[~bar].any()
    assert np.array_equal(medial_axis(bar), skel)  # deterministic


def test_bezier_endpoints_and_long_paths():
    pts = np.array([[0, 0], [4, 8], [10, 2]])
    curve = bezier_curve(pts, 5)
    assert curve.shape == (5, 2) and np.allclose(curve[0], pts[0]) and np.allclose(curve[-1], pts[-1])
    long = np.arange(20).reshape(10, 2)
    assert np.array_equal(bezier_curve(long, 5), long.astype(np.float64))


def test_next_frame_rules():
    metric = np.array([0.5, 0.1, 0.3, 0.1])
    assert next_frame(metric, None, []) == 1  # lowest, first on ties
    assert next_frame(metric, None, [1]) == 3
    assert next_frame(metric, [2], [2]) == 2  # nothing left: the candidates as given
    assert next_frame(metric, [0, 2], [2]) == 0


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_summary(got: dict, ref: dict) -> None:
    assert abs(got["auc"] - ref["auc"]) <= TOL
    assert got["metric_at_threshold"]["threshold"] == ref["metric_at_threshold"]["threshold"]
    assert abs(got["metric_at_threshold"]["J_AND_F"] - ref["metric_at_threshold"]["J_AND_F"]) <= TOL
    for key in ("time", "J_AND_F"):
        assert len(got["curve"][key]) == len(ref["curve"][key])
        assert np.abs(np.asarray(got["curve"][key]) - ref["curve"][key]).max() <= TOL


def test_summary_with_a_timed_out_sample():
    ref = json.loads((INTERACTIVE / "summary_expected.json").read_text())
    assert ref["avg_nb_objects"] == 1.5
    got = summarize_report(_rows(INTERACTIVE / "summary_report_in.csv"), max_time=ref["max_time"],
                           max_interactions=ref["max_nb_interactions"], avg_num_objects=ref["avg_nb_objects"])
    _assert_summary(got, ref["summary"])


def test_session_summary_from_its_report():
    ref = json.loads((INTERACTIVE / "session_summary.json").read_text())
    got = summarize_report(_rows(INTERACTIVE / "session_report.csv"), max_time=240, max_interactions=8,
                           avg_num_objects=3)
    _assert_summary(got, ref)
