"""A memory budget in bytes (``stcn segment --max-memory 2GB``, ``segment(max_memory_bytes=...)``).

STCN's memory use has four parts; the budget is spent on them in this order:

1. **the process as it stands** once the model is loaded (Python, PyTorch, the weights): measured, not
   estimated (the resident set size, ``/proc/self/statm``), plus the bf16 / fp16 copy of the weights the
   engine will make (``held``; :func:`stcn.inference.frame_step.lowered_weight_bytes`);
2. **frames in flight**: the decode queue, the writers' queues (label maps, probabilities, overlay
   frames), the reverse reader's chunk, and the input-size tensors of one frame (float image, output
   probabilities, their resizing);
3. **working memory of one frame**: the network's activations at the processing size, per frame and per
   object in a batch, plus the memory read's affinity chunk (``work_memory_mb / 16``). The per-pixel
   constants were measured on CPU in fp32 for the ``small`` network (benchmarks/bench_memory_budget.py,
   docs/segment.md) and scaled by channel width for the paper's ResNet-50 network (not measured);
4. **the memory bank**: keys, squared norms and per-object values of every memory frame at 1/16 of the
   processing size; a bounded bank allocates ``max_memory_frames + 1`` slots up front.

:func:`plan_memory` picks the largest work memory (so the largest query chunks and object batches) from
``options.work_memory_mb`` down to 32 MB that still leaves room for the memory frames the video would use
(every ``mem_every``-th frame, at most the automatic bound of 60), then bounds the memory frames to what
fits; with ``auto_size`` it lowers the processing size (480, 360, 240, 160, 120) when nothing fits at the
asked one. When nothing fits it raises :class:`~stcn.errors.UserError` with one line, before any frame.
10 % of the budget is kept back for the allocator's fragmentation.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from stcn.errors import UserError
from stcn.guards import frame_work_bytes
from stcn.inference.options import BOUNDED_MEMORY_FRAMES, EngineOptions
from stcn.inference.preprocess import pad_amounts, resized_size

__all__ = ["MemoryPlan", "parse_bytes", "plan_memory", "plan_for_masks", "process_rss", "format_bytes"]

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}
SAFETY = 0.9  # of the budget planned for; the rest absorbs allocator fragmentation
WORK_MEMORY_STEPS_MB = (1024, 512, 256, 128, 64, 32)
AUTO_SIZES = (480, 360, 240, 160, 120)
MIN_MEMORY_FRAMES = 2

_BYTES_PER_OBJECT_PIXEL = 400  # the engine's object-batch rule (see frame_step.py)


def parse_bytes(text: str | int | float) -> int:
    """``"2GB"``, ``"1.5G"``, ``"512MB"``, ``"800MiB"`` or a number of bytes -> bytes (binary units)."""
    if isinstance(text, (int, float)):
        value = int(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(text))
        if m is None or m.group(2).upper() not in _UNITS:
            raise UserError(f"--max-memory {text!r}: give a size such as 2GB, 1.5G or 800MB")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise UserError(f"--max-memory must be positive, not {text!r}")
    return value


def format_bytes(n: float) -> str:
    """Bytes as ``1.23 GB`` / ``456 MB`` (binary units)."""
    return f"{n / 2**30:.2f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def process_rss() -> int:
    """The resident set size of this process now, in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # peak, in KiB on Linux


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`plan_memory` chose: ``options`` (with ``size``, ``work_memory_mb`` and
    ``max_memory_frames`` set), the reverse reader's chunk in bytes, and the estimate it rests on."""

    budget: int
    options: EngineOptions
    memory_frames: int  # the bound (or the frames the video would use when they all fit)
    bounded: bool
    reverse_chunk_bytes: int
    estimate: int  # planned peak, bytes
    baseline: int
    parts: dict

    def summary(self) -> str:
        o = self.options
        frames = (f"at most {self.memory_frames} memory frames" if self.bounded
                  else f"every memory frame ({self.memory_frames})")
        size = "native size" if o.size <= 0 else f"shorter side {o.size}"
        return (f"memory budget {format_bytes(self.budget)}: {frames}, work memory {o.work_memory_mb:g} MB "
                f"(memory read in chunks of {format_bytes(o.work_memory_mb * 2**20 / 16)} of affinities), "
                f"processing at {size}; planned peak {format_bytes(self.estimate)} (process "
                f"{format_bytes(self.baseline)}, frames in flight {format_bytes(self.parts['io'])}, "
                f"working {format_bytes(self.parts['work'])}, memory bank {format_bytes(self.parts['bank'])})")


def _width_scale(config) -> float:
    """Activation scale of a network relative to the measured `small` one (by channel width)."""
    if config is None:
        return 1.0
    backbone = 4.0 if getattr(config, "key_backbone", "resnet18") == "resnet50" else 1.0
    return max(backbone, getattr(config, "value_dim", 128) / 128)


def plan_memory(
    budget: int,
    *,
    height: int,
    width: int,
    num_frames: int,
    num_objects: int,
    options: EngineOptions,
    model_config=None,
    baseline: int | None = None,
    save_probs: bool = False,
    overlay: bool = False,
    auto_size: bool = False,
    annotated_frames: int = 1,
    held: int = 0,
) -> MemoryPlan:
    """Choose the processing size, work memory and memory-frame bound that keep a run of a video of
    ``num_frames`` frames of ``height`` x ``width`` with ``num_objects`` objects under ``budget`` bytes.

    ``baseline``: the process's bytes now (default: measured); ``held``: bytes the run will add to it before
    the first frame (the engine's low-precision weight copy). Raises :class:`UserError` (one line) when
    the budget cannot be met."""
    baseline = (process_rss() if baseline is None else int(baseline)) + int(held)
    objects = max(1, num_objects)
    pixels_in = height * width
    scale = _width_scale(model_config)
    key_dim = getattr(model_config, "key_dim", 64)
    value_dim = getattr(model_config, "value_dim", 128)
    chunk = int(min(256 * 2**20, max(3 * pixels_in, budget // 32)))
    # frames in flight: 4 decoded ahead + 1 in use, 8 label maps (+ probabilities) and 8 overlay frames queued,
    # the reverse chunk, and the input-size float image, output probabilities and their resizing (x3)
    probs_in = 4 * (objects + 1) * pixels_in
    io = (5 * 3 * pixels_in + 8 * pixels_in + (9 * probs_in if save_probs else 0)
          + (8 * 3 * pixels_in if overlay else 0) + chunk + 3 * (12 * pixels_in + probs_in))
    wanted = math.ceil(num_frames / options.mem_every) + annotated_frames
    bound, _ = options.memory_bound(num_frames)  # the budget may lower the options' bound, never raise it
    if bound is not None:
        wanted = min(wanted, bound)
    available = SAFETY * budget - baseline
    sizes = [options.size] + ([s for s in AUTO_SIZES if s < min(height, width, options.size if options.size > 0
                                                                else min(height, width))] if auto_size else [])
    for size in sizes:
        ph, pw = resized_size(height, width, size)
        left, right, top, bottom = pad_amounts(ph, pw)
        pixels = (ph + top + bottom) * (pw + left + right)
        hw = pixels // 256
        per_frame = hw * (4 * key_dim + 4 + objects * (4 * value_dim + 1))
        steps = [mb for mb in WORK_MEMORY_STEPS_MB if mb <= options.work_memory_mb] or [options.work_memory_mb]
        for mb in steps:
            batch = min(objects, max(1, int(mb * 2**20) // (_BYTES_PER_OBJECT_PIXEL * pixels)))
            work = frame_work_bytes(pixels, batch, scale)
            work += int(mb * 2**20 / 16)  # the memory read's affinity chunk
            room = available - io - work
            fit = int(room // per_frame) - 1 - int(options.include_last)  # a bounded bank's spare slot
            if fit < MIN_MEMORY_FRAMES:
                continue
            frames = min(wanted, fit)
            if frames >= min(wanted, BOUNDED_MEMORY_FRAMES) or mb == steps[-1]:
                bounded = frames < wanted or bound is not None
                chosen = options.replace(size=size, work_memory_mb=float(mb), max_memory_frames=frames)
                bank = (frames + 1 + int(options.include_last)) * per_frame
                return MemoryPlan(budget, chosen, frames, bounded, chunk, baseline + io + work + bank, baseline,
                                  {"io": io, "work": work, "bank": bank})
        # nothing at this size: the next (smaller) one, if auto_size allows
    ph, pw = resized_size(height, width, sizes[-1])
    need = baseline + io + frame_work_bytes(ph * pw, 1, scale) \
        + 4 * ph * pw // 256 * (4 * key_dim + objects * 4 * value_dim)
    hint = "raise it" + (", lower --size or pass --auto-size" if not auto_size else "")
    raise UserError(
        f"--max-memory {format_bytes(budget)} cannot be met for {width}x{height} with {objects} objects: the process "
        f"already holds {format_bytes(baseline)} and one frame needs about {format_bytes(need - baseline)} more "
        f"at the smallest settings tried; {hint}")


def plan_for_masks(
    budget: int,
    *,
    height: int,
    width: int,
    num_frames: int,
    masks,
    options: EngineOptions,
    model=None,
    save_probs: bool = False,
    overlay: bool = False,
    auto_size: bool = False,
) -> MemoryPlan:
    """:func:`plan_memory` for a video of ``num_frames`` frames of ``height`` x ``width`` annotated with
    ``masks`` (an iterable of HxW id maps, one per annotated frame) and propagated by ``model`` (its
    ``config`` sizes the network): what ``segment(max_memory_bytes=...)`` and
    ``segment_video(max_memory_bytes=...)`` both plan with."""
    import numpy as np

    from stcn.inference.frame_step import lowered_weight_bytes

    masks = list(masks)
    ids = {int(i) for labels in masks for i in np.unique(np.asarray(labels)) if i}
    return plan_memory(budget, height=height, width=width, num_frames=num_frames, num_objects=len(ids),
                       options=options, model_config=getattr(model, "config", None), save_probs=save_probs,
                       overlay=overlay, auto_size=auto_size, annotated_frames=len(masks),
                       held=lowered_weight_bytes(model, options.precision))
