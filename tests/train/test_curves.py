import json

import numpy as np
import pytest
from PIL import Image

from stcn.errors import DataError
from stcn.train.curves import plot_training_curve, read_log, smooth


def test_smooth_is_a_trailing_mean():
    np.testing.assert_allclose(smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])


def test_plot_from_a_run_folder(tmp_path):
    records = [{"it": i, "loss/total_loss": 1.0 / (i + 1), "iou/object1": i / 100, "lr": 2e-4 if i < 50 else 2e-5}
               for i in range(0, 100, 5)]
    (tmp_path / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert [r["it"] for r in read_log(tmp_path)] == list(range(0, 100, 5))
    png = plot_training_curve(tmp_path, tmp_path / "plots" / "curve.png", window=3)
    assert Image.open(png).size == (900, 400)
    assert [p.name for p in png.parent.iterdir()] == ["curve.png"]


def test_bad_logs_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        read_log(tmp_path / "missing.jsonl")
    (tmp_path / "log.jsonl").write_text("not json\n")
    with pytest.raises(DataError, match="not a training log"):
        read_log(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"it": 1}\n')
    with pytest.raises(DataError, match="no logged losses"):
        plot_training_curve(tmp_path, tmp_path / "c.png")
