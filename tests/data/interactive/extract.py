"""Copy what tests/interactive compares out of the project's shared/reference/interactive folder.

    python tests/data/interactive/extract.py /path/to/shared/reference/interactive

Float tensors are copied bit for bit, but only the channels / pixels the tests compare (listed in
README.md here); small files are copied as they are. Frames and annotations are not copied: they are
byte-identical to tests/data/reference/davis/inputs (checked here).
"""
from __future__ import annotations

import filecmp
import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DAVIS_INPUTS = HERE.parent / "reference" / "davis" / "inputs"
SESSION_INTERACTIONS = (1, 7)  # scribble rasters (1: the human scribble, 7: 8 robot paths on frame 5)
SESSION_LOGITS = 7  # S2M logits given the recorded inputs (frame 5, previous labels 0..3)
PROB_FRAMES = {1: (2, 8, 11), 2: (4, 10), 3: (5, 7)}  # propagation: frames whose probabilities are kept


def load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def first_frame_paths(scribble: dict) -> tuple[int, list]:
    for t, paths in enumerate(scribble["scribbles"]):
        if paths:
            return t, paths
    raise ValueError("empty scribble")


def quantise(p: np.ndarray) -> np.ndarray:
    """Probabilities -> uint16 round(p * 65535) (error at most 7.7e-6)."""
    return np.round(p.astype(np.float64) * 65535).astype(np.uint16)


def propagation(src: Path) -> dict[str, np.ndarray]:
    p = load(src / "units" / "propagation.npz")
    out: dict[str, np.ndarray] = {}
    full = np.zeros((4, 12, 112, 192), np.float32)  # the core's prob buffer after each round
    full[0] = 1e-7
    for r in (1, 2, 3):
        changed = p[f"round{r}_changed_frames"]
        full[:, changed] = p[f"round{r}_prob_changed"]
        top2 = np.sort(full, axis=0)[-2:]
        assert np.array_equal(full.argmax(0), p[f"round{r}_labels"])
        out[f"round{r}_changed_frames"] = changed
        out[f"round{r}_labels"] = p[f"round{r}_labels"]
        out[f"round{r}_low_margin"] = np.packbits(top2[1] - top2[0] < 1e-3, axis=-1)  # (12, 112, 24) uint8
        out[f"round{r}_prob_frames"] = np.array(PROB_FRAMES[r])
        out[f"round{r}_prob_objects_u16"] = quantise(full[1:, list(PROB_FRAMES[r])])  # (3, n, 112, 192)
    out["round3_fuse_t7_curr_objects_sub3_u16"] = quantise(p["round3_fuse_t7_curr"][1:, ::3, ::3])
    out["round3_fuse_t7_attn_obj_sub3"] = p["round3_fuse_t7_attn_obj"][:, :, ::3, ::3]
    return out


def session_replay(ref: Path) -> None:
    """The DAVIS-interactive session (reference/session): scribbles, per-interaction S2M inputs and
    outputs, submitted labels, the fusion round's probabilities; robot and summary cases as they are."""
    with gzip.open(ref / "session" / "scribbles.json.gz") as f:
        scribbles = json.loads(f.read())
    for i, s in enumerate(scribbles["per_interaction_input"][1:]):
        assert s == scribbles["robot_output"][i]  # the robot's output is the next interaction's input
    with gzip.open(HERE / "session_scribbles.json.gz", "wt") as f:
        json.dump({"initial": scribbles["initial"], "robot_output": scribbles["robot_output"]}, f)
    out = {}
    for i in range(1, 9):
        d = load(ref / "session" / f"interaction_{i}.npz")
        out[f"i{i}_pred_masks"] = d["pred_masks"]
        out[f"i{i}_scr_mask"] = d["scr_mask"]
        out[f"i{i}_prev_label_map"] = d["s2m_prev_label_map"]
        out[f"i{i}_pos_bits"] = np.packbits(d["s2m_pos"], axis=-1)
        out[f"i{i}_neg_bits"] = np.packbits(d["s2m_neg"], axis=-1)
        out[f"i{i}_logits_sub3"] = d["s2m_logits"][:, ::3, ::3]  # 3 and the x4 upsampling are coprime
        if "prob_changed" in d:
            assert d["prob_changed_frames"].tolist() == [0, 1, 2, 3]
            out[f"i{i}_prob_frames"] = d["prob_changed_frames"][1:]  # frame 0 = the hard S2M mask
            out[f"i{i}_prob_objects_u16"] = quantise(d["prob_changed"][1:, 1:])
            out[f"i{i}_labels_padded"] = d["labels_padded"]
    np.savez_compressed(HERE / "session_replay.npz", **out)
    for name in ("trace.json", "report.csv", "summary.json"):
        shutil.copyfile(ref / "session" / name, HERE / f"session_{name}")
    for name in ("robot_cases.npz", "robot_cases.json.gz"):
        shutil.copyfile(ref / "robot" / name, HERE / name)
    shutil.copyfile(ref / "summary_case" / "report_in.csv", HERE / "summary_report_in.csv")
    shutil.copyfile(ref / "summary_case" / "summary_expected.json", HERE / "summary_expected.json")


def main(src: Path) -> None:
    ref = src / "reference"
    for kind in ("frames", "annotations"):
        for f in sorted((ref / "inputs" / kind).iterdir()):
            assert filecmp.cmp(f, DAVIS_INPUTS / kind / f.name, shallow=False), f
    for name in ("manifest_s2m.json", "manifest_fusion.json", "manifest_propagation_order.json"):
        shutil.copyfile(src / name, HERE / name)
    shutil.copyfile(ref / "weights_checksums.json", HERE / "weights_checksums.json")
    for name in ("aggregate.npz", "gui.npz", "gui_strokes.json", "s2m_scribble.json", "case.json"):
        shutil.copyfile(ref / "units" / name, HERE / name)

    s = load(ref / "units" / "s2m.npz")
    branches = s["aspp_branches"].reshape(1, 5, 256, 7, 12)[:, :, :32].reshape(1, 160, 7, 12)
    np.savez_compressed(
        HERE / "s2m.npz",
        guidance=s["input"][:, 3:].astype(np.uint8),  # previous mask, pos, neg (0/1)
        scr_mask=s["scr_mask"],
        layer1_ch0_15=s["layer1_ch0_63"][:, :16],
        layer2_ch0_31=s["layer2_ch0_31"],
        layer3_ch0_31=s["layer3_ch0_31"],
        layer4_ch0_127=s["layer4"][:, :128],
        aspp_branches_ch0_31=branches,  # channels 0..31 of each of the 5 branches
        aspp=s["aspp"],
        low_level_project_ch0_15=s["low_level_project"][:, :16],
        logits_quarter=s["logits_quarter"],
        logits=s["logits"],
        prob=s["prob"],
        logits_empty_input=s["logits_empty_input"],
    )

    f = load(ref / "units" / "fusion_net.npz")
    np.savez_compressed(
        HERE / "fusion_net.npz",
        **{k: f[k] for k in ("seg1", "seg2", "attn", "dist", "logits", "prob")},
        **{f"{k}_ch0_7": f[k][:, :8] for k in ("conv1", "conv2_branch", "conv3_branch")},
    )

    a = load(ref / "units" / "attention.npz")
    np.savez_compressed(
        HERE / "attention.npz",
        **{k: a[k] for k in ("mk16", "qk16", "W", "pos_area", "pos", "neg")},
        attn_sub3=a["attn"][:, :, ::3, ::3],  # every 3rd row and column (3 and 16 are coprime)
    )

    with gzip.open(ref / "session" / "scribbles.json.gz") as f:
        scribbles = json.loads(f.read())
    out = {}
    for i in SESSION_INTERACTIONS:
        d = load(ref / "session" / f"interaction_{i}.npz")
        frame, paths = first_frame_paths(scribbles["per_interaction_input"][i - 1])
        out[f"i{i}_frame"] = np.array(frame)
        out[f"i{i}_object_ids"] = np.array([p["object_id"] for p in paths])
        for j, p in enumerate(paths):
            out[f"i{i}_path{j}"] = np.asarray(p["path"], dtype=np.float64)
        for k in ("scr_mask", "s2m_pos", "s2m_neg"):
            out[f"i{i}_{k}"] = d[k]
    d = load(ref / "session" / f"interaction_{SESSION_LOGITS}.npz")
    out["logits_interaction"] = np.array(SESSION_LOGITS)
    out["s2m_prev_label_map"] = d["s2m_prev_label_map"]
    out["s2m_logits"] = d["s2m_logits"]
    np.savez_compressed(HERE / "session_scribbles.npz", **out)
    np.savez_compressed(HERE / "propagation.npz", **propagation(ref))
    session_replay(ref)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
