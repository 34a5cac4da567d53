"""Segment a video on disk into label PNGs (and optionally probabilities and an overlay video): what
``stcn segment`` runs, as a Python function.

    >>> from stcn.inference.segment import segment
    >>> segment("clip.mp4", "first.png", "masks/", weights="demo").summary()

Streaming: frames are decoded on a background thread and outputs written on background threads, each
through a small bounded queue, so memory does not grow with the video's length (only STCN's memory
frames do). Outputs are written into a hidden folder next to ``out`` and moved into place at the end:
a failed or interrupted run leaves nothing behind. The frames go through :func:`stcn.segment_video`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import stcn.guards as guards
from stcn.errors import DataError, UserError
from stcn.inference.device import resolve_device
from stcn.inference.options import EngineOptions
from stcn.io.files import check_writable

__all__ = ["OVERLAY_EXTENSIONS", "SegmentResult", "segment"]

OVERLAY_EXTENSIONS = (".mp4", ".mov", ".m4v", ".mkv", ".avi")


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
    options: EngineOptions | None = None
    precision: str | None = None  # the mode the engine ran (``options.precision`` resolved: auto -> fp32 ...)

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
        if self.options is not None:
            lines.append("engine: " + self.options.describe(self.precision))
        if self.overlay is not None:
            lines.append(f"overlay: {self.overlay} ({self.overlay_codec})")
        return "\n".join(lines)


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
    check_writable(overlay.parent, "the folder of --overlay")  # a read-only folder: refused before any work
    return None


def _overlay_from_pngs(writer, info, folder: Path) -> None:
    """Feed ``writer`` every frame of ``info`` in order with the labels written to ``folder``."""
    from stcn.io.frames import iter_frames
    from stcn.io.masks import read_label_png

    reader = iter_frames(info)
    try:
        for name, frame in reader:
            writer.write(frame, read_label_png(folder / f"{name}.png")[0])
    finally:
        reader.close()


def segment(
    input: str | os.PathLike,
    mask: str | os.PathLike,
    out: str | os.PathLike,
    *,
    weights: str | os.PathLike | None = None,
    model=None,
    options: EngineOptions | None = None,
    overlay: str | os.PathLike | None = None,
    fps: float | None = None,
    save_probs: bool = False,
    device: str | None = None,
    force: bool = False,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
    direction: str = "both",
    resume: bool = False,
    checkpoint_every: int = 25,
    max_memory_bytes: int | str | None = None,
    auto_size: bool = False,
    info_line: Callable[[str], None] | None = None,
) -> SegmentResult:
    """Segment ``input`` (frame folder or video file) from ``mask`` (PNG or folder) into ``out``.

    ``model`` (an STCN on its device) skips loading ``weights`` (a path or a registry name).
    ``options``: :class:`EngineOptions` (default size 480, as ``stcn segment``). Everything is written
    into a hidden sibling of ``out`` and published at the end; on any error nothing is left behind.
    ``direction``: ``"both"`` (default) also propagates backwards from the annotated frames, so frames
    before the first annotation get objects too; ``"forward"`` writes them as background (see
    :func:`stcn.inference.video.plan_directions` for which pass writes which frame).
    ``resume``: make the run resumable, or continue the interrupted resumable run of the same command:
    outputs and a checkpoint (every ``checkpoint_every`` written frames, and on Ctrl-C / SIGTERM) are kept
    in :func:`stcn.inference.resume.progress_folder` ``(out)`` until the run completes; a checkpoint made for
    another video, masks, model, options or device is refused (:class:`DataError`).
    ``max_memory_bytes`` (bytes, or ``"2GB"``): keep the process's peak memory under it by choosing the
    memory-frame bound, the work memory (query chunks, object batches) and, with ``auto_size``, the
    processing size (:func:`stcn.inference.budget.plan_memory`); what it chose goes to ``info_line`` and the
    summary, and a budget that cannot be met raises :class:`UserError` before any frame.
    Raises :class:`UserError` subclasses (DataError, CheckpointError) for bad inputs.
    """
    from stcn.inference import resume as resuming
    from stcn.io.files import staged_output
    from stcn.io.frames import probe
    from stcn.io.writers import LabelWriter, OverlayWriter, pick_video_encoder

    options = options or EngineOptions()
    if fps is not None and not fps > 0:
        raise UserError(f"--fps must be positive, not {fps}")
    budget = None
    if max_memory_bytes is not None:
        from stcn.inference.budget import parse_bytes

        budget = parse_bytes(max_memory_bytes)
    elif auto_size:
        raise UserError("--auto-size chooses the processing size for --max-memory: give --max-memory too")
    if checkpoint_every < 1:
        raise UserError(f"--checkpoint-every must be at least 1, not {checkpoint_every}")
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
    overlay_path = Path(overlay) if overlay is not None else None
    overlay_rel = _overlay_target(overlay_path, out, force) if overlay_path is not None else None
    codec = pick_video_encoder() if overlay_path is not None else None

    from tqdm import tqdm

    from stcn.inference.preprocess import resized_size
    from stcn.inference.video import plan_directions, segment_video
    from stcn.io.masks import match_masks, read_masks

    matched, palette = match_masks(read_masks(mask), info, mask, lambda message: None)
    num_objects = len({i for _labels, ids in matched.values() for i in ids})
    # sizes and memory before anything is loaded or created (a 16x4000 frame at --size 480 is 120000 wide)
    guards.check_frame_fits(info.width, info.height, options.size, num_objects, device=torch_device,
                            where=f"the frames of {input}")
    index = {name: t for t, name in enumerate(info.names)}
    # A backward pass hands frames out of order; the overlay video needs them in order, so it is then
    # encoded after the masks, from the written PNGs and the frames read again.
    overlay_later = "backward" in plan_directions(info.num_frames, [index[n] for n in matched], direction)
    # A resumed run has not seen the frames written before the interruption: it encodes the overlay last too.
    overlay_later = overlay_later or resume
    label_writer = overlay_writer = None
    bar = None
    results = None
    seconds, count, object_ids = 0.0, 0, []
    precision = None
    bound, memory_note = options.memory_bound(info.num_frames)
    reverse_chunk = None
    requested = options  # what the caller asked for (a memory budget then chooses the options run)
    try:
        output = resuming.resumable_output(out, force=force) if resume else staged_output(out, force=force)
        with output as stage, resuming.held_signals(resume) as stop:
            try:
                if model is None:
                    from stcn.weights.io import load_model

                    model = load_model(weights_path, torch_device)
                if budget is not None:
                    from stcn.inference.budget import plan_for_masks

                    plan = plan_for_masks(budget, height=info.height, width=info.width, num_frames=info.num_frames,
                                          masks=[labels for labels, _ in matched.values()], options=options,
                                          model=model, save_probs=save_probs, overlay=overlay_path is not None,
                                          auto_size=auto_size)
                    # a resumed run keeps the plan its checkpoint was made with (the process's size varies)
                    saved = resuming.saved_options(stage) if resume else None
                    options = EngineOptions(**saved) if saved is not None else plan.options
                    reverse_chunk = plan.reverse_chunk_bytes
                    bound, memory_note = options.memory_bound(info.num_frames)
                    memory_note = plan.summary() if saved is None else \
                        f"memory budget: the resumed run's plan ({options.to_dict()})"
                    if info_line is not None:
                        info_line(memory_note)
                engine, resume_after, identity = model, None, None
                if resume:
                    identity = resuming.run_identity(info, mask, model, requested, direction=direction,
                                                     save_probs=save_probs, device=torch_device, budget=budget)
                    restored = resuming.restore(stage, identity, model, options, info.num_frames)
                    if restored is not None:
                        engine, resume_after, (count, seconds, object_ids) = restored
                results = segment_video(info, mask, model=engine, options=options, warn=note, direction=direction,
                                        resume_after=resume_after, reverse_chunk_bytes=reverse_chunk)
                del engine  # the generator holds it (a restored backward engine is dropped after its pass)
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
                bar = tqdm(total=info.num_frames, initial=count, unit="frame", desc=input.name, leave=False,
                           disable=True if not progress else None, file=sys.stderr, dynamic_ncols=True)
                since = 0  # frames written since the last checkpoint
                for r in results:
                    precision = r.engine.precision
                    probs_out = r.probs.float().cpu().numpy() if save_probs else None
                    seconds += r.seconds
                    label_writer.write(r.name, r.labels, probs_out, list(r.object_ids))
                    if overlay_writer is not None and not overlay_later:
                        overlay_writer.write(r.image, r.labels)
                    count += 1
                    object_ids = list(r.object_ids)
                    bar.update()
                    since += 1
                    if resume and (stop.requested or (since >= checkpoint_every and count < info.num_frames)):
                        label_writer.flush()  # the checkpoint covers only frames that are on disk
                        resuming.checkpoint(stage, identity, r.engine, (r.direction, r.index),
                                            (count, seconds, object_ids), options)
                        since = 0
                    if stop.requested:  # Ctrl-C / SIGTERM held until this frame was complete and saved
                        raise KeyboardInterrupt
                label_writer.close()
                if overlay_writer is not None:
                    if overlay_later:
                        _overlay_from_pngs(overlay_writer, info, stage)
                    overlay_writer.close()
            except BaseException:
                for writer in (label_writer, overlay_writer):
                    if writer is not None:
                        writer.abort()
                raise
    finally:
        if results is not None:
            results.close()
        if bar is not None:
            bar.close()
    processed = resized_size(info.height, info.width, options.size)
    return SegmentResult(
        out=out, num_frames=count, object_ids=object_ids, width=info.width, height=info.height,
        processed_size=processed, device=str(torch_device), seconds=seconds, overlay=overlay_path,
        overlay_codec=codec, probs=save_probs, warnings=warnings, max_memory_frames=bound,
        memory_note=memory_note, options=options, precision=precision,
    )
