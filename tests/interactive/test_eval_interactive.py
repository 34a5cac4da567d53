"""``stcn eval interactive`` end to end on a tiny synthetic DAVIS-interactive set (robot-made
scribbles, recipe weights), and its one-line errors for bad input."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from stcn.cli import main
from stcn.interactive.davis_local import DavisInteractiveData
from stcn.interactive.protocol import batched_scores, summarize_report
from stcn.interactive.synthetic import write_synthetic_interactive

N = 3  # interactions: S2M, S2M, propagation (MiVOS's schedule); keeps the module fast


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_synthetic_interactive(tmp_path_factory.mktemp("synth") / "DAVIS", seeds=(3,), num_frames=6,
                                       height=32, width=48, num_objects=2)


@pytest.fixture(scope="module")
def weights(recipe_weights, s2m_weights, fusion_weights):
    return ["--weights", str(recipe_weights("mo")), "--s2m", str(s2m_weights), "--fusion", str(fusion_weights),
            "--device", "cpu"]


def _cli(capsys, *argv):
    code = main(["eval", "interactive", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def run(dataset, weights, tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("out") / "res"
    try:
        # fp32: the replay below compares with the exact driver (auto is bf16 on some CPUs)
        code = main(["eval", "interactive", "--root", str(dataset), "--out", str(out), "--max-interactions", "3",
                     "--precision", "fp32", *weights])
    finally:
        torch.set_num_threads(threads)
    return code, out


def test_synthetic_set_is_valid(dataset):
    data = DavisInteractiveData(dataset)
    assert data.samples == [("synth3", 1)]
    scribble = data.scribble("synth3", 1)
    assert sum(len(p) for p in scribble["scribbles"]) >= 1


def test_outputs_are_consistent(run, dataset):
    code, out = run
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["jf_time.png", "report.csv", "summary.json"]
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["sequence", "scribble_idx", "interaction", "object_id", "frame", "jaccard",
                             "contour", "j_and_f", "timing"]
    data = DavisInteractiveData(dataset)
    k = data.sequences["synth3"].num_objects
    assert len(rows) == N * 6 * k
    summary = json.loads((out / "summary.json").read_text())
    assert 0 <= summary["auc"] <= 1 and 0 <= summary["metric_at_threshold"]["J_AND_F"] <= 1
    assert summary["max_time"] == N * 30 and summary["curve"]["time"][-1] == N * 30 * k
    assert len(summary["curve"]["J_AND_F"]) == N + 2
    assert summary["precision"] == "fp32"
    again = summarize_report(rows, max_time=N * 30, max_interactions=N, avg_num_objects=k)
    assert abs(again["auc"] - summary["auc"]) < 1e-12
    for r in rows:
        assert abs(float(r["j_and_f"]) - 0.5 * (float(r["jaccard"]) + float(r["contour"]))) < 1e-12
    with Image.open(out / "jf_time.png") as im:
        assert im.format == "PNG"


def test_report_rows_equal_recomputed_metrics(run, dataset, weights, s2m_model, fusion_model, mo_model):
    """Replay the interactions with the driver and the recorded robot: rows = metrics of its masks."""
    from stcn.interactive.davis_driver import DAVISProcessor
    from stcn.interactive.davis_local import LocalDavisServer

    _, out = run
    with open(out / "report.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    data = DavisInteractiveData(dataset)
    gt = data.annotations("synth3")
    k = data.sequences["synth3"].num_objects
    session = LocalDavisServer(data, max_time=N * 30, max_interactions=N)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        proc = DAVISProcessor(mo_model, fusion_model, s2m_model, data.frames("synth3"), k, precision="fp32")
        while session.next():
            _, scribble, _ = session.get_scribbles(only_last=True)
            pred, cand, _ = proc.interact(scribble)
            j, f = batched_scores(gt, pred, k)
            i = session.interaction + 1
            mine = [r for r in rows if int(r["interaction"]) == i]
            assert np.allclose([float(r["jaccard"]) for r in mine], j.ravel(), atol=1e-12, rtol=0)
            assert np.allclose([float(r["contour"]) for r in mine], f.ravel(), atol=1e-12, rtol=0)
            session.submit_masks(pred, cand)
    finally:
        torch.set_num_threads(threads)


def _broken(dataset, tmp_path, edit) -> str:
    root = tmp_path / "DAVIS"
    shutil.copytree(dataset, root)
    path = root / "Scribbles" / "synth3" / "001.json"
    scribble = json.loads(path.read_text())
    edit(root, scribble)
    if path.exists():
        path.write_text(json.dumps(scribble))
    return str(root)


def _first_path(s):
    return next(p for paths in s["scribbles"] for p in paths)


@pytest.mark.parametrize("case, message", [
    ("outside", "outside the frame"),
    ("unknown_id", "object id 9"),
    ("empty_stroke", "empty stroke"),
    ("no_scribbles", "scribble folder"),
])
def test_bad_input_is_one_line(case, message, dataset, weights, tmp_path, capsys):
    def edit(root, s):
        if case == "outside":
            _first_path(s)["path"][0] = [1.5, 0.2]
        elif case == "unknown_id":
            _first_path(s)["object_id"] = 9
        elif case == "empty_stroke":
            _first_path(s)["path"] = []
        else:
            shutil.rmtree(root / "Scribbles")

    root = _broken(dataset, tmp_path, edit)
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "--root", root, "--out", out, *weights)
    assert code == 2 and err.startswith("stcn: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_fp16_on_a_cpu_is_one_line(dataset, weights, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "--root", dataset, "--out", out, "--precision", "fp16", *weights)
    assert code == 2 and err.startswith("stcn: error: ") and "fp16 needs a CUDA device" in err
    assert err.count("\n") == 1 and not out.exists()


def test_missing_checkpoint(dataset, weights, tmp_path, capsys):
    args = list(weights)
    args[args.index("--s2m") + 1] = str(tmp_path / "nope.pth")
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "--root", dataset, "--out", out, *args)
    assert code == 2 and "nope.pth" in err and err.startswith("stcn: error: ")
    assert not out.exists()
