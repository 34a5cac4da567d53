"""The engine's options, in one frozen dataclass: validated once, converted to and from CLI flags in
one place (:func:`add_engine_arguments` / :meth:`EngineOptions.from_args`), recorded in every output's
summary (:meth:`EngineOptions.to_dict`).

    >>> options = EngineOptions(size=-1, top_k=20)       # DAVIS at its native 480p
    >>> for result in stcn.segment_video("frames/", {0: mask}, model=model, options=options): ...
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any

from stcn.errors import UserError
from stcn.inference.precision import PRECISIONS

__all__ = ["EngineOptions", "add_engine_arguments", "DEFAULT_SIZE", "LONG_VIDEO_FRAMES", "BOUNDED_MEMORY_FRAMES",
           "DEFAULT_WORK_MEMORY_MB", "MEMORY_POLICIES"]

#: Frames are processed with this shorter side by default (the original's YouTube-VOS and generic
#: evaluation); -1 is the native size (its DAVIS evaluation). Outputs always keep the input size.
DEFAULT_SIZE = 480
# Bounded memory: a video of more than LONG_VIDEO_FRAMES frames keeps at most BOUNDED_MEMORY_FRAMES
# memory frames (the first annotated frame always, then least-used eviction); shorter videos keep every
# memory frame, as the paper (with mem_every 5 both agree up to frame 300). docs/performance.md.
LONG_VIDEO_FRAMES = 300
BOUNDED_MEMORY_FRAMES = 60
DEFAULT_WORK_MEMORY_MB = 1024
MEMORY_POLICIES = ("least_used", "oldest")


@dataclass(frozen=True)
class EngineOptions:
    """How :class:`~stcn.inference.InferenceCore` runs (and so how :func:`stcn.segment_video` does).

    precision: ``auto`` (from the hardware), ``fp32`` (exact), ``bf16`` or ``fp16`` (CUDA) autocast.
    top_k: affinities kept per query position (the paper: 20).
    mem_every: a propagated frame becomes memory this many frames after the last memory frame.
    include_last: keep the latest frame as a temporary memory entry.
    size: the shorter side frames are processed at (default 480), or -1 for the native size.
    max_memory_frames: None: automatic (every memory frame up to LONG_VIDEO_FRAMES frames, else
        BOUNDED_MEMORY_FRAMES); 0: never bounded; N >= 2: at most N memory frames.
    memory_policy: which memory frame a full memory evicts (``least_used`` or ``oldest``).
    work_memory_mb: budget for transient working memory (affinity chunks, object batches).
    compile: ``torch.compile`` the network's per-frame parts (True: inductor; a string: that backend).
    """

    precision: str = "auto"
    top_k: int = 20
    mem_every: int = 5
    include_last: bool = False
    size: int = DEFAULT_SIZE
    max_memory_frames: int | None = None
    memory_policy: str = "least_used"
    work_memory_mb: float = DEFAULT_WORK_MEMORY_MB
    compile: bool | str = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.top_k < 1:
            raise UserError(f"--top-k must be at least 1, not {self.top_k}")
        if self.mem_every < 1:
            raise UserError(f"--mem-every must be at least 1, not {self.mem_every}")
        from stcn.guards import check_size_option

        check_size_option(self.size)  # also bounds it: --size 999999999 would overflow the allocator
        if self.max_memory_frames is not None and (self.max_memory_frames < 0 or self.max_memory_frames == 1):
            raise UserError(f"--max-memory-frames must be 0 (unbounded) or at least 2, not {self.max_memory_frames}")
        if self.memory_policy not in MEMORY_POLICIES:
            raise UserError(f"--memory-policy must be least_used or oldest, not {self.memory_policy}")
        if not self.work_memory_mb > 0:
            raise UserError(f"--work-memory-mb must be positive, not {self.work_memory_mb}")

    def replace(self, **changes: Any) -> EngineOptions:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def memory_bound(self, num_frames: int | None) -> tuple[int | None, str | None]:
        """The memory bound for a video of ``num_frames`` frames (None: unknown length) and the line
        that reports it (None when unbounded)."""
        if self.max_memory_frames is None:
            if num_frames is None or num_frames <= LONG_VIDEO_FRAMES:
                return None, None
            bound = BOUNDED_MEMORY_FRAMES
            why = f"the video has {num_frames} frames, more than {LONG_VIDEO_FRAMES}"
        elif self.max_memory_frames == 0:
            return None, None
        else:
            bound = int(self.max_memory_frames)
            why = "--max-memory-frames"
        return bound, (f"memory: bounded to {bound} memory frames ({why}; the first annotated frame is kept, "
                       f"{self.memory_policy.replace('_', '-')} frames are evicted; --max-memory-frames 0 keeps "
                       "every one)")

    def to_dict(self) -> dict[str, Any]:
        """The options as plain values (for summaries and JSON)."""
        return dataclasses.asdict(self)

    def describe(self, ran: str | None = None) -> str:
        """The options on one line, for a run's summary; ``ran`` (the precision the engine resolved
        ``precision`` to) is added when it differs: ``precision auto (ran fp32), top_k 20, ...``."""
        values = {**self.to_dict(), "precision": precision_label(self.precision, ran)}
        return ", ".join(f"{k} {v}" for k, v in values.items())

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> EngineOptions:
        """The options :func:`add_engine_arguments` parsed (``overrides`` win, e.g. a set's defaults)."""
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        values = {k: v for k, v in values.items() if v is not None or k == "max_memory_frames"}
        if getattr(args, "amp", False):  # the older spelling of mixed precision
            from stcn.inference.device import resolve_device

            values["precision"] = "fp16" if resolve_device(getattr(args, "device", None)).type == "cuda" else "bf16"
        values.update(overrides)
        return cls(**values)


def precision_label(asked: str, ran: str | None) -> str:
    """``asked``, and the mode it resolved to when that differs: ``"auto (ran fp32)"``."""
    return asked if ran is None or ran == asked else f"{asked} (ran {ran})"


def add_precision_argument(parser, default: str = "auto") -> None:
    """``--precision {auto,fp32,bf16,fp16}`` on ``parser`` (an argument group is fine)."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="arithmetic: auto (fp16 on CUDA, bf16 on a CPU with native bfloat16, else fp32), "
                             f"fp32 (exact), bf16, fp16 (default {default})")


def add_engine_arguments(parser: argparse.ArgumentParser, defaults: EngineOptions | None = None, *,
                         size_help: str | None = None) -> None:
    """Declare the engine's flags on ``parser`` (``defaults`` shown and used; the dataclass's by default).

    A default of None (``size`` or ``mem_every`` for a command whose default depends on the data set)
    is filled in by :meth:`EngineOptions.from_args` overrides."""
    d = defaults or EngineOptions()
    g = parser.add_argument_group("engine")
    add_precision_argument(g, d.precision)
    g.add_argument("--amp", action="store_true", help="mixed precision: fp16 on CUDA, bf16 elsewhere")
    g.add_argument("--top-k", type=int, default=d.top_k, metavar="K",
                   help=f"memory affinities kept (default {d.top_k})")
    g.add_argument("--mem-every", type=int, default=d.mem_every, metavar="N",
                   help=f"add a frame to memory every N frames (default {d.mem_every})")
    g.add_argument("--include-last", action="store_true", help="also keep the previous frame as temporary memory")
    g.add_argument("--size", type=int, default=d.size, metavar="N",
                   help=size_help or f"process frames with this shorter side (default {d.size}); -1: native size. "
                   "Outputs keep the input size")
    g.add_argument("--max-memory-frames", type=int, default=d.max_memory_frames, metavar="N",
                   help=f"keep at most N memory frames (the first annotated frame always). Default: every memory "
                   f"frame (the paper) for videos up to {LONG_VIDEO_FRAMES} frames, {BOUNDED_MEMORY_FRAMES} for "
                   "longer ones; 0: never bound")
    g.add_argument("--memory-policy", choices=MEMORY_POLICIES, default=d.memory_policy,
                   help=f"which memory frame bounded memory evicts (default {d.memory_policy})")
    g.add_argument("--work-memory-mb", type=float, default=d.work_memory_mb, metavar="MB",
                   help=f"budget for transient working memory (default {d.work_memory_mb:g})")
    g.add_argument("--compile", nargs="?", const=True, default=d.compile, metavar="BACKEND",
                   help="torch.compile the network's per-frame parts (optionally naming a backend)")
