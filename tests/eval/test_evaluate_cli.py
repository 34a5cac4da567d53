"""``stcn evaluate`` through ``stcn.cli.main``: outputs, plots, and malformed results.

The reference data (tests/data/metrics, see its README) comes from shared/reference/metrics.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stcn.cli import main
from stcn.eval.davis_eval import evaluate_davis

DATA = Path(__file__).resolve().parents[1] / "data" / "metrics"
PUBLIC = DATA / "public"
ERRORS = DATA / "error_cases"
EXPECTED = json.loads((ERRORS / "expected_behaviour.json").read_text())
CSV_NAMES = ("global_results-val.csv", "per-sequence_results-val.csv")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _copy_results(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):  # the copies of read-only reference files must be writable
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


# --------------------------------------------------------------------------------------------------
# The reference set
# --------------------------------------------------------------------------------------------------
def test_reference_set_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, "--gt", str(PUBLIC / "DAVIS"), "--results", str(PUBLIC / "results"),
                                "--out", str(out), "--workers", "1")
    assert code == 0, stderr
    for name in CSV_NAMES:
        assert (out / name).read_bytes() == (PUBLIC / "official" / name).read_bytes(), name
    assert "Global results for val" in stdout and "0.688777" in stdout
    assert (out / "per-sequence.png").stat().st_size > 0
    official = json.loads((PUBLIC / "official" / "official_results.json").read_text())
    for seq in official["sequences"]:
        assert (out / "per-frame" / f"{seq['name']}.png").stat().st_size > 0
    data = json.loads((out / "results.json").read_text())
    for ref, ours in zip(official["sequences"], data["sequences"]):
        for ref_obj, obj in zip(ref["objects"], ours["objects"]):
            np.testing.assert_allclose(obj["J"], ref_obj["J"], rtol=0, atol=1e-6)
            np.testing.assert_allclose(obj["F"], ref_obj["F"], rtol=0, atol=1e-6)
    for key, value in official["global"].items():
        assert data["global"][key] == pytest.approx(value, abs=1e-6)
    assert not list(out.rglob("*.tmp"))  # every file went through temp + rename


def test_default_out_is_the_results_folder_and_stale_csvs_are_replaced(tmp_path, capsys):
    results = _copy_results(PUBLIC / "results", tmp_path / "results")
    for name in CSV_NAMES:  # what an earlier run (or the toolkit) left behind: never reused
        (results / name).write_text("J&F-Mean\n0.999\n")
    code, _, stderr = _run(capsys, "--gt", str(PUBLIC / "DAVIS"), "--results", str(results), "--no-plots",
                           "--quiet")
    assert code == 0, stderr
    for name in CSV_NAMES:
        assert (results / name).read_bytes() == (PUBLIC / "official" / name).read_bytes()
    assert (results / "results.json").is_file()
    assert not (results / "per-sequence.png").exists()


# --------------------------------------------------------------------------------------------------
# A small dataset built here: CLI outputs equal the Python API's numbers
# --------------------------------------------------------------------------------------------------
def _write_png(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(labels.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0, 0, 0] * 252)
    im.save(path)


def _small_dataset(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(7)
    gt_root, res_root = root / "DAVIS", root / "results"
    names = ["cat", "dog"]
    (gt_root / "ImageSets" / "2017").mkdir(parents=True)
    (gt_root / "ImageSets" / "2017" / "val.txt").write_text("cat\ndog\n")
    yy, xx = np.mgrid[:48, :64]
    for s, name in enumerate(names):
        for t in range(8):
            gt = np.zeros((48, 64), np.uint8)
            for k in range(1, 3 + s):
                cy, cx = 10 + 8 * k, 8 + 4 * t + 10 * k
                gt[((yy - cy) / 7) ** 2 + ((xx - cx) / 9) ** 2 <= 1] = k
            res = gt.copy()
            res[rng.random(gt.shape) < 0.03] = 0
            res = np.roll(res, int(rng.integers(-2, 3)), axis=1)
            _write_png(gt_root / "Annotations" / "480p" / name / f"{t:05d}.png", gt)
            _write_png(res_root / name / f"{t:05d}.png", res)
    return gt_root, res_root


def test_small_dataset_cli_equals_python_api(tmp_path, capsys):
    gt_root, res_root = _small_dataset(tmp_path)
    out = tmp_path / "eval"
    code, stdout, stderr = _run(capsys, "--gt", str(gt_root), "--results", str(res_root), "--out", str(out))
    assert code == 0, stderr
    api = evaluate_davis(gt_root, res_root, workers=1, progress=False)
    for name in CSV_NAMES:
        assert (out / name).is_file()
    assert (out / "global_results-val.csv").read_text() == api.global_csv()
    assert (out / "per-sequence_results-val.csv").read_text() == api.per_sequence_csv()
    assert (out / "per-sequence.png").is_file()
    assert sorted(p.name for p in (out / "per-frame").iterdir()) == ["cat.png", "dog.png"]
    data = json.loads((out / "results.json").read_text())
    assert data["global"]["J&F-Mean"] == api.global_results["J&F-Mean"]
    assert [o["key"] for s in data["sequences"] for o in s["objects"]] == ["cat_1", "cat_2", "dog_1", "dog_2", "dog_3"]
    for seq_json, seq in zip(data["sequences"], api.sequences):
        for obj_json, obj in zip(seq_json["objects"], seq.objects):
            assert obj_json["J"] == obj.J.tolist() and obj_json["F"] == obj.F.tolist()
            assert obj_json["J-Decay"] == obj.stats["J-Decay"]
    assert f"{api.global_results['J&F-Mean']:.6f}" in stdout


# --------------------------------------------------------------------------------------------------
# The toolkit's malformed-result cases
# --------------------------------------------------------------------------------------------------
SCORED_CASES = sorted(name for name, case in EXPECTED.items() if case["csv_written"])
FAILING_CASES = {
    # case: strings our one-line message must hold (sequence, frame, what is wrong)
    "more_objects": ["seq_b frame 00002", "object id 3", "2 object(s)"],
    "void_255_in_result": ["seq_a frame 00001", "object id 255", "void"],
    "missing_middle_frame": ["seq_a frame 00002", "not found"],
    "missing_sequence": ["seq_b", "not found"],
    "size_mismatch_all_frames": ["seq_a frame 00001", "50x41", "50x40"],
    "size_mismatch_one_frame": ["seq_a frame 00003", "51x40", "50x40"],
    "size_mismatch_transposed": ["seq_a frame 00001", "40x50", "50x40"],
    "rgb_png": ["seq_a frame 00001", "colour image (mode RGB)"],
    "two_frame_sequence": ["two_frames", "2 annotation frame(s)", "at least 3"],
    "gt_first_frame_empty": ["empty_first frame 00001", "object id", "0 object(s)"],
}


def test_every_toolkit_case_is_covered():
    assert set(SCORED_CASES) | set(FAILING_CASES) == set(EXPECTED)


def _gt_root(case: str) -> Path:
    return ERRORS / EXPECTED[case].get("davis_root", "DAVIS")


@pytest.mark.parametrize("case", SCORED_CASES)
def test_toolkit_scored_cases_give_identical_csvs(case, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, stderr = _run(capsys, "--gt", str(_gt_root(case)), "--results", str(ERRORS / "results" / case),
                           "--out", str(out), "--quiet", "--no-plots")
    assert code == 0 == EXPECTED[case]["exit_code"], stderr
    assert (out / "global_results-val.csv").read_text() == EXPECTED[case]["global_results_csv"]
    assert (out / "per-sequence_results-val.csv").read_text() == EXPECTED[case]["per_sequence_results_csv"]


def test_first_frame_without_objects_warns(tmp_path, capsys):
    case = "gt_first_frame_empty_result_empty"
    code, _, stderr = _run(capsys, "--gt", str(_gt_root(case)), "--results", str(ERRORS / "results" / case),
                           "--out", str(tmp_path), "--quiet")
    assert code == 0
    assert stderr == ("stcn: warning: empty_first: the first ground-truth frame 00000 holds no object; "
                      "the sequence is not scored\n")


@pytest.mark.parametrize("case", sorted(FAILING_CASES))
def test_malformed_results_fail_with_one_clear_line(case, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, "--gt", str(_gt_root(case)), "--results", str(ERRORS / "results" / case),
                                "--out", str(out))
    assert code == 2  # the toolkit: exit 0 (nothing scored) or a traceback
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stcn: error: "), stderr
    for fragment in FAILING_CASES[case]:
        assert fragment in lines[0], (fragment, lines[0])
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("workers", ["1", "2"])
def test_first_error_in_order_is_reported_with_a_pool(tmp_path, capsys, monkeypatch, workers):
    """Two broken sequences: the error of the first one (in val.txt order) is the one reported."""
    from stcn.eval import davis_eval

    monkeypatch.setattr(davis_eval, "POOL_MIN_PIXELS", 0)
    results = _copy_results(ERRORS / "results" / "reference_ok", tmp_path / "results")
    rgb = Image.open(results / "seq_a" / "00003.png").convert("RGB")
    rgb.save(results / "seq_a" / "00003.png")
    big = np.asarray(Image.open(results / "seq_b" / "00001.png")).copy()
    big[0, 0] = 9
    Image.fromarray(big, mode="L").save(results / "seq_b" / "00001.png")
    code, _, stderr = _run(capsys, "--gt", str(ERRORS / "DAVIS"), "--results", str(results), "--workers", workers)
    assert code == 2
    assert stderr.startswith("stcn: error: seq_a frame 00003: result ") and stderr.count("\n") == 1


def test_corrupt_result_png(tmp_path, capsys):
    results = _copy_results(ERRORS / "results" / "reference_ok", tmp_path / "results")
    png = results / "seq_a" / "00002.png"
    png.write_bytes(png.read_bytes()[:60])  # truncated
    code, _, stderr = _run(capsys, "--gt", str(ERRORS / "DAVIS"), "--results", str(results))
    assert code == 2 and stderr.count("\n") == 1
    assert stderr.startswith("stcn: error: seq_a frame 00002: result ") and "cannot be read as a PNG" in stderr


def test_blank_lines_in_sequence_list_are_skipped(tmp_path, capsys):
    gt = tmp_path / "DAVIS"
    shutil.copytree(ERRORS / "DAVIS" / "Annotations", gt / "Annotations")
    (gt / "ImageSets" / "2017").mkdir(parents=True)
    (gt / "ImageSets" / "2017" / "val.txt").write_text("seq_a\n\n  seq_b  \n\n")
    code, _, stderr = _run(capsys, "--gt", str(gt), "--results", str(ERRORS / "results" / "reference_ok"),
                           "--out", str(tmp_path / "out"), "--quiet", "--no-plots")
    assert code == 0, stderr
    expected = EXPECTED["reference_ok"]["per_sequence_results_csv"]
    assert (tmp_path / "out" / "per-sequence_results-val.csv").read_text() == expected


# --------------------------------------------------------------------------------------------------
# Usage mistakes
# --------------------------------------------------------------------------------------------------
def test_missing_ground_truth_root(tmp_path, capsys):
    code, _, stderr = _run(capsys, "--gt", str(tmp_path / "nope"), "--results", str(PUBLIC / "results"))
    assert code == 2 and stderr.startswith("stcn: error: ground-truth root") and stderr.count("\n") == 1


def test_missing_sequence_list(tmp_path, capsys):
    code, _, stderr = _run(capsys, "--gt", str(PUBLIC / "DAVIS"), "--results", str(PUBLIC / "results"),
                           "--split", "test-dev")
    assert code == 2 and "ImageSets/2017/test-dev.txt not found" in stderr and stderr.count("\n") == 1


def test_bad_workers(tmp_path, capsys):
    code, _, stderr = _run(capsys, "--gt", str(PUBLIC / "DAVIS"), "--results", str(PUBLIC / "results"),
                           "--workers", "0")
    assert code == 2 and "--workers" in stderr and stderr.count("\n") == 1


def test_help_lists_evaluate(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--help"])
    assert exc.value.code == 0
    assert "--results" in capsys.readouterr().out
