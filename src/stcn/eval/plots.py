"""Plots of an evaluation: J&F per sequence, and J per object over time (matplotlib, Agg, no pyplot)."""
from __future__ import annotations

import math
import os
from pathlib import Path

from stcn.eval.davis_eval import EvaluationResult
from stcn.io.files import atomic_file


def save_figure(fig, path: Path) -> None:
    """Save atomically: render to a temp file in the same folder, then rename."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def plot_per_sequence(result: EvaluationResult, path: str | os.PathLike) -> Path:
    """Bar chart of J&F per sequence, best first, with the global J&F-Mean as a line."""
    from matplotlib.figure import Figure

    scores = [(name, jf) for name, jf in result.per_sequence_jf().items() if not math.isnan(jf)]
    scores.sort(key=lambda item: (-item[1], item[0]))
    width = max(6.0, 0.3 * len(scores) + 2.0)
    fig = Figure(figsize=(width, 4.8))
    ax = fig.add_subplot()
    xs = range(len(scores))
    ax.bar(xs, [s for _, s in scores], color="#4c72b0")
    ax.set_xticks(list(xs), [n for n, _ in scores], rotation=90, fontsize=8)
    mean = result.global_results["J&F-Mean"]
    if not math.isnan(mean):
        ax.axhline(mean, color="#c44e52", linestyle="--", label=f"J&F-Mean (all objects) = {mean:.3f}")
        ax.legend(loc="upper right")
    ax.set_ylim(0, 1.0)
    ax.set_ylabel("J&F (mean over the sequence's objects)")
    ax.set_title(f"DAVIS {result.year} {result.split}: J&F per sequence")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    save_figure(fig, out)
    return out


def plot_per_frame(result: EvaluationResult, out_dir: str | os.PathLike) -> list[Path]:
    """One figure per sequence, ``<out_dir>/<seq>.png``: J of every object over the scored frames."""
    from matplotlib.figure import Figure

    paths = []
    for seq in result.sequences:
        fig = Figure(figsize=(8, 3.6))
        ax = fig.add_subplot()
        xs = [int(f) if f.isdigit() else i + 1 for i, f in enumerate(seq.frame_ids)]
        for obj in seq.objects:
            ax.plot(xs, obj.J, marker="." if len(xs) < 40 else None,
                    label=f"object {obj.id} (J-Mean {obj.stats['J-Mean']:.3f})")
        if seq.objects:
            ax.legend(loc="lower left", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no object in the first ground-truth frame", ha="center", transform=ax.transAxes)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("frame")
        ax.set_ylabel("J (region similarity)")
        ax.set_title(seq.name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = Path(out_dir) / f"{seq.name}.png"
        save_figure(fig, out)
        paths.append(out)
    return paths
