"""The training curve of a run: loss and IoU against iterations, read from ``RUN_DIR/log.jsonl``.

    python -m stcn.train.curves runs/demo_small docs/images/demo_training_curve.png
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from stcn.errors import DataError


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a run's ``log.jsonl`` (one JSON object per logged iteration), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / "log.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"cannot read the training log {path}: {exc.strerror}") from None
    try:
        return [json.loads(line) for line in lines if line.strip()]
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a training log (line {exc.lineno}: {exc.msg})") from None


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over up to ``window`` points (the first points average what exists)."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)


def plot_training_curve(log: str | os.PathLike, png: str | os.PathLike, *, window: int = 10,
                        title: str | None = None) -> Path:
    """Plot total loss (log scale) and mean object IoU against iteration, raw and smoothed; the lr
    steps are marked. Written atomically to ``png``."""
    from matplotlib.figure import Figure

    from stcn.eval.plots import save_figure

    records = [r for r in read_log(log) if "loss/total_loss" in r]
    if not records:
        raise DataError(f"{log}: no logged losses")
    its = np.array([r["it"] for r in records])
    loss = np.array([r["loss/total_loss"] for r in records])
    ious = np.array([np.nanmean([v for k, v in r.items() if k.startswith("iou/")] or [np.nan]) for r in records])
    fig = Figure(figsize=(9, 4))
    ax_loss, ax_iou = fig.subplots(1, 2)
    for ax, values, name in ((ax_loss, loss, "total loss"), (ax_iou, ious, "IoU (mean over objects)")):
        ax.plot(its, values, color="#9db4d9", linewidth=0.8, label="logged")
        ax.plot(its, smooth(values, window), color="#4c72b0", linewidth=1.8, label=f"mean of {window}")
        ax.set_xlabel("iteration")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    ax_loss.set_yscale("log")
    ax_iou.set_ylim(0, 1)
    lrs = [r.get("lr") for r in records]
    for i in range(1, len(lrs)):
        if lrs[i] is not None and lrs[i - 1] is not None and lrs[i] != lrs[i - 1]:
            for ax in (ax_loss, ax_iou):
                ax.axvline(its[i], color="#c44e52", linestyle="--", linewidth=1)
            ax_iou.text(its[i], 0.02, f" lr {lrs[i]:.0e}", color="#c44e52", fontsize=8)
    ax_iou.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, Path(png))
    return Path(png)


if __name__ == "__main__":  # pragma: no cover - thin command line
    if len(sys.argv) != 3:
        sys.exit("usage: python -m stcn.train.curves RUN_DIR_OR_LOG OUT.png")
    print(plot_training_curve(sys.argv[1], sys.argv[2]))
