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
from stcn.inference.options import add_precision_argument, precision_label
from stcn.ui.launch import build_state, load_frames, resolve_networks


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
    add_precision_argument(parser)
    parser.set_defaults(func=run)
    return parser


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
    from stcn.inference.device import resolve_device
    from stcn.inference.precision import resolve_precision

    ran = resolve_precision(args.precision, resolve_device(args.device))  # fp16 on a CPU is refused here
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
    print(f"stcn ui: {len(frames)} frames {frames.shape[2]}x{frames.shape[1]}, "
          f"precision {precision_label(args.precision, ran)}; open {url_of(sock)}  (Ctrl+C stops)", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    server.run(sockets=[sock])
    return 0
