"""Fixtures for the UI tests: the interactive tests' recipe networks (their fixtures are reused, not
copied), a small synthetic clip, a UI state and its server on a free loopback port."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from ui_helpers import NAMES, ui_args

pytest.importorskip("starlette", reason="the ui extra (starlette, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the ui extra (starlette, uvicorn) is not installed")

_INTERACTIVE = Path(__file__).resolve().parents[1] / "interactive"
sys.path.insert(0, str(_INTERACTIVE))  # recipe_interactive, interactive_data
_spec = importlib.util.spec_from_file_location("interactive_fixtures", _INTERACTIVE / "conftest.py")
_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fixtures)
one_thread = _fixtures.one_thread
s2m_weights, fusion_weights = _fixtures.s2m_weights, _fixtures.fusion_weights
s2m_model, fusion_model = _fixtures.s2m_model, _fixtures.fusion_model

K = 2


@pytest.fixture(scope="session")
def clip():
    from stcn.data.synthetic import generate_video

    return generate_video(5, num_frames=8, height=96, width=128, num_objects=K)


@pytest.fixture
def make_session(mo_model, s2m_model, fusion_model, clip):
    from stcn.interactive.api import InteractiveSession

    def make(k: int = K) -> InteractiveSession:
        return InteractiveSession(mo_model, s2m_model, fusion_model, clip.frames, k, precision="fp32")

    return make


@pytest.fixture
def state(make_session, clip, tmp_path):
    from stcn.ui.state import UIState

    return UIState(make_session, clip.frames, [f"{t:05d}" for t in range(clip.num_frames)], K, tmp_path / "out",
                   title="synthetic")


@pytest.fixture
def server(state):
    """The URL of a running server for ``state``."""
    from stcn.ui.server import BackgroundServer, create_app

    with BackgroundServer(create_app(state)) as url:
        yield url


# ---- the offline setup: no downloaded weights (``stcn ui`` out of the box) ------------------------------
@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """An empty $STCN_HOME: none of the downloadable weights is on this machine."""
    home = tmp_path / "stcn_home"
    monkeypatch.setenv("STCN_HOME", str(home))
    return home


@pytest.fixture
def offline_state(one_thread, empty_home, clip, tmp_path, capsys):
    """The UIState that ``stcn ui`` builds with no weights at all (the CLI's own code path)."""
    from stcn.ui.launch import build_state

    state = build_state(ui_args(tmp_path), clip.frames, NAMES, 24.0)
    state.notes = capsys.readouterr().err  # what the terminal was told
    return state


@pytest.fixture
def offline_server(offline_state):
    from stcn.ui.server import BackgroundServer, create_app

    with BackgroundServer(create_app(offline_state)) as url:
        yield url
