"""Copy what tests/inference/test_reference_youtube.py compares out of the reference's youtube/ folder.

    python tests/data/reference/youtube/extract.py /path/to/shared/reference/youtube

Inputs are copied byte for byte; probabilities are stored as uint16 = round(p * 65535) (error at most
7.7e-6); label maps and the dataset checks are copied as they are. See README.md here.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def quantise(p: np.ndarray) -> np.ndarray:
    return np.round(p.astype(np.float64) * 65535).astype(np.uint16)


def main(src: Path) -> None:
    shutil.rmtree(HERE / "inputs", ignore_errors=True)
    for f in sorted((src / "inputs").rglob("*")):
        if f.is_file():  # contents only, not the source's read-only modes
            dst = HERE / "inputs" / f.relative_to(src / "inputs")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
    case = json.loads((src / "case.json").read_text())

    checks = {}
    for setup, name in (("default", "dataset_checks.npz"), ("late_start", "dataset_checks_late_start.npz")):
        with np.load(src / name) as f:
            checks.update({f"{setup}__{k}": f[k] for k in f.files})
    np.savez_compressed(HERE / "dataset_checks.npz", **checks)

    probs = {}
    for variant in ("default", "output_all", "late_start"):
        with np.load(src / variant / "prob.npz") as f:
            probs[variant] = {k: f[k] for k in f.files}
    # The frames both default and output_all compute are bit-identical in the original (README 6):
    # store output_all's probabilities once and let default compare against them.
    for t in [*probs["default"]["written_frame_indices"], 11]:
        assert np.array_equal(probs["default"]["prob"][:, t], probs["output_all"]["prob"][:, t]), t

    for variant, p in probs.items():
        trace = case["variants"][variant]["trace"]
        memory = sorted({e["add_memory"]["after_encode_key_of_frame"] for e in trace if "add_memory" in e})
        out = {
            "written_frame_indices": p["written_frame_indices"],
            "written_labels": p["written_labels"],
            "computed_frames": np.array(case["variants"][variant]["stats"]["computed_frames"]),
            "memory_frames": np.array(memory),
        }
        if variant == "output_all":
            out["prob_u16"] = quantise(p["prob"])  # (4, 14, 90, 157), every frame
        elif variant == "late_start":
            out["prob_u16"] = quantise(p["prob"][:, p["written_frame_indices"]])  # written frames only
        np.savez_compressed(HERE / f"{variant}.npz", **out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
