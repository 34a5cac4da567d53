"""Resumable ``stcn segment`` runs: engine state on disk as safetensors + JSON, and the progress folder.

A run started with ``--resume`` writes its outputs into a hidden sibling of ``--out`` with a fixed name,
``.<out>.stcn-resume``, instead of a throw-away staging folder, and keeps a checkpoint there
(``.state/``: ``engine.safetensors`` with the engine's tensors, ``state.json`` with everything else):

* every ``checkpoint_every`` written frames, and when the run is interrupted (Ctrl-C or SIGTERM: the
  signal is held until the frame being computed is complete, then the checkpoint is written and the run
  stops), always after the frames it covers are on disk;
* the same command with ``--resume`` again finds the folder, checks that the checkpoint was made for the
  same video, masks, model and options (else it refuses with one line), restores the engine and carries
  on after the checkpoint's frame; at the end the outputs are published into ``--out`` as an ordinary
  run's and the folder is removed.

Nothing here uses pickle: tensors go through safetensors, the rest through JSON.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from stcn.errors import DataError

__all__ = ["STATE_FOLDER", "STATE_VERSION", "fingerprint_model", "fingerprint_paths", "load_state", "progress_folder",
           "resumable_output", "save_state"]

STATE_FOLDER = ".state"
STATE_VERSION = 1
_TENSORS, _META = "engine.safetensors", "state.json"


def progress_folder(out: str | os.PathLike) -> Path:
    """The fixed hidden sibling of ``out`` that a resumable run writes into: ``.<name>.stcn-resume``."""
    out = Path(out)
    return out.parent / f".{out.name}.stcn-resume"


def fingerprint_model(model: torch.nn.Module) -> str:
    """sha256 of the model's parameter and buffer names, shapes, dtypes and bytes (another checkpoint, or
    the same one at another precision, gives another fingerprint)."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def fingerprint_paths(path: str | os.PathLike, *, content: bool = False) -> str:
    """sha256 describing a file or the files of a folder (not recursive): names, sizes and modification
    times, or with ``content`` their bytes (for masks, which are small)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:".encode())
        h.update(f.read_bytes() if content else str(st.st_mtime_ns).encode())
    return h.hexdigest()


def save_state(folder: str | os.PathLike, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write ``tensors`` (``engine.safetensors``) and ``meta`` (``state.json``) as one folder, replaced
    atomically: a reader sees the previous checkpoint or this one, never a mix."""
    from safetensors.torch import save_file

    from stcn.io.files import atomic_folder

    with atomic_folder(folder) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / _TENSORS))
        (tmp / _META).write_text(json.dumps({"version": STATE_VERSION, **meta}, indent=1, sort_keys=True))


def load_state(folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
    """``(meta, tensors)`` saved by :func:`save_state`, or None when ``folder`` holds no checkpoint.
    Raises :class:`DataError` for an unreadable or foreign one."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / _META).is_file():
        return None
    try:
        meta = json.loads((folder / _META).read_text())
        tensors = load_file(str(folder / _TENSORS))
    except (OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"--resume: cannot read the checkpoint in {folder} ({str(exc).splitlines()[0][:200]}); "
                        "delete the folder to start again") from None
    if meta.get("version") != STATE_VERSION:
        raise DataError(f"--resume: the checkpoint in {folder} has version {meta.get('version')}, not "
                        f"{STATE_VERSION}; delete the folder to start again")
    return meta, tensors


@contextlib.contextmanager
def resumable_output(final: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Like :func:`stcn.io.files.staged_output`, but the folder written into is
    :func:`progress_folder` (created, or the one an interrupted run left) and it survives a failure or an
    interruption once it holds a checkpoint (``.state/``); one without is removed. On success the
    checkpoint is deleted and the outputs published into ``final`` (renamed into place when ``final``
    does not exist, else moved in file by file, replacing same-named files)."""
    from stcn.io.files import _check_target, merge_into, move, os_error, remove_quietly

    final = Path(final)
    folder = progress_folder(final)
    exists = _check_target(final, force)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise os_error(exc, "create the output folder", final) from None
    try:
        yield folder
    except BaseException:
        if not (folder / STATE_FOLDER).is_dir():
            remove_quietly(folder)
        raise
    remove_quietly(folder / STATE_FOLDER)
    try:
        if exists:
            merge_into(folder, final)
            remove_quietly(folder)
        else:
            move(folder, final)
    except OSError as exc:
        raise os_error(exc, "move the outputs into", final) from None


# --------------------------------------------------------------------------------------------------
# What `stcn segment --resume` does with them
# --------------------------------------------------------------------------------------------------
class _Stop:
    """Set by :func:`held_signals`' handler: an interruption is waiting for the current frame."""

    requested = False


@contextlib.contextmanager
def held_signals(enabled: bool = True) -> Iterator[_Stop]:
    """While inside, SIGINT and SIGTERM only set ``stop.requested`` (the caller checks it between frames,
    so a checkpoint never captures an engine halfway through a frame). Does nothing when not
    ``enabled`` or outside the main thread (where Python cannot install handlers)."""
    import signal
    import threading

    stop = _Stop()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def hold(signum, frame) -> None:
        stop.requested = True

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_identity(info, mask: Path, model: torch.nn.Module, options, *, direction: str, save_probs: bool,
                 device: torch.device, budget: int | None = None) -> dict[str, Any]:
    """What a checkpoint must have been made for, by kind: the video (path, frames, size, files), the
    masks (their bytes), the model (its weights), the options (engine options, direction, probabilities,
    device)."""
    return {
        "video": {"path": str(Path(info.path).resolve()), "kind": info.kind, "frames": info.num_frames,
                  "size": [info.width, info.height], "files": fingerprint_paths(info.path)},
        "masks": fingerprint_paths(mask, content=True),
        "model": fingerprint_model(model),
        "options": {**options.to_dict(), "direction": direction, "save_probs": save_probs, "device": str(device),
                    "max_memory": budget},
    }


def _differences(saved: dict, current: dict) -> str | None:
    for kind in ("video", "masks", "model", "options"):
        a, b = saved.get(kind), current[kind]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            keys = [k for k in b if a.get(k) != b[k]] or ["content"]
            detail = ", ".join(f"{k} {a.get(k)!r} now {b[k]!r}" if k not in ("files", "path") else k for k in keys)
            return f"another {kind} ({detail})"
        return f"another {kind}"
    return None


def saved_options(folder: Path) -> dict | None:
    """The engine options a checkpoint in ``folder`` was made with (None without one)."""
    saved = load_state(folder / STATE_FOLDER)
    return None if saved is None else saved[0].get("planned")


def restore(folder: Path, identity: dict, model: torch.nn.Module, options, num_frames: int):
    """``(engine, (pass, frame), (frames written, seconds, object ids))`` from the checkpoint in
    ``folder``, or None without one; :class:`DataError` (one line) when it was made for another run."""
    from stcn.inference.inference_core import InferenceCore

    saved = load_state(folder / STATE_FOLDER)
    if saved is None:
        return None
    meta, tensors = saved
    why = _differences(meta["identity"], identity)
    if why is not None:
        raise DataError(f"--resume: the progress saved in {folder} was made for {why}; run the same command "
                        "as before, or delete that folder to start again")
    engine = InferenceCore.from_options(model, options, num_frames=num_frames)
    try:
        engine.load_state_dict(meta["engine"], tensors)
    except (ValueError, KeyError) as exc:
        raise DataError(f"--resume: the checkpoint in {folder} does not fit this run ({exc}); delete that folder "
                        "to start again") from None
    progress = meta["progress"]
    return engine, (meta["after"][0], int(meta["after"][1])), (int(progress["count"]), float(progress["seconds"]),
                                                               [int(i) for i in progress["object_ids"]])


def checkpoint(folder: Path, identity: dict, engine, after: tuple[str, int], progress: tuple[int, float, list],
               options=None) -> None:
    """Save ``engine`` as having just written frame ``after[1]`` in pass ``after[0]`` (``options``: the
    engine options the run uses, which a memory budget may have chosen)."""
    meta, tensors = engine.state_dict()
    count, seconds, object_ids = progress
    planned = None if options is None else options.to_dict()
    save_state(folder / STATE_FOLDER, {"identity": identity, "engine": meta, "after": list(after), "planned": planned,
                                       "progress": {"count": count, "seconds": seconds,
                                                    "object_ids": list(object_ids)}}, tensors)
