"""What ``stcn ui`` serves, assembled from its options: the frames (resized, refused before any is
decoded when they cannot fit), the networks given or already downloaded (never downloaded here), the
notes on those missing, and the :class:`stcn.ui.state.UIState` over them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stcn.errors import UserError

NETWORKS = (("s012", "weights"), ("s2m", "s2m"), ("fusion", "fusion"))  # registry name, option


def load_frames(path: Path, size: int, num_objects: int = 1):
    """(frames (T, H, W, 3) uint8 resized so the shorter side is ``size`` (bicubic; <= 0 keeps it),
    frame names, fps). Frames that cannot be processed at ``size`` (too many pixels, not enough
    memory for all of them) are refused before any is decoded."""
    import cv2
    import numpy as np

    from stcn.inference.preprocess import resized_size
    from stcn.io.frames import iter_frames, probe

    if not path.exists():
        raise UserError(f"input not found: {path}")
    info = probe(path)
    from stcn.guards import check_frame_fits

    check_frame_fits(info.width, info.height, size, num_objects, where=f"the frames of {path}")
    h, w = resized_size(info.height, info.width, size)
    names, frames = [], []
    for name, frame in iter_frames(info):
        names.append(name)
        frames.append(frame if (h, w) == frame.shape[:2] else cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC))
    if not frames:
        raise UserError(f"{path} holds no frames")
    return np.stack(frames), names, float(info.fps) if info.fps else 24.0


def resolve_networks(args) -> tuple[dict[str, Path | None], list[tuple[str, str]]]:
    """Checkpoint paths per registry name (None where the default is not on this machine) and the
    (name, where looked) of those missing defaults. A checkpoint given on the command line (a path or
    a registry name) must exist; nothing is ever downloaded here."""
    from stcn.weights import registry

    found, missing = {}, []
    for name, option in NETWORKS:
        given = getattr(args, option)
        if given is not None:
            found[name] = registry.resolve(given, option=f"--{option}")
            continue
        path = registry.cached_path(name)
        if path.is_file():
            found[name] = path
        else:
            found[name] = None
            missing.append((name, str(path)))
    return found, missing


def offline_notes(missing: list[tuple[str, str]]) -> list[str]:
    """One stderr line per missing default network: what the page does without it, and the command
    that gets it (the page says the same)."""
    from stcn.interactive.api import FUSION_COMMAND, S2M_COMMAND

    text = {
        "s012": "propagating with the built-in demo model (`stcn weights download s012` gets the full one)",
        "s2m": f"scribble and click are disabled; brush, eraser and mask import work (`{S2M_COMMAND}`)",
        "fusion": f"propagation is not fused: a new result overwrites the old one (`{FUSION_COMMAND}`)",
    }
    return [f"stcn ui: note: {name} weights not found at {path}; {text[name]}" for name, path in missing]


def build_state(args: argparse.Namespace, frames, names: list[str], fps: float,
                networks: tuple[dict[str, Path | None], list[tuple[str, str]]] | None = None):
    """The :class:`UIState` for ``args``: the networks given or downloaded, else the built-in demo
    model for propagation and no S2M / FusionNet (scribble and click disabled, propagation unfused).
    ``networks``: :func:`resolve_networks`'s answer, if already asked."""
    from stcn.inference.device import resolve_device
    from stcn.interactive import load_fusion, load_s2m
    from stcn.interactive.api import InteractiveSession
    from stcn.ui.state import UIState
    from stcn.weights import registry
    from stcn.weights.io import load_model

    paths, missing = networks if networks is not None else resolve_networks(args)
    for line in offline_notes(missing):
        print(line, file=sys.stderr)
    device = resolve_device(args.device)
    prop_path = paths["s012"] or registry.cached_path(registry.DEMO)  # shipped in the package: no download
    prop = load_model(prop_path, device)
    s2m = load_s2m(paths["s2m"], device) if paths["s2m"] is not None else None
    fusion = load_fusion(paths["fusion"], device) if paths["fusion"] is not None else None

    def label(name: str, option: str) -> str | None:
        given = getattr(args, option)
        return None if paths[name] is None else (given if given is not None else name)

    networks = {"propagation": label("s012", "weights") or registry.DEMO, "s2m": label("s2m", "s2m"),
                "fusion": label("fusion", "fusion")}

    def make_session(k: int) -> InteractiveSession:
        return InteractiveSession(prop, s2m, fusion, frames, k, precision=args.precision)

    out = args.out or Path.cwd() / f"{args.input.stem}_ui"
    return UIState(make_session, frames, names, args.objects, out, fps=fps, title=args.input.name,
                   networks=networks)
