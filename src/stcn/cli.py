"""The ``stcn`` command line: one sub-command per module of :mod:`stcn.commands`, each registering itself.

A sub-command module exposes ``register(subparsers)``; the parser it adds sets ``func`` to a callable
taking the parsed ``argparse.Namespace`` and returning an exit status (``None`` means 0).
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from stcn.errors import UserError

# Modules are imported lazily by name so that `stcn --help` stays fast and a broken optional
# dependency of one command does not break the others.
COMMAND_MODULES = (
    "stcn.commands.demo",
    "stcn.commands.weights",
    "stcn.commands.evaluate",
    "stcn.commands.eval",
    "stcn.commands.train",
    "stcn.commands.data",
    "stcn.commands.segment",
    "stcn.commands.ui",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stcn",
        description="STCN video object segmentation: segment, evaluate, train, manage weights.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # the command is not implemented in this build
                continue
            raise
        module.register(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl+C, so that every clean-up Ctrl+C runs also runs."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stcn`` with ``argv``; returns the exit status (2 and one ``stcn: error:`` line for a user's
    mistake or a file-system failure, 130 after Ctrl+C, 143 after SIGTERM)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        status = args.func(args)
    except UserError as exc:
        print(f"stcn: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("stcn: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("stcn: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a file-system failure no command turned into a UserError: still one line
        from stcn.io.files import reason

        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"stcn: error: {where}{reason(exc)}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
