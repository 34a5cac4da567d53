"""Fine-tuning the demo model on a shifted synthetic domain raises J&F on held-out videos of it.

Sizes and margin are to be measured with benchmarks/finetune_shifted_domain.py (docs/training.md,
"Fine-tune on your own videos") across a few ``--first-seed`` values; until then the test is skipped:
on the 2 shared cores it was written on, one run did not get past the first evaluation in 20 minutes.
"""
from __future__ import annotations

import json

import pytest

from stcn.cli import main
from stcn.data.shifted_domain import write_sparse_set

TRAIN, VAL = 5, 3
VIDEO = dict(num_frames=12, height=64, width=96)
ITERATIONS = 40
MARGIN = 0.03  # J&F in [0, 1]


@pytest.mark.skip(reason="sizes and MARGIN not yet measured (benchmarks/finetune_shifted_domain.py)")
def test_finetuning_the_demo_model_raises_held_out_jf_on_a_shifted_domain(tmp_path):
    data = write_sparse_set(tmp_path / "data", range(100, 100 + TRAIN + VAL), annotate_every=2, **VIDEO)
    assert main(["train", "--stage", "finetune", "--data", str(data), "--load-network", "demo",
                 "--val-fraction", str(VAL / (TRAIN + VAL)), "--run-dir", str(tmp_path / "run"),
                 "--iterations", str(ITERATIONS), "--crop", "64", "--batch-size", "4", "--lr", "1e-4"]) == 0
    record = json.loads((tmp_path / "run" / "held_out.json").read_text())
    before, after = record["before"]["J&F"], record["after"]["J&F"]
    assert len(record["videos"]) == VAL
    assert after > before + MARGIN, f"held-out J&F before {100 * before:.1f}, after {100 * after:.1f}"
