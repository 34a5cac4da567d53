"""``stcn ui``: serve the interactive segmentation page for one video on this machine.

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
            "masks and saves palette PNGs (and an overlay video) into --out. See docs/ui.md."
        ),
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="frame folder or video file")
    parser.add_argument("--weights", "-w", metavar="W",
                        help="STCN checkpoint: a path or a registry name such as demo (default: downloaded s012)")
    parser.add_argument("--s2m", metavar="S", help="S2M checkpoint (default: downloaded s2m)")
    parser.add_argument("--fusion", metavar="F", help="FusionNet checkpoint (default: downloaded fusion)")
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


def resolve_networks(args) -> tuple[dict[str, Path], list[tuple[str, str]]]:
    """Checkpoint paths per registry name, and the (name, where looked) of the missing defaults.
    A checkpoint given on the command line (a path or a registry name) must exist."""
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
            missing.append((name, str(path)))
    return found, missing


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from stcn.ui.server import bind, create_app, url_of
    except ImportError as exc:
        raise UserError(f"stcn ui needs the ui extra ({exc.name} is missing): pip install 'stcn[ui]'") from None
    import stcn.guards as guards
    from stcn.inference.device import resolve_device
    from stcn.interactive.api import InteractiveSession
    from stcn.io.files import check_output_folder
    from stcn.ui.state import UIState

    # everything that can be refused is refused before frames are decoded or a network loaded
    guards.check_object_count(args.objects)
    guards.check_size_option(args.size)
    guards.check_port(args.port)
    out = args.out or Path.cwd() / f"{args.input.stem}_ui"
    check_output_folder(out)  # a file, or a folder Save could never write into
    frames, names, fps = load_frames(args.input, args.size, args.objects)
    paths, missing = resolve_networks(args)
    state = None
    if not missing:
        from stcn.interactive import load_fusion, load_s2m
        from stcn.weights.io import load_model

        device = resolve_device(args.device)
        prop, s2m, fusion = load_model(paths["s012"], device), load_s2m(paths["s2m"], device), load_fusion(
            paths["fusion"], device)

        def make_session(k: int) -> InteractiveSession:
            return InteractiveSession(prop, s2m, fusion, frames, k)

        state = UIState(make_session, frames, names, args.objects, out, fps=fps, title=args.input.name)
    else:
        names_missing = ", ".join(name for name, _ in missing)
        print(f"stcn ui: warning: weights missing ({names_missing}); the page explains how to get them",
              file=sys.stderr)
    local = args.host in ("127.0.0.1", "localhost", "::1")
    if not local:
        print(f"stcn ui: warning: listening on {args.host}: anyone who can reach this machine can use the "
              "page and write into --out", file=sys.stderr)
    app = create_app(state, missing=missing, allowed_hosts=None if local else {"*"})
    sock = bind(args.host, args.port)
    print(f"stcn ui: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}; open {url_of(sock)}  (Ctrl+C stops)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
    return 0
