"""The DAVIS-interactive benchmark (``stcn eval interactive``) with MiVOS (S2M + STCN + fusion) on our
own local session, robot and summary (:mod:`stcn.interactive.davis_local`).

Writes ``OUT/report.csv`` (one row per interaction, object and frame: the benchmark report's columns),
``OUT/summary.json`` (AUC, J&F at 60 s, the curve, the settings) and ``OUT/jf_time.png`` (J&F against
time). Files are written to temporary names and renamed, so OUT never holds a half-written file; bad
input is refused before any model runs.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from stcn.errors import UserError
from stcn.inference.device import resolve_device
from stcn.inference.options import precision_label
from stcn.inference.precision import resolve_precision
from stcn.io.files import atomic_write

__all__ = ["format_result", "run_interactive"]


def _plot(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure

    from stcn.eval.plots import save_figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    ax.plot(summary["curve"]["time"], summary["curve"]["J_AND_F"], marker="o")
    ax.axvline(60, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("J&F")
    ax.set_ylim(0, 1)
    ax.set_title(f"AUC {summary['auc']:.3f}, J&F@60s {summary['metric_at_threshold']['J_AND_F']:.3f}")
    save_figure(fig, path)


def run_interactive(root, out, *, weights=None, s2m=None, fusion=None, max_interactions: int = 8,
                    time_per_object: float = 30, device: str | None = None, sequences=None,
                    precision: str = "auto", log=print) -> dict:
    """Run the benchmark; returns the summary dict (also written to ``out``). ``max_time`` per object is
    ``max_interactions * time_per_object`` (the official 8 x 30 = 240 s). ``precision`` is the propagation
    network's (:func:`~stcn.inference.precision.resolve_precision`; ``fp32`` is exact); S2M and fusion run
    in fp32."""
    import torch

    from stcn.interactive import load_fusion, load_s2m
    from stcn.interactive.davis_driver import DAVISProcessor
    from stcn.interactive.davis_local import (
        MAX_INTERACTIONS,
        DavisInteractiveData,
        LocalDavisServer,
        report_table,
    )
    from stcn.weights import registry
    from stcn.weights.io import load_model

    if not 1 <= max_interactions <= MAX_INTERACTIONS:
        raise UserError(f"--max-interactions must be 1..{MAX_INTERACTIONS}, not {max_interactions}")
    if time_per_object <= 0:
        raise UserError("--time-per-object must be positive")
    data = DavisInteractiveData(root, sequences=sequences)  # checks the layout and every scribble first
    paths = (registry.resolve(weights), registry.resolve(s2m, default="s2m", option="--s2m"),
             registry.resolve(fusion, default="fusion", option="--fusion"))
    device = resolve_device(device)
    ran = resolve_precision(precision, device)  # fp16 on a CPU is refused before any model is loaded
    prop_net = load_model(paths[0], device)
    s2m_net, fusion_net = load_s2m(paths[1], device), load_fusion(paths[2], device)
    session = LocalDavisServer(data, max_time=max_interactions * time_per_object, max_interactions=max_interactions)
    frames, processor = None, None
    with torch.inference_mode():
        while session.next():
            name, idx = session.sample
            if frames is None or frames[0] != name:  # read before the clock starts (MiVOS preloads)
                frames = (name, data.frames(name))
            seq, scribble, new = session.get_scribbles(only_last=True)
            if new:  # fresh state per sample, built inside the timed interaction as in MiVOS
                processor = DAVISProcessor(prop_net, fusion_net, s2m_net, frames[1], session.num_objects,
                                           precision=ran)
            pred, candidates, _ = processor.interact(scribble)
            session.submit_masks(pred, candidates)
            if session.interaction == session.max_interactions:
                log(f"{seq} #{idx}: done")
    summary = session.summary()
    result = {**summary, "max_time": session.max_time, "max_interactions": session.max_interactions,
              "avg_num_objects": data.avg_num_objects, "samples": len(data.samples),
              "discarded_submissions": session.discarded, "device": str(device),
              "precision": precision_label(precision, ran)}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(report_table(session.report))
    atomic_write(out / "report.csv", buf.getvalue())
    atomic_write(out / "summary.json", json.dumps(result, indent=1) + "\n")
    _plot(summary, out / "jf_time.png")
    return result


def format_result(result: dict) -> str:
    curve = result["curve"]["J_AND_F"][1:-1]
    lines = [f"AUC {result['auc']:.4f}   J&F@60s {result['metric_at_threshold']['J_AND_F']:.4f}   "
             f"(propagation precision {result['precision']})",
             "J&F after each interaction: " + " ".join(f"{i + 1}:{v:.4f}" for i, v in enumerate(curve))]
    if result["discarded_submissions"]:
        lines.append(f"({result['discarded_submissions']} submissions came after their sample's time and were "
                     "discarded)")
    return "\n".join(lines)
