"""The high-level session (stcn.interactive.api) against the low-level pieces it is built on: S2M through
ScribbleInteraction, free_hand + aggregate_sbg, InteractivePropagation.interact; undo / redo restore exact
states; bad input raises UserError. Recipe weights (seed 0), a 6-frame 60x90 synthetic clip (padded to
64x96), K = 2."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from stcn.data.synthetic import generate_video
from stcn.errors import UserError
from stcn.inference.preprocess import unpad
from stcn.interactive import ScribbleInteraction, aggregate_sbg, free_hand
from stcn.interactive.api import InteractiveSession, PropagationCancelled
from stcn.interactive.propagation import InteractivePropagation

K = 2
OBJ1 = [[(20.0, 20.0), (35.5, 24.2), (40.0, 30.0)]]
OBJ2 = [[(60.0, 40.0), (75.0, 45.0)], [(70, 30), (70, 50)]]
BG = [[(2.0, 55.0), (88.0, 57.0)]]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return generate_video(3, num_frames=6, height=60, width=90, num_objects=K).frames


@pytest.fixture
def session(mo_model, s2m_model, fusion_model, frames) -> InteractiveSession:
    return InteractiveSession(mo_model, s2m_model, fusion_model, frames, K, precision="fp32")


def _state(s: InteractiveSession) -> dict:
    return {"prob": s.vos.prob.clone(), "masks": s.vos.masks.clone(), "interacted": set(s.vos.interacted),
            "certain": s.vos.certain.frames, "pending": dict(s._pending), "open": s.open_strokes}


def _assert_same(a: dict, b: dict) -> None:
    assert torch.equal(a["prob"], b["prob"]) and torch.equal(a["masks"], b["masks"])
    assert a["interacted"] == b["interacted"] and a["certain"] == b["certain"] and a["open"] == b["open"]
    assert a["pending"].keys() == b["pending"].keys()
    assert all(torch.equal(a["pending"][f], b["pending"][f]) for f in a["pending"])


def _s2m_direct(s: InteractiveSession, prev_labels: torch.Tensor, t: int, strokes) -> torch.Tensor:
    """The un-padded (K+1, 1, H, W) mask of ScribbleInteraction for these strokes."""
    inter = ScribbleInteraction(prev_labels, s.size, s.vos.pad, K)
    for k, points in strokes:
        inter.add_stroke(k, points)
    return unpad(inter.predict(s.s2m, s.vos.images[t:t + 1]), s.vos.pad)


def test_scribble_equals_the_scribble_interaction(session):
    prev = session.vos.masks[2].clone()
    session.scribble(2, OBJ1, 1)
    session.scribble(2, OBJ2, 2)
    labels = session.scribble(2, BG, 0)
    expected = _s2m_direct(session, prev, 2, [(1, s) for s in OBJ1] + [(2, s) for s in OBJ2] + [(0, s) for s in BG])
    assert torch.equal(session._pending[2], expected)
    assert np.array_equal(labels, expected[:, 0].argmax(0).numpy())
    assert {1, 2} <= set(np.unique(labels).tolist())
    assert session.open_strokes[0] == 2 and len(session.open_strokes[1]) == 4


def test_click_is_a_short_s2m_stroke(session):
    prev = session.vos.masks[1].clone()
    session.click(1, (30, 25), 1)
    labels = session.click(1, (89, 0), 2, positive=False)  # clipped at the corner
    cross = [(1, [(28, 25), (32, 25)]), (1, [(30, 23), (30, 27)]), (0, [(87, 0), (89, 0)]), (0, [(89, 0), (89, 2)])]
    expected = _s2m_direct(session, prev, 1, cross)
    assert np.array_equal(labels, expected[:, 0].argmax(0).numpy())


def test_brush_and_eraser_are_free_hand(session):
    session.scribble(0, OBJ1, 1)
    base = session._pending[0]
    labels = session.brush(0, OBJ2, 2, 7)
    expected = aggregate_sbg(torch.from_numpy(free_hand(base[1:].numpy(), [(2, s) for s in OBJ2], 7)), keep_bg=True)
    assert torch.equal(session._pending[0], expected)
    assert (labels == 2).sum() > 50
    assert session.open_strokes is None  # a brush stroke closes the S2M interaction
    erased = session.erase(0, [[(0, 0), (89, 59)]], 100)
    assert (erased == 0).all()


def test_propagate_equals_interactive_vos(session, mo_model, fusion_model, frames):
    done = []
    session.scribble(0, OBJ1, 1)
    session.scribble(0, OBJ2, 2)
    mask0 = session._pending[0]
    first = session.propagate(progress=lambda d, n: done.append((d, n)))
    assert done == [(d, 5) for d in range(1, 6)]
    assert session.pending_frames == [] and session.open_strokes is None
    prev4 = session.vos.masks[4].clone()
    session.scribble(4, BG, 0)
    mask4 = session._pending[4]
    second = session.propagate(4)

    vos = InteractivePropagation(mo_model, fusion_model, frames, K, precision="fp32")
    assert np.array_equal(vos.interact(mask0, 0), first)
    assert torch.equal(prev4, vos.masks[4])  # the correction started from the same label map
    assert np.array_equal(vos.interact(mask4, 4), second)
    assert torch.equal(vos.prob, session.vos.prob)
    assert np.array_equal(session.masks(), second) and np.array_equal(session.labels(3), second[3])


def test_undo_and_redo_restore_exact_states(session):
    s0 = _state(session)
    session.scribble(0, OBJ1, 1)
    s1 = _state(session)
    session.set_mask(2, np.where(session.labels(0) == 1, 2, 0).astype(np.uint8))
    s2 = _state(session)
    session.propagate(2)
    s3 = _state(session)
    session.click(5, (45, 30), 1)
    session.propagate()
    s5 = _state(session)

    assert session.undo() and session.undo()
    _assert_same(_state(session), s3)
    assert session.undo()
    _assert_same(_state(session), s2)
    assert session.redo()
    _assert_same(_state(session), s3)
    assert session.undo() and session.undo() and session.undo()
    _assert_same(_state(session), s0)
    assert not session.undo()
    for _ in range(5):
        assert session.redo()
    assert not session.redo()
    _assert_same(_state(session), s5)
    # after undoing a propagation, the same interaction propagated again gives the same result
    session.undo()
    session.propagate(5)
    _assert_same(_state(session), s5)
    # a new step clears the redo stack
    session.undo()
    session.commit()
    assert not session.can_redo
    assert s1["open"] == (0, [(1, OBJ1[0])])


def test_cancel_leaves_the_session_unchanged(session):
    session.scribble(3, OBJ1, 1)
    before = _state(session)
    stop = threading.Event()

    def progress(done, total):
        if done == 2:
            stop.set()

    with pytest.raises(PropagationCancelled):
        session.propagate(3, progress=progress, cancel=stop)
    _assert_same(_state(session), before)
    assert len(session.vos.trace) == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda s: s.scribble(6, OBJ1, 1), "frame 6 is outside 0..5"),
    (lambda s: s.scribble(-1, OBJ1, 1), "frame -1 is outside 0..5"),
    (lambda s: s.scribble(0, OBJ1, 3), "unknown object id 3"),
    (lambda s: s.scribble(0, [[(90, 10)]], 1), "point (90, 10) is outside the 90x60 frame"),
    (lambda s: s.scribble(0, [[(10, -0.5)]], 1), "outside the 90x60 frame"),
    (lambda s: s.scribble(0, [[(float("nan"), 1)]], 1), "outside"),
    (lambda s: s.scribble(0, [], 1), "non-empty list"),
    (lambda s: s.scribble(0, [[]], 1), "at least one point"),
    (lambda s: s.scribble(0, [[(1, 2, 3)]], 1), "pair of numbers"),
    (lambda s: s.click(0, (1, 100), 1), "outside"),
    (lambda s: s.brush(0, OBJ1, 1, 0), "brush size"),
    (lambda s: s.set_mask(0, np.zeros((60, 91), np.uint8)), "60x91"),
    (lambda s: s.set_mask(0, np.full((60, 90), 3, np.uint8)), "ids 0..2"),
    (lambda s: s.propagate(), "nothing to propagate"),
    (lambda s: s.propagate(1), "frame 1 has no new interaction"),
])
def test_bad_input_raises_user_error(session, call, message):
    before = _state(session)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(session)
    _assert_same(_state(session), before)
    assert not session.can_undo


def test_without_s2m_and_fusion_brush_works_and_strokes_name_the_command(mo_model, s2m_model, fusion_model,
                                                                          frames):
    """s2m=None (stcn ui with nothing downloaded): scribble and click are refused before any state
    changes; the brush gives the same label maps as with S2M loaded (it never uses S2M)."""
    bare = InteractiveSession(mo_model, None, None, frames, K, precision="fp32")
    full = InteractiveSession(mo_model, s2m_model, fusion_model, frames, K, precision="fp32")
    assert (bare.has_s2m, bare.fused, full.has_s2m, full.fused) == (False, False, True, True)
    before = _state(bare)
    for call in (lambda: bare.scribble(0, OBJ1, 1), lambda: bare.click(0, (20, 20), 1)):
        with pytest.raises(UserError, match=r"`stcn weights download s2m`") as err:
            call()
        assert "\n" not in str(err.value)
    _assert_same(_state(bare), before)
    assert not bare.can_undo
    assert np.array_equal(bare.brush(0, OBJ1, 1, 9), full.brush(0, OBJ1, 1, 9))
    assert (bare.propagate(0) == 1).any()
