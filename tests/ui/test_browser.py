"""End to end in headless Chromium (the system's ``chromium`` driven by Playwright; no browser download):
open a synthetic clip, scribble two objects, propagate, correct a frame, propagate again, save. The saved
PNGs must equal the masks of the same strokes replayed through the Python API (the page sends point
lists; the server rasterises them). Skips when chromium or playwright is missing.

Set STCN_UI_SCREENSHOT=path.png to also write a screenshot of the page (docs/ui.png is made this way).
"""
from __future__ import annotations

import contextlib
import os
import shutil

import numpy as np
import pytest
from ui_helpers import NAMES, replay

from stcn.io.masks import load_label_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
H, W = 96, 128


@contextlib.contextmanager
def _browser(url: str, tmp_path):
    """A headless Chromium page on ``url``, ready (the page set data-ready); page errors fail the test."""
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=["--headless", *FLAGS],
            viewport={"width": 1200, "height": 820}, bypass_csp=True)  # wait_for_function evaluates strings
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_function("document.body.dataset.ready === '1'", timeout=30_000)
        yield page
        context.close()
        assert not errors, errors


@pytest.fixture
def page(server, tmp_path):
    with _browser(server, tmp_path) as page:
        yield page


@pytest.fixture
def offline_page(offline_server, tmp_path):
    """The page of ``stcn ui`` with no downloaded weights (demo model, no S2M, no FusionNet)."""
    with _browser(offline_server, tmp_path) as page:
        yield page


def _idle(page) -> None:
    page.wait_for_function("document.body.dataset.inflight === '0'", timeout=60_000)


def _draw(page, points) -> None:
    box = page.locator("#strokes").bounding_box()
    screen = [(box["x"] + (x + 0.5) * box["width"] / W, box["y"] + (y + 0.5) * box["height"] / H) for x, y in points]
    page.mouse.move(*screen[0])
    page.mouse.down()
    for xy in screen[1:]:
        page.mouse.move(*xy, steps=4)
    page.mouse.up()
    _idle(page)


def _propagate(page) -> None:
    before = page.evaluate("document.body.dataset.version")
    page.keyboard.press("p")
    page.wait_for_function(f"document.body.dataset.job === 'done' && document.body.dataset.version !== '{before}'"
                           " && document.body.dataset.inflight === '0'", timeout=60_000)


def test_scribble_propagate_correct_save(page, state, make_session, clip, tmp_path):
    # with S2M every tool and Commit are enabled and no note is shown
    assert all(r.is_enabled() for r in page.locator("input[name=tool]").all())
    assert page.locator("#commit").is_enabled() and page.locator("#tools-note").is_hidden()
    page.keyboard.press("1")
    _draw(page, [(30, 40), (40, 44), (50, 52)])
    page.keyboard.press("2")
    _draw(page, [(90, 30), (96, 40), (100, 50)])
    assert page.evaluate("document.body.dataset.shown").startswith("0@")
    _propagate(page)
    assert "propagated from frame 0" in page.locator("#status").inner_text()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("document.body.dataset.frame === '5'")
    page.keyboard.press("x")  # background
    _draw(page, [(5, 85), (60, 88), (120, 90)])
    page.keyboard.press("x")
    page.keyboard.press("1")
    _draw(page, [(20, 20), (30, 25)])
    _propagate(page)
    page.keyboard.press("Control+z")  # undo the correction's propagation, then redo it
    _idle(page)
    page.keyboard.press("Control+y")
    _idle(page)
    page.locator("#save").click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('saved 8 masks')")
    if os.environ.get("STCN_UI_SCREENSHOT"):
        page.locator("#opacity").fill("60")
        page.screenshot(path=os.environ["STCN_UI_SCREENSHOT"])

    ops = [e["op"] for e in state.log]
    assert ops == ["scribble", "scribble", "propagate", "scribble", "scribble", "propagate", "undo", "redo"]
    assert state.log[0]["object_id"] == 1 and state.log[1]["object_id"] == 2 and state.log[3]["object_id"] == 0
    saved = np.stack([load_label_png(tmp_path / "out" / "masks" / f"{t:05d}.png") for t in range(8)])
    assert np.array_equal(saved, replay(make_session(), state.log))
    assert {1, 2} <= set(np.unique(saved[0]))  # synthetic weights: no claim on the background


def test_offline_brush_propagate_correct_save(offline_page, offline_state, clip, tmp_path):
    """No weights downloaded: scribble and click are greyed out with the command that enables them, the
    page says propagation is unfused, and brush -> propagate -> erase on another frame -> propagate ->
    save writes the masks the same calls give through the Python API."""
    page = offline_page
    for tool in ("scribble", "click"):
        radio = page.locator(f"input[name=tool][value={tool}]")
        assert radio.is_disabled() and not radio.is_checked()
        label = page.locator(f"label:has(input[name=tool][value={tool}])")
        assert "unavailable" in label.get_attribute("class")
        assert label.get_attribute("title") == "needs the S2M network: stcn weights download s2m"
    for tool in ("brush", "eraser"):
        assert page.locator(f"input[name=tool][value={tool}]").is_enabled()
    assert page.locator("input[name=tool][value=brush]").is_checked()  # the default moved to the brush
    # Commit closes a scribble interaction: disabled too, naming the same command
    commit = page.locator("#commit")
    assert commit.is_disabled() and commit.get_attribute("title") == "needs the S2M network: stcn weights download s2m"
    tools_note = page.locator("#tools-note")
    assert tools_note.is_visible() and page.locator("#tools-note code").inner_text() == "stcn weights download s2m"
    assert page.locator("#propagate").is_enabled() and page.locator("#save").is_enabled()
    assert page.locator("#propagation-note code").inner_text() == "stcn weights download fusion"
    note = page.locator("#propagation-note").inner_text()
    assert "demo model" in note and "not fused" in note and "stcn weights download fusion" in note
    page.locator("label:has(input[name=tool][value=scribble])").click(force=True)  # a click on it does nothing
    page.keyboard.press("s")  # the shortcut cannot pick a disabled tool either
    assert page.locator("input[name=tool][value=brush]").is_checked()
    assert "stcn weights download s2m" in page.locator("#status").inner_text()
    page.keyboard.press("Enter")  # nor commit: no request is queued (the log below has no commit either)
    assert page.evaluate("document.body.dataset.inflight") is None
    assert "commit" not in page.locator("#status").inner_text()

    page.locator("#brush-size").fill("15")
    for k in (1, 2):  # a short stroke through each object's centre: part of it, not its outline
        ys, xs = np.nonzero(clip.labels[0] == k)
        cx, cy = int(xs.mean()), int(ys.mean())
        page.keyboard.press(str(k))
        _draw(page, [(cx - 3, cy), (cx + 3, cy)])
    _propagate(page)
    assert "propagated from frame 0" in page.locator("#status").inner_text()
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    page.wait_for_function("document.body.dataset.frame === '5'")
    page.keyboard.press("e")  # eraser: a band across the frame
    _draw(page, [(5, 60), (60, 62), (122, 64)])
    _propagate(page)
    page.locator("#save").click()
    page.wait_for_function("document.getElementById('status').textContent.startsWith('saved 8 masks')")

    log = offline_state.log
    assert [e["op"] for e in log] == ["brush", "brush", "propagate", "brush", "propagate"]
    assert [e["object_id"] for e in log if e["op"] == "brush"] == [1, 2, 0] and log[0]["size"] == 15
    saved = np.stack([load_label_png(tmp_path / "out" / "masks" / f"{n}.png") for n in NAMES])
    import stcn
    from stcn.interactive.api import InteractiveSession

    # the model and the precision the page used (auto: bf16 on a CPU with native bfloat16, else fp32)
    ran = offline_state.session.vos.frame_step.precision
    ref = InteractiveSession(stcn.load_model("demo"), None, None, clip.frames, 2, precision=ran)
    assert np.array_equal(saved, replay(ref, log))
    gt = clip.labels
    # the demo model grows the central strokes into the objects: object 1, clear of the erased band,
    # is tracked on every frame (measured IoU 0.85..0.92 on frames 1..7)
    iou1 = [((saved[t] == 1) & (gt[t] == 1)).sum() / ((saved[t] == 1) | (gt[t] == 1)).sum() for t in range(1, 8)]
    assert min(iou1) > 0.75, iou1
    assert not saved[5][58:67, 5:123].any()  # the erased band (15 px wide around y = 60..64) is background
    assert (saved[5] == 2).sum() < 0.2 * (gt[5] == 2).sum()  # the band ran over object 2 on frame 5
