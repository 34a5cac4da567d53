"""Scribble encodings against the reference: the DAVIS-interactive path (benchmark scribble dicts ->
Bresenham raster on the padded canvas -> 3x3-dilated pos/neg; units/s2m.npz and two recorded session
steps) and the GUI path (strokes -> OpenCV lines of thickness 3 on the true-size canvas; units/gui.npz),
plus the GUI's free-hand canvas and its S2M prediction."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from interactive_data import INTERACTIVE, PAD, SIZE, K, frame, load_npz

from stcn.interactive import (
    ScribbleInteraction,
    aggregate_wbg,
    canvas_pos_neg,
    davis_pos_neg,
    davis_scribble_maps,
    free_hand,
    rasterize_paths,
    scribbled_frame,
    strokes_canvas,
)
from stcn.interactive.scribbles import NO_LABEL, bresenham, path_pixels


def _session_scribble(ref: dict, i: int) -> dict:
    """The recorded get_scribbles(only_last=True) output of interaction i, as a benchmark dict."""
    t = int(ref[f"i{i}_frame"])
    ids = ref[f"i{i}_object_ids"].tolist()
    paths = [{"path": ref[f"i{i}_path{j}"].tolist(), "object_id": oid} for j, oid in enumerate(ids)]
    return {"sequence": "synth", "scribbles": [[] for _ in range(t)] + [paths] + [[] for _ in range(11 - t)]}


# ---- DAVIS-interactive path ------------------------------------------------------------------------

def test_davis_scribble_of_the_s2m_unit():
    scribble = json.loads((INTERACTIVE / "s2m_scribble.json").read_text())
    ref = load_npz("s2m.npz")
    t, raster, pos, neg = davis_scribble_maps(scribble, SIZE, PAD, K)
    assert t == 4 == scribbled_frame(scribble)
    assert raster.shape == (112, 192) and np.array_equal(raster, ref["scr_mask"])
    assert np.array_equal(pos[1], ref["guidance"][0, 1]) and np.array_equal(neg[1], ref["guidance"][0, 2])


@pytest.mark.parametrize("i", [1, 7])
def test_davis_scribbles_of_the_session(i):
    """Interaction 1 (the human scribble, frame 4; one of its segments is an exact Bresenham tie) and
    7 (8 robot paths of 1000 points, frame 5): raster and the dilated pos/neg of the 3 objects."""
    ref = load_npz("session_scribbles.npz")
    t, raster, pos, neg = davis_scribble_maps(_session_scribble(ref, i), SIZE, PAD, K)
    assert t == int(ref[f"i{i}_frame"])
    assert np.array_equal(raster, ref[f"i{i}_scr_mask"])
    assert np.array_equal(pos, ref[f"i{i}_s2m_pos"]) and np.array_equal(neg, ref[f"i{i}_s2m_neg"])


def test_padded_canvas_quirk_and_correct_placement():
    scribble = {"scribbles": [[{"path": [[0.0, 0.0], [1.0, 1.0]], "object_id": 1}]]}
    _, quirk, _, _ = davis_scribble_maps(scribble, SIZE, PAD, 1)
    _, correct, _, _ = davis_scribble_maps(scribble, SIZE, PAD, 1, padded_canvas=False)
    # MiVOS: the path spans the whole padded canvas (corner to corner, over the padding)
    assert quirk[0, 0] == 1 and quirk[111, 191] == 1
    # correct: drawn at the true size, then padded with "no scribble"
    assert correct[1, 2] == 1 and correct[1 + 108, 2 + 186] == 1
    assert (correct[:1] == -1).all() and (correct[:, :2] == -1).all() and (correct[-2:] == -1).all()


def test_bresenham_lines():
    assert bresenham(39, 90, 45, 89).tolist() == [[39, 90], [40, 90], [41, 90], [42, 89], [43, 89], [44, 89],
                                                 [45, 89]]
    assert bresenham(3, 3, 3, 3).tolist() == [[3, 3]]
    for x1, y1 in [(7, -3), (-5, -9), (0, 6), (-8, 8)]:
        pts = bresenham(0, 0, x1, y1)
        assert pts[0].tolist() == [0, 0] and pts[-1].tolist() == [x1, y1]
        assert len(pts) == max(abs(x1), abs(y1)) + 1
        assert (np.abs(np.diff(pts, axis=0)).max(axis=1) == 1).all()  # 8-connected, no repeats


def test_raster_details():
    # coordinates x (W-1), truncated; a single-point path draws its pixel; later paths overwrite
    assert path_pixels([[0.5, 0.5]], (5, 9)).tolist() == [[4, 2]]
    r = rasterize_paths([{"path": [[0, 0], [1, 0]], "object_id": 2}, {"path": [[0.5, 0]], "object_id": 0}], (3, 5))
    assert r.tolist() == [[2, 2, 0, 2, 2], [-1] * 5, [-1] * 5]
    pos, neg = davis_pos_neg(r, 2)
    assert pos[0].sum() == 0 and neg[0].sum() == 10  # object 1: every scribbled pixel is negative
    assert pos[1].tolist() == [[1] * 5, [1] * 5, [0] * 5] and neg[1].tolist() == [[0, 1, 1, 1, 0]] * 2 + [[0] * 5]
    with pytest.raises(ValueError, match="no path"):
        davis_scribble_maps({"scribbles": [[], []]}, SIZE, PAD, 1)


# ---- GUI path ----------------------------------------------------------------------------------------

def _strokes():
    return json.loads((INTERACTIVE / "gui_strokes.json").read_text())


def test_gui_canvas_and_free_hand():
    ref = load_npz("gui.npz")
    strokes = [(oid, pts) for oid, pts in _strokes()["strokes"]]
    canvas = strokes_canvas(strokes, SIZE)
    assert np.array_equal(canvas, ref["scribble_drawn_map"])  # incl. round(40.5) = 40 (Python rounding)
    pos, neg = canvas_pos_neg(canvas, K)
    assert np.array_equal(pos[0], canvas == 1) and np.array_equal(neg[0], (canvas != 1) & (canvas != NO_LABEL))
    # free-hand (brush 9) over the objects-only soft aggregation of the one-hot ground truth of frame 4
    gt = ref["prev_label_map"][0, 1:-2, 2:-3]
    one_hot = torch.from_numpy(np.stack([gt == k for k in range(1, K + 1)]).astype(np.float32))[:, None]
    start = aggregate_wbg(one_hot).numpy()
    drawn = free_hand(start, strokes, thickness=_strokes()["free_thickness"])
    assert np.abs(drawn - ref["free_drawn_map"]).max() <= 2e-5
    assert np.array_equal(start, aggregate_wbg(one_hot).numpy())  # not modified in place


def test_single_point_stroke_draws_nothing():
    assert (strokes_canvas([(1, [(10.0, 10.0)])], SIZE) == NO_LABEL).all()


def test_gui_scribble_interaction_predicts_the_reference_mask(s2m_model):
    """ScribbleInteraction + S2M (3 objects, hard wbg aggregation) vs the reference's predict().

    The hard aggregation multiplies log-odds by 1000, so the 1e-4 logit tolerance becomes one on
    1000 x log-odds: we compare log(mask) (floored at 1e-30) within 0.2 (= 2 x 1000 x 1e-4; even
    float64 evaluation of the same network moves the mask itself by up to 1.3e-3), and the labels exactly.
    """
    ref = load_npz("gui.npz")
    interaction = ScribbleInteraction(ref["prev_label_map"][0], SIZE, PAD, K)
    for oid, pts in _strokes()["strokes"]:
        interaction.add_stroke(oid, pts)
    assert np.array_equal(interaction.canvas, ref["scribble_drawn_map"])
    pos, _ = interaction.pos_neg()
    assert pos.shape == (K, 112, 192) and pos[:, :1].sum() == 0 and pos[:, :, :2].sum() == 0  # zero-padded
    mask = interaction.predict(s2m_model, frame(4))
    expected = torch.from_numpy(ref["scribble_out_mask"])
    assert mask.shape == expected.shape
    log_diff = (mask.clamp_min(1e-30).log() - expected.clamp_min(1e-30).log()).abs().max()
    assert float(log_diff) <= 0.2
    assert torch.equal(mask.argmax(0), expected.argmax(0))
    with pytest.raises(ValueError, match="outside"):
        interaction.add_stroke(K + 1, [(0, 0), (1, 1)])
