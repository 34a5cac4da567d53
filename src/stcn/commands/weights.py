"""``stcn weights``: download released checkpoints, convert them to safetensors, describe them.

    stcn weights list
    stcn weights download [s012|s03] [--force]
    stcn weights convert IN OUT.safetensors [--half] [--force]
    stcn weights info FILE [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stcn.errors import UserError
from stcn.weights import registry


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="download, convert and inspect checkpoints",
        description="Download released STCN checkpoints, convert checkpoints to safetensors, describe them. "
        f"Downloads go to ${registry.ENV_HOME}/weights (default ~/.cache/stcn/weights).",
    )
    parser.set_defaults(func=lambda args: _help(parser))
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION")

    p = sub.add_parser("list", help="the released checkpoints and whether they are downloaded")
    p.set_defaults(func=_list)

    p = sub.add_parser("download", help="download a released checkpoint into the cache")
    p.add_argument("name", nargs="?", default=registry.DEFAULT, choices=registry.names(downloadable_only=True),
                   help=f"which checkpoint (default {registry.DEFAULT})")
    p.add_argument("--force", action="store_true", help="download again even if the file is there")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_download)

    p = sub.add_parser("convert", help="convert a checkpoint (.pth, training checkpoint, ...) to safetensors")
    p.add_argument("input", type=Path, help="checkpoint to read (.pth/.pt or .safetensors)")
    p.add_argument("output", type=Path, help="file to write (must end in .safetensors)")
    p.add_argument("--half", action="store_true", help="store floating-point tensors as float16 (half the size)")
    p.add_argument("--force", action="store_true", help="overwrite OUTPUT if it exists")
    p.set_defaults(func=_convert)

    p = sub.add_parser("info", help="describe a checkpoint: variant, parameter count, key groups")
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_info)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _list(args: argparse.Namespace) -> None:
    for name in registry.names():
        entry = registry.get(name)
        path = registry.cached_path(name)
        state = str(path) if path.is_file() else "not downloaded"
        default = " (default)" if name == registry.DEFAULT else ""
        print(f"{name}{default}: {entry.description}\n    {state}")


def _download(args: argparse.Namespace) -> None:
    from stcn.weights.download import INTERACTIVE_NETWORKS, download_weights

    check = None
    if args.name in INTERACTIVE_NETWORKS:  # the command (above both packages) knows MiVOS's networks
        from stcn.interactive.checkpoint import verify_checkpoint
        from stcn.interactive.fusion import FusionNet
        from stcn.interactive.s2m import S2M

        build, label = {"s2m": (S2M, "S2M"), "fusion": (FusionNet, "FusionNet")}[args.name]

        def check(p):
            return verify_checkpoint(build, p, label)
    path = registry.cached_path(args.name)
    if path.is_file() and not args.force:
        print(f"{args.name} is already downloaded: {path}", file=sys.stderr)
    else:
        path = download_weights(args.name, force=args.force, progress=not args.quiet, check=check)
    print(path)


def _convert(args: argparse.Namespace) -> None:
    from stcn._version import __version__
    from stcn.weights.download import verify_checkpoint
    from stcn.weights.io import save_safetensors

    out: Path = args.output
    if out.suffix != ".safetensors":
        raise UserError(f"{out}: the output name must end in .safetensors")
    if out.exists() and not args.force:
        raise UserError(f"{out} already exists; pass --force to overwrite it")
    if out.is_dir():
        raise UserError(f"{out} is a directory")
    from stcn.io.files import check_writable

    check_writable(out.parent, "the folder of OUTPUT")  # read-only, or under a file: before reading
    ckpt = verify_checkpoint(args.input)
    state_dict = ckpt.state_dict
    if args.half:
        state_dict = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    metadata = {
        "stcn_variant": "single-object" if ckpt.single_object else "multi-object",
        "source": args.input.name,
        "stcn_version": __version__,
        "dtype": "float16" if args.half else ",".join(sorted({str(v.dtype).replace("torch.", "")
                                                              for v in state_dict.values()
                                                              if v.is_floating_point()})),
    }
    if ckpt.config_json is not None:
        metadata["stcn_config"] = ckpt.config_json
    save_safetensors(state_dict, out, metadata)
    print(out)


def _info(args: argparse.Namespace) -> None:
    from stcn.weights.download import verify_checkpoint
    from stcn.weights.io import summarize, summary_text

    ckpt = verify_checkpoint(args.file)
    info = summarize(ckpt)
    info["matches_network"] = True
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(summary_text(info))
        print("network:    keys and shapes match STCN" + (" (single-object)" if ckpt.single_object else ""))
