"""`stcn segment` stopped mid-run: SIGINT and SIGTERM end it with one line and leave nothing; after
SIGKILL (no clean-up possible) the next run to the same --out and --overlay sweeps the dead run's
staging and leaves no partial file."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from hostile_inputs import child_env, cli_command, label_map, listing, run_cli, write_frames, write_mask

LONG = 150  # frames: enough that the run is still going when the signal arrives


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("long_clip")
    return write_frames(root / "frames", frames=LONG, h=32, w=48), write_mask(root / "mask.png", label_map(32, 48))


def _args(clip, work: Path) -> list:
    frames, mask = clip
    return ["segment", frames, "--mask", mask, "--out", work / "out", "--weights", "demo", "--size", "-1",
            "--overlay", work / "overlay.mp4", "--quiet"]


def _default_sigint() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and an ignored signal
    # stays ignored across exec (Python then installs no KeyboardInterrupt handler): a suite launched
    # with `cmd &` would hand that to the child. The test is about Ctrl-C, so give the child its default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(clip, work: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_command(_args(clip, work)), cwd=work, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _wait_until_mid_run(work: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until the run has written a few PNGs into its hidden staging folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        staged = [p for p in work.glob(".out.stcn-tmp-*") if p.is_dir()]
        if staged and len(list(staged[0].glob("*.png"))) >= 3:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be stopped: {proc.stderr.read()}")
        time.sleep(0.02)
    proc.kill()
    pytest.fail("the run wrote no PNG in time")


def _debris(work: Path) -> list[str]:
    return sorted(p for p in listing(work) if ".stcn-tmp-" in p or ".tmp" in p)


@pytest.mark.parametrize("sig, status, message", [(signal.SIGINT, 130, "stcn: interrupted"),
                                                  (signal.SIGTERM, 143, "stcn: terminated")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_is_one_line_and_leaves_nothing(long_clip, tmp_path, sig, status, message):
    proc = _start(long_clip, tmp_path)
    _wait_until_mid_run(tmp_path, proc)
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert err.splitlines() == [message], err
    assert listing(tmp_path) == set()  # no partial PNG, no video, no staging


def test_sigkill_debris_is_swept_by_the_next_run(long_clip, tmp_path):
    proc = _start(long_clip, tmp_path)
    _wait_until_mid_run(tmp_path, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    left = _debris(tmp_path)
    assert any(p.startswith(".out.stcn-tmp-") for p in left), left  # what a dead run leaves
    assert not (tmp_path / "out").exists() and not (tmp_path / "overlay.mp4").exists()

    rerun = run_cli(_args(long_clip, tmp_path), cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert _debris(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "overlay.mp4"]
    assert len(list((tmp_path / "out").glob("*.png"))) == LONG and (tmp_path / "overlay.mp4").stat().st_size > 0
