"""``stcn ui``: serve the interactive segmentation page for one video on this machine.

    stcn ui clip.mp4 --objects 2 --out results/   # offline: the built-in demo model, brush + propagate
    stcn ui frames/ --out results/        # then open the printed URL
    stcn ui clip.mp4 --s2m mivos_s2m.pth --fusion mivos_fusion_stcn.pth --weights stcn_s012.pth

Heavy imports (torch, Starlette, uvicorn) happen in :func:`run`, so ``stcn --help`` stays fast and a
missing ``ui`` extra only breaks this command, with a one-line hint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stcn.errors import UserError
from stcn.inference.device import add_device_argument

NETWORKS = (("s012", "weights"), ("s2m", "s2m"), ("fusion", "fusion"))  # registry name, option


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "ui",
        help="interactive segmentation in the browser (scribbles, clicks, brush, propagation)",
        description=(
            "Serve a page for interactive video object segmentation (MiVOS with STCN propagation) on "
            "this machine and print its URL. INPUT is a folder of frames or a video file. The page draws "
            "scribbles, clicks and brush strokes, propagates with progress and cancel, undoes, imports "
            "masks and saves palette PNGs (and an overlay video) into --out. Nothing is downloaded: without "
            "the s012 / s2m / fusion weights it propagates with the built-in demo model, unfused, and "
            "scribble and click stay disabled until `stcn weights download s2m`. See docs/ui.md."
        ),
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="frame folder or video file")
    parser.add_argument("--weights", "-w", metavar="W",
                        help="STCN checkpoint: a path or a registry name such as demo (default: downloaded s012, "
                        "else the built-in demo model)")
    parser.add_argument("--s2m", metavar="S", help="S2M checkpoint (default: downloaded s2m; without it scribble "
                        "and click are disabled)")
    parser.add_argument("--fusion", metavar="F", help="FusionNet checkpoint (default: downloaded fusion; without "
                        "it propagation is not fused)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--size", type=int, default=480, metavar="N",
                        help="work with this shorter side (default 480, as MiVOS); -1: native size")
    parser.add_argument("--objects", type=int, default=1, metavar="K",
                        help="number of objects to start with (default 1; more can be added in the page "
                        "before the first interaction)")
    parser.add_argument("--out", "-o", type=Path, default=None, metavar="DIR",
                        help="where Save writes masks/ and overlay.mp4 (default: ./<input name>_ui)")
    add_device_argument(parser)
    parser.set_defaults(func=run)
    return parser


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
        return InteractiveSession(prop, s2m, fusion, frames, k)

    out = args.out or Path.cwd() / f"{args.input.stem}_ui"
    return UIState(make_session, frames, names, args.objects, out, fps=fps, title=args.input.name,
                   networks=networks)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from stcn.ui.server import bind, create_app, url_of
    except ImportError as exc:
        raise UserError(f"stcn ui needs the ui extra ({exc.name} is missing): pip install 'stcn[ui]'") from None
    import stcn.guards as guards
    from stcn.io.files import check_output_folder

    # everything that can be refused is refused before frames are decoded or a network loaded
    guards.check_object_count(args.objects)
    guards.check_size_option(args.size)
    guards.check_port(args.port)
    out = args.out or Path.cwd() / f"{args.input.stem}_ui"
    check_output_folder(out)  # a file, or a folder Save could never write into
    networks = resolve_networks(args)  # a --weights that does not exist fails before any frame is decoded
    frames, names, fps = load_frames(args.input, args.size, args.objects)
    state = build_state(args, frames, names, fps, networks)
    local = args.host in ("127.0.0.1", "localhost", "::1")
    if not local:
        print(f"stcn ui: warning: listening on {args.host}: anyone who can reach this machine can use the "
              "page and write into --out", file=sys.stderr)
    app = create_app(state, allowed_hosts=None if local else {"*"})
    sock = bind(args.host, args.port)
    print(f"stcn ui: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}; open {url_of(sock)}  (Ctrl+C stops)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
    return 0
