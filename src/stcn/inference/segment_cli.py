"""``stcn segment``: segment a video (frame folder or video file) from one or more annotated masks.

    stcn segment frames/ --mask first.png --out masks/
    stcn segment clip.mp4 --mask annotations/ --out masks/ --overlay clip_masks.mp4 --save-probs

Streaming: frames are decoded on a background thread and outputs written on background threads, each
through a small bounded queue, so memory does not grow with the video's length (only STCN's memory
frames do).  Outputs are written into a hidden folder next to ``--out`` and moved into place at the
end: a failed or interrupted run leaves nothing behind.  See docs/segment.md.

Heavy imports (torch, PyAV) happen in :func:`run`, so ``stcn --help`` stays fast.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stcn.errors import DataError, UserError

OVERLAY_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi")
# Bounded memory: a video of more than LONG_VIDEO_FRAMES frames keeps at most BOUNDED_MEMORY_FRAMES
# memory frames (the first annotated frame always, then least-used eviction); shorter videos keep every
# memory frame, as the paper (with --mem-every 5 both agree up to frame 300). docs/performance.md.
LONG_VIDEO_FRAMES = 300
BOUNDED_MEMORY_FRAMES = 60


def register(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "segment",
        help="segment the objects of a video from annotated masks",
        description=(
            "Propagate object masks through a video with STCN. INPUT is a folder of frames (jpg/png, sorted "
            "by name) or a video file (mp4/mov/avi/webm/mkv). --mask is one PNG for the first frame, or a "
            "folder of PNGs named after frames (a mask named after frame X applies to frame X and may bring "
            "new objects, YouTube-VOS style; a video's frames are named 00000, 00001, ...). Masks are palette "
            "or greyscale PNGs whose pixel values are object ids (0 = background). Writes one palette PNG per "
            "frame into --out, named after the frame, with the mask's palette and ids."
        ),
    )
    parser.add_argument("input", type=Path, metavar="INPUT", help="frame folder or video file")
    parser.add_argument("--mask", "-m", type=Path, required=True, metavar="M",
                        help="first-frame mask PNG, or a folder of mask PNGs named after frames")
    parser.add_argument("--out", "-o", type=Path, required=True, metavar="DIR",
                        help="output folder (created; must not exist or be empty unless --force)")
    parser.add_argument("--weights", "-w", metavar="W",
                        help="checkpoint (.pth/.safetensors) or a registry name such as demo; "
                             "default: the downloaded s012 weights")
    parser.add_argument("--size", type=int, default=480, metavar="N",
                        help="process frames with this shorter side (default 480, like the original's "
                        "YouTube-VOS and generic evaluation); -1: native size. Outputs keep the input size")
    parser.add_argument("--top-k", type=int, default=20, metavar="K", help="memory affinities kept (default 20)")
    parser.add_argument("--mem-every", type=int, default=5, metavar="N",
                        help="add a frame to memory every N frames (default 5)")
    parser.add_argument("--include-last", action="store_true",
                        help="also keep the previous frame as temporary memory")
    parser.add_argument("--max-memory-frames", type=int, default=None, metavar="N",
                        help=f"keep at most N memory frames (the first annotated frame always). Default: every "
                        f"memory frame (the paper) for videos up to {LONG_VIDEO_FRAMES} frames, "
                        f"{BOUNDED_MEMORY_FRAMES} for longer ones; 0: never bound")
    parser.add_argument("--memory-policy", choices=("least_used", "oldest"), default="least_used",
                        help="which memory frame bounded memory evicts (default least_used)")
    parser.add_argument("--overlay", type=Path, metavar="VIDEO",
                        help="also write a video with the masks blended over the frames (.mp4/.mov/.mkv/.avi)")
    parser.add_argument("--fps", type=float, default=None,
                        help="overlay frame rate (default: the input video's, 24 for a frame folder)")
    parser.add_argument("--save-probs", action="store_true",
                        help="also write DIR/probs/<frame>.npz: probs ((K+1)xHxW float32) and object_ids")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto",
                        help="where to run (default: cuda, else mps, else cpu)")
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--force", action="store_true",
                        help="write into a non-empty DIR (replacing same-named files) and replace --overlay")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar and no summary")
    parser.set_defaults(func=run)
    return parser


# --------------------------------------------------------------------------------------------------
# The Python API
# --------------------------------------------------------------------------------------------------


@dataclass
class SegmentResult:
    """What a :func:`segment` run did. ``fps`` counts processing only (reading and writing excluded)."""

    out: Path
    num_frames: int
    object_ids: list[int]
    width: int
    height: int
    processed_size: tuple[int, int]  # (height, width) the network saw, before padding
    device: str
    seconds: float
    overlay: Path | None = None
    overlay_codec: str | None = None
    probs: bool = False
    warnings: list[str] = field(default_factory=list)
    max_memory_frames: int | None = None  # None: unbounded (the paper)
    memory_note: str | None = None

    @property
    def fps(self) -> float:
        return self.num_frames / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        ids = ", ".join(map(str, self.object_ids)) or "none"
        ph, pw = self.processed_size
        lines = [
            f"frames: {self.num_frames}, objects: {len(self.object_ids)} (ids {ids}), "
            f"resolution: {self.width}x{self.height} (processed at {pw}x{ph}), device: {self.device}, "
            f"speed: {self.fps:.2f} FPS (processing only, I/O excluded)",
            f"masks: {self.out}" + (f" (probabilities in {self.out / 'probs'})" if self.probs else ""),
        ]
        if self.memory_note is not None:
            lines.append(self.memory_note)
        if self.overlay is not None:
            lines.append(f"overlay: {self.overlay} ({self.overlay_codec})")
        return "\n".join(lines)


def resolve_device(name: str | None):
    """``auto``/None -> cuda, else mps, else cpu; refuses a device this machine does not have."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine (use --device cpu)")
    if name == "mps" and not has_mps:
        raise UserError("--device mps: Apple MPS is not available on this machine (use --device cpu)")
    return torch.device(name)


def _normalise_mask_name(name: str, kind: str) -> str:
    # A video's frames are 00000, 00001, ...: also accept masks named 0.png, 12.png, 000012.png.
    if kind == "video" and name.isdigit():
        from stcn.inference.io import frame_name

        return frame_name(int(name))
    return name


def match_masks(masks: dict, info, mask_path: Path, warn: Callable[[str], None] | None = None):
    """Map masks to frames and check them.

    Returns ``({frame name: (labels, object ids)}, palette or None)``. A single mask file applies to
    the first frame; a folder's masks apply to the frames they are named after. Raises DataError for a
    mask of another size than the frames, a single mask with no objects, no mask with any object, or no
    mask named after any frame. Empty masks in a folder and masks named after no frame are skipped with
    a warning.
    """
    warn = warn or (lambda message: None)
    single = mask_path.is_file()
    if single:
        ((name, entry),) = masks.items()
        named = {info.names[0]: (entry, str(mask_path))}
    else:
        named = {}
        for name, entry in masks.items():
            key = _normalise_mask_name(name, info.kind)
            named.setdefault(key, (entry, f"{mask_path / name}.png"))
        frames = set(info.names)
        unmatched = [n for n in named if n not in frames]
        if len(unmatched) == len(named):
            first, last = info.names[0], info.names[-1]
            shown = ", ".join(sorted(named)[:3]) + (", ..." if len(named) > 3 else "")
            raise DataError(
                f"{mask_path}: no mask is named after a frame of {info.path} (masks: {shown}; frames: "
                f"{first} .. {last}); name each mask after the frame it annotates"
            )
        if unmatched:
            shown = ", ".join(unmatched[:5]) + (f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else "")
            warn(f"{mask_path}: {len(unmatched)} mask(s) named after no frame, ignored: {shown}")
        named = {n: v for n, v in named.items() if n in frames}

    order = {n: i for i, n in enumerate(info.names)}
    matched: dict[str, tuple[np.ndarray, list[int]]] = {}
    palette = None
    empty: list[str] = []
    for name in sorted(named, key=order.__getitem__):
        (labels, mask_palette), where = named[name]
        h, w = labels.shape
        if (w, h) != (info.width, info.height):
            raise DataError(
                f"{where}: the mask is {w}x{h} but the frames of {info.path} are {info.width}x{info.height}"
            )
        ids = [int(i) for i in np.unique(labels) if i != 0]
        if not ids:
            if single:
                raise DataError(f"{where}: the mask has no objects (every pixel is 0, the background)")
            empty.append(name)
            continue
        if palette is None and mask_palette is not None:
            palette = mask_palette
        matched[name] = (labels, ids)
    if not matched:
        raise DataError(f"{mask_path}: no mask has any object (every pixel of every mask is 0)")
    if empty:
        warn(f"{mask_path}: mask(s) with no objects ignored: {', '.join(empty[:5])}")
    return matched, palette


def memory_bound(
    num_frames: int, max_memory_frames: int | None, policy: str = "least_used"
) -> tuple[int | None, str | None]:
    """The memory bound for a video of ``num_frames`` frames and the line that reports it.

    ``max_memory_frames`` None: automatic (unbounded up to LONG_VIDEO_FRAMES frames, else
    BOUNDED_MEMORY_FRAMES); 0: unbounded; N: at most N memory frames."""
    if max_memory_frames is None:
        if num_frames <= LONG_VIDEO_FRAMES:
            return None, None
        bound = BOUNDED_MEMORY_FRAMES
        why = f"the video has {num_frames} frames, more than {LONG_VIDEO_FRAMES}"
    elif max_memory_frames == 0:
        return None, None
    else:
        bound = int(max_memory_frames)
        why = "--max-memory-frames"
    return bound, (f"memory: bounded to {bound} memory frames ({why}; the first annotated frame is kept, "
                   f"{policy.replace('_', '-')} frames are evicted; --max-memory-frames 0 keeps every one)")


def _overlay_target(overlay: Path, out: Path, force: bool):
    """Check --overlay; return (path relative to the output folder, or None if outside it)."""
    if overlay.suffix.lower() not in OVERLAY_EXTENSIONS:
        raise DataError(f"--overlay {overlay}: use one of {', '.join(OVERLAY_EXTENSIONS)}")
    if overlay.is_dir():
        raise DataError(f"--overlay {overlay}: is a folder")
    if overlay.exists() and not force:
        raise DataError(f"--overlay {overlay}: the file exists; pass --force to replace it")
    try:
        return overlay.resolve().relative_to(out.resolve())
    except ValueError:
        pass
    if not overlay.parent.is_dir():
        raise DataError(f"--overlay {overlay}: the folder {overlay.parent} does not exist")
    return None


def segment(
    input: str | os.PathLike,
    mask: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    model=None,
    size: int = 480,
    top_k: int = 20,
    mem_every: int = 5,
    include_last: bool = False,
    overlay: str | os.PathLike | None = None,
    fps: float | None = None,
    save_probs: bool = False,
    device: str | None = None,
    amp: bool = False,
    max_memory_frames: int | None = None,
    memory_policy: str = "least_used",
    force: bool = False,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> SegmentResult:
    """Segment ``input`` (frame folder or video file) from ``mask`` (PNG or folder) into ``out``.

    ``model`` (an STCN on its device) skips loading ``weights``. Everything is written into a hidden
    sibling of ``out`` and published at the end; on any error nothing is left behind.
    ``max_memory_frames``: None bounds the memory of long videos only (see :func:`memory_bound`), 0
    never, N always at N frames; ``memory_policy``: ``least_used`` or ``oldest``. Raises
    :class:`UserError` subclasses (DataError, CheckpointError) for bad inputs.
    """
    from stcn.inference.io import (
        LabelWriter,
        OverlayWriter,
        iter_frames,
        pick_video_encoder,
        probe,
        read_masks,
        staged_output,
    )

    if top_k < 1:
        raise UserError(f"--top-k must be at least 1, not {top_k}")
    if mem_every < 1:
        raise UserError(f"--mem-every must be at least 1, not {mem_every}")
    if size == 0 or size < -1:
        raise UserError(f"--size must be a positive shorter side or -1 (native size), not {size}")
    if fps is not None and not fps > 0:
        raise UserError(f"--fps must be positive, not {fps}")
    if max_memory_frames is not None and (max_memory_frames < 0 or max_memory_frames == 1):
        raise UserError(f"--max-memory-frames must be 0 (unbounded) or at least 2, not {max_memory_frames}")
    if memory_policy not in ("least_used", "oldest"):
        raise UserError(f"--memory-policy must be least_used or oldest, not {memory_policy}")
    input, mask, out = Path(input), Path(mask), Path(out)
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)

    # Everything that can be checked cheaply is checked before anything is created or loaded.
    if model is None:
        from stcn.weights import registry

        weights_path = registry.resolve(weights)
    torch_device = resolve_device(device) if model is None else next(model.parameters()).device
    for name, folder in (("INPUT", input), ("--mask", mask)):
        if folder.is_dir() and out.resolve() == folder.resolve():
            raise DataError(f"--out {out} is the {name} folder; write the masks into another folder")
    info = probe(input)
    masks, palette = match_masks(read_masks(mask), info, mask, note)
    overlay_path = Path(overlay) if overlay is not None else None
    overlay_rel = _overlay_target(overlay_path, out, force) if overlay_path is not None else None
    codec = pick_video_encoder() if overlay_path is not None else None

    import torch
    from tqdm import tqdm

    from stcn.inference.inference_core import InferenceCore
    from stcn.inference.preprocess import resized_size

    reader = iter_frames(info)
    label_writer = overlay_writer = None
    bar = None
    try:
        with staged_output(out, force=force) as stage:
            try:
                first = next(reader)  # decode errors in frame 0 before the model is loaded
                if model is None:
                    from stcn.weights.io import load_model

                    model = load_model(weights_path, torch_device)
                bound, memory_note = memory_bound(info.num_frames, max_memory_frames, memory_policy)
                core = InferenceCore(model, top_k=top_k, mem_every=mem_every, include_last=include_last,
                                     size=size, amp=amp, max_memory_frames=bound, memory_policy=memory_policy)
                label_writer = LabelWriter(stage, palette)
                if overlay_path is not None:
                    # inside --out it is staged with the masks; elsewhere it is written aside and renamed
                    target = overlay_path if overlay_rel is None else stage / overlay_rel
                    if overlay_rel is not None:
                        target.parent.mkdir(parents=True, exist_ok=True)
                    overlay_writer = OverlayWriter(
                        target, width=info.width, height=info.height, fps=fps or info.fps or 24,
                        palette=palette, codec=codec, atomic=overlay_rel is None,
                    )
                bar = tqdm(total=info.num_frames, unit="frame", desc=input.name, leave=False,
                           disable=True if not progress else None, file=sys.stderr, dynamic_ncols=True)
                seconds = 0.0
                count = 0
                out_of_memory = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
                if first[1].shape[:2] != (info.height, info.width):
                    h, w = first[1].shape[:2]
                    raise DataError(f"{input}: the first frame decodes to {w}x{h}, but the file says "
                                    f"{info.width}x{info.height}")
                frame_iter = _chain(first, reader)
                for name, frame in frame_iter:
                    annotation = masks.get(name)
                    start = time.perf_counter()
                    try:
                        if annotation is None:
                            probs = core.step(frame)
                        else:
                            probs = core.step(frame, annotation[0], objects=annotation[1])
                        labels = core.labels(probs)
                        probs_out = probs.float().cpu().numpy() if save_probs else None
                    except out_of_memory:
                        raise UserError(
                            f"out of {torch_device.type} memory at frame {name}: try a smaller --size, --amp, "
                            "or a larger --mem-every"
                        ) from None
                    seconds += time.perf_counter() - start
                    label_writer.write(name, labels, probs_out, list(core.object_ids))
                    if overlay_writer is not None:
                        overlay_writer.write(frame, labels)
                    count += 1
                    bar.update()
                label_writer.close()
                if overlay_writer is not None:
                    overlay_writer.close()
            except BaseException:
                for writer in (label_writer, overlay_writer):
                    if writer is not None:
                        writer.abort()
                raise
    finally:
        reader.close()
        if bar is not None:
            bar.close()
    processed = resized_size(info.height, info.width, size)
    return SegmentResult(
        out=out, num_frames=count, object_ids=list(core.object_ids), width=info.width, height=info.height,
        processed_size=processed, device=str(torch_device), seconds=seconds, overlay=overlay_path,
        overlay_codec=codec, probs=save_probs, warnings=warnings, max_memory_frames=bound,
        memory_note=memory_note,
    )


def _chain(first, rest):
    yield first
    yield from rest


def run(args: argparse.Namespace) -> int:
    def warn(message: str) -> None:
        print(f"stcn: warning: {message}", file=sys.stderr)

    result = segment(
        args.input, args.mask, args.out, weights=args.weights, size=args.size, top_k=args.top_k,
        mem_every=args.mem_every, include_last=args.include_last, overlay=args.overlay, fps=args.fps,
        save_probs=args.save_probs, device=args.device, amp=args.amp, force=args.force,
        max_memory_frames=args.max_memory_frames, memory_policy=args.memory_policy,
        progress=not args.quiet, warn=warn,
    )
    if not args.quiet:
        print(result.summary())
    return 0
