"""The streaming inference engine: one frame in, probabilities out.

It reproduces the original STCN's two evaluation paths with one rule set:

* every annotated frame (a frame given with a mask) becomes memory; objects may first appear on any
  frame and ids need not be contiguous;
* a propagated frame becomes memory when it is at least ``mem_every`` frames after the last memory
  frame (with a single annotation at frame 0 this is the DAVIS path's ``t % mem_every == 0``);
* with ``include_last`` every other frame is kept as the single temporary memory entry;
* a frame's value is encoded only when the next computed frame arrives, so the last frame of a video
  never pays for a value it would not use (the original skips it explicitly);
* with ``need_output=False`` a frame that is neither annotated nor memory is skipped before any work
  (the original's YouTube-VOS path); skipping never changes the frames that are computed.

The engine holds no per-frame outputs: memory grows with memory frames only, and with
``max_memory_frames`` not even that (bounded memory for long videos; see :mod:`.memory_bank`).

Speed (docs/performance.md): the memory is read with one query-major affinity for all objects and a
gather of the top-k values (no dense memory x query matrix), in chunks of query positions sized from
a memory budget; the decoder's and the value fuser's query-frame halves are computed once per frame
and only the per-object halves per object; frames run channels-last. All of this is exact up to float
summation order. ``precision`` ``bf16`` / ``fp16`` (autocast) and ``compile`` (torch.compile) are
optional fast modes; ``fp32`` is exact. :class:`stcn.inference.dense_reference.DenseReferenceCore` keeps the original's
dense computation as the oracle and the benchmark's baseline.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from stcn.inference.frame_step import FrameStep
from stcn.inference.memory_bank import MemoryBank, Policy
from stcn.inference.options import DEFAULT_SIZE, DEFAULT_WORK_MEMORY_MB, EngineOptions
from stcn.inference.preprocess import (
    pad,
    pad_amounts,
    resize_image,
    resize_labels,
    resized_size,
    to_normalised_tensor,
    unpad,
)
from stcn.model.aggregation import aggregate, most_likely
from stcn.model.decoder import DecoderQuery
from stcn.model.memory import Similarity
from stcn.model.network import STCN, KeyFeatures


@dataclass
class _PendingMemory:
    frame: int
    key: torch.Tensor
    f16: torch.Tensor
    image: torch.Tensor
    object_probs: torch.Tensor  # (O, 1, H, W) at the padded size
    object_ids: tuple[int, ...]
    temporary: bool
    pinned: bool = False


class InferenceCore:
    """Frame-by-frame semi-supervised VOS with STCN.

    Args:
        model: an :class:`~stcn.model.network.STCN` (e.g. from :func:`stcn.load_model`).
        top_k: affinities kept per query position (the paper: 20).
        mem_every: a propagated frame becomes memory this many frames after the last memory frame.
        include_last: keep the latest frame as a temporary memory entry.
        size: process frames with this shorter side (bicubic, as the original's YouTube-VOS and generic
            evaluation), or ``-1`` for the native size (its DAVIS evaluation). Default 480, the same as
            ``stcn segment`` and :class:`~stcn.inference.options.EngineOptions`. Outputs are always at
            the input size.
        precision: the networks' precision (the memory read stays float32): ``auto`` (the default, as
            every command's: fp16 on CUDA, bf16 on a CPU that runs it natively, fp32 otherwise; see
            :func:`~stcn.inference.precision.resolve_precision`), ``fp32`` (exact: the fidelity tests and
            the paper's numbers), ``bf16`` or ``fp16`` (CUDA). The mode that runs is ``self.precision``.
        amp: the older spelling of mixed precision: ``fp16`` on CUDA, ``bf16`` elsewhere (unless
            ``precision`` names bf16 or fp16 itself).
        similarity: ``"l2"`` (STCN) or ``"dot"`` (the paper's ablation).
        query_chunk: read the memory this many query positions at a time (default: chosen from
            ``work_memory_mb``).
        max_memory_frames: keep at most this many memory frames (None: every one, the paper). The
            first annotated frame is always kept; ``memory_policy`` picks the frame a full memory
            evicts (``"least_used"`` or ``"oldest"``). The ``include_last`` entry comes on top.
        work_memory_mb: budget for transient working memory: the memory read's affinity chunks get
            1/16 of it, and objects are decoded / encoded in batches that fit it, so the peak memory
            of a frame is bounded at any resolution.
        channels_last: run the network channels-last (default: on CPU, where it is faster).
        compile: ``torch.compile`` the network's per-frame parts (fast mode; first frames compile).
            True uses the default backend (inductor); a string names another backend.
    """

    def __init__(
        self,
        model: STCN,
        *,
        top_k: int = 20,
        mem_every: int = 5,
        include_last: bool = False,
        size: int = DEFAULT_SIZE,
        precision: str = "auto",
        amp: bool = False,
        similarity: Similarity = "l2",
        query_chunk: int | None = None,
        max_memory_frames: int | None = None,
        memory_policy: Policy = "least_used",
        work_memory_mb: float = DEFAULT_WORK_MEMORY_MB,
        channels_last: bool | None = None,
        compile: bool | str = False,
    ) -> None:
        if mem_every < 1:
            raise ValueError("mem_every must be >= 1")
        if max_memory_frames is not None and max_memory_frames < 2:
            raise ValueError("max_memory_frames must be at least 2 (the first annotated frame is always kept)")
        # The settings as keywords of this constructor: what spawn() copies and state_dict() records.
        self._config = dict(top_k=top_k, mem_every=mem_every, include_last=include_last, size=size,
                            similarity=similarity, query_chunk=query_chunk, max_memory_frames=max_memory_frames,
                            memory_policy=memory_policy, work_memory_mb=work_memory_mb,
                            channels_last=channels_last, compile=compile)
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.mem_every = mem_every
        self.include_last = include_last
        self.size = size
        if amp and precision in ("auto", "fp32"):
            precision = "fp16" if self.device.type == "cuda" else "bf16"
        # the per-frame network work (shared with the interactive core): precision, batches, compile
        self.frame_step = FrameStep(model, precision=precision, work_memory_mb=work_memory_mb, compile=compile)
        self.precision = self.frame_step.precision
        self.amp = self.precision != "fp32"
        self._config["precision"] = self.precision
        self.work_memory = self.frame_step.work_memory
        self.channels_last = self.device.type == "cpu" if channels_last is None else bool(channels_last)
        self.memory = MemoryBank(top_k=top_k, similarity=similarity, query_chunk=query_chunk,
                                 max_frames=max_memory_frames, policy=memory_policy,
                                 read_budget=self.frame_step.read_budget)
        self.object_ids: list[int] = []
        self.frame_index = -1
        self.last_memory_frame: int | None = None
        self._pending: _PendingMemory | None = None
        self._pinned = False

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def from_options(cls, model: STCN, options: EngineOptions, *, num_frames: int | None = None) -> InferenceCore:
        """An engine running ``options`` (the memory bound resolved for a video of ``num_frames``)."""
        bound, _ = options.memory_bound(num_frames)
        return cls(model, top_k=options.top_k, mem_every=options.mem_every, include_last=options.include_last,
                   size=options.size, precision=options.precision, max_memory_frames=bound,
                   memory_policy=options.memory_policy, work_memory_mb=options.work_memory_mb,
                   compile=options.compile)

    def config(self) -> dict:
        """The engine's settings as keywords of the constructor (precision resolved)."""
        return dict(self._config)

    def spawn(self) -> InferenceCore:
        """A fresh engine (empty memory) with this one's model and settings: the second pass of a
        two-direction run."""
        return InferenceCore(self.model, **self._config)

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """``(meta, tensors)``: everything the engine has learnt from the frames so far, for resuming.

        meta (JSON-able): the settings (:meth:`config`), object ids, frame counter, last memory frame,
        whether the first annotation is pinned, the pending memory's frame / objects / flags, and the
        memory bank's bookkeeping (slots, rows, usage counts). tensors (CPU): the bank's storage
        (``memory.*``, see :meth:`MemoryBank.state_dict`) and the pending memory (``pending.key``
        (1, C_k, h, w), ``pending.f16`` (1, 1024, h, w), ``pending.image`` (1, 3, Hp, Wp),
        ``pending.object_probs`` (O, 1, Hp, Wp)), each with its dtype. Save it with
        :func:`stcn.inference.resume.save_state` (safetensors + JSON, no pickle).
        """
        bank_meta, bank_tensors = self.memory.state_dict()
        meta = {
            "config": self.config(), "object_ids": list(self.object_ids), "frame_index": self.frame_index,
            "last_memory_frame": self.last_memory_frame, "pinned": self._pinned, "memory": bank_meta,
            "pending": None, "channels_last": [],
        }
        tensors = {f"memory.{k}": v for k, v in bank_tensors.items()}
        p = self._pending
        if p is not None:
            meta["pending"] = {"frame": p.frame, "object_ids": list(p.object_ids), "temporary": p.temporary,
                               "pinned": p.pinned}
            for name in ("key", "f16", "image", "object_probs"):
                t = getattr(p, name)
                # the memory format is recorded so that the restored tensors feed the network the same way
                if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
                    meta["channels_last"].append(name)
                tensors[f"pending.{name}"] = t.detach().to("cpu", copy=True).contiguous()
        return meta, tensors

    def load_state_dict(self, meta: dict, tensors: dict[str, torch.Tensor]) -> None:
        """Continue from :meth:`state_dict`: the next :meth:`step` gives what the saved engine's next
        step would have, bit for bit. Raises ValueError when the settings differ from the saved ones."""
        saved = meta["config"]
        mine = self.config()
        differ = [f"{k} {saved.get(k)!r} != {mine[k]!r}" for k in mine if k != "compile" and saved.get(k) != mine[k]]
        if differ:
            raise ValueError("the saved engine ran with other settings: " + ", ".join(differ))
        self.memory.load_state_dict(meta["memory"], {k[len("memory."):]: v for k, v in tensors.items()
                                                     if k.startswith("memory.")}, self.device)
        self.object_ids = [int(i) for i in meta["object_ids"]]
        self.frame_index = int(meta["frame_index"])
        self.last_memory_frame = None if meta["last_memory_frame"] is None else int(meta["last_memory_frame"])
        self._pinned = bool(meta["pinned"])
        self._pending = None
        p = meta["pending"]
        if p is not None:
            parts = {}
            for name in ("key", "f16", "image", "object_probs"):
                t = tensors[f"pending.{name}"].to(self.device)
                if name in meta["channels_last"]:
                    t = t.contiguous(memory_format=torch.channels_last)
                parts[name] = t
            self._pending = _PendingMemory(int(p["frame"]), parts["key"], parts["f16"], parts["image"],
                                           parts["object_probs"], tuple(int(i) for i in p["object_ids"]),
                                           bool(p["temporary"]), bool(p["pinned"]))

    def _autocast(self):
        return self.frame_step.autocast()

    def _object_batch(self, pixels: int) -> int:
        """Objects per decoder / value-encoder batch that fit the work-memory budget."""
        return self.frame_step.object_batch(pixels)

    def _encode_values(self, image: torch.Tensor, f16: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        return self.frame_step.encode_values(image, f16, probs)

    def _flush_pending(self) -> None:
        p, self._pending = self._pending, None
        if p is None:
            return
        values = self._encode_values(p.image, p.f16, p.object_probs)
        self.memory.add(p.frame, p.key, dict(zip(p.object_ids, values)), temporary=p.temporary, pinned=p.pinned)

    def _prepare_image(self, image) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], tuple[int, ...]]:
        x = to_normalised_tensor(image, self.device)
        h, w = x.shape[-2:]
        proc = resized_size(h, w, self.size)
        x = resize_image(x, proc)
        amounts = pad_amounts(*proc)
        x = pad(x, amounts)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, (h, w), proc, amounts

    def _prepare_mask(self, mask, size: tuple[int, int], proc, amounts) -> torch.Tensor:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if m.dim() != 2:
            raise ValueError(f"mask must be an HxW map of object ids, got shape {tuple(m.shape)}")
        if tuple(m.shape) != tuple(size):
            raise ValueError(f"mask is {m.shape[0]}x{m.shape[1]} but the frame is {size[0]}x{size[1]}")
        m = resize_labels(m.to(self.device, torch.int64), proc)
        return pad(m, amounts)

    def _encode_key(self, x: torch.Tensor) -> KeyFeatures:
        return self.frame_step.encode_key(x)

    def _decode(self, readout: torch.Tensor, query: DecoderQuery) -> torch.Tensor:
        return self.frame_step.decode(readout, query)

    def _propagate(self, feats: KeyFeatures) -> torch.Tensor:
        """Object probabilities (O, 1, H, W) at the padded size from the memory."""
        return self.frame_step.object_probs(self.memory, feats, self.object_ids)

    @property
    def memory_frames(self) -> list[int]:
        """Indices of the permanent memory frames (annotated frames and every ``mem_every``-th), the
        latest included while its value is still pending (values are encoded when the next frame is
        computed, never for a frame that none follows). The ``include_last`` entry is not listed. Sorted
        (with bounded memory, evicted frames are gone and new frames reuse their slots)."""
        frames = [e.frame for e in self.memory.entries if not e.temporary]
        if self._pending is not None and not self._pending.temporary:
            frames = [*frames, self._pending.frame]
        return sorted(frames)

    def _is_memory_frame(self, t: int) -> bool:
        return self.last_memory_frame is not None and t - self.last_memory_frame >= self.mem_every

    def will_compute(self, *, annotated: bool = False, need_output: bool = True) -> bool:
        """Whether :meth:`step` would compute the next frame.

        False only for a frame without a mask whose output is not needed and that is not a memory
        frame (and ``include_last`` is off): ``step`` then returns None without looking at the image,
        so a caller may skip decoding it and pass ``None``.
        """
        if annotated or need_output or self.include_last:
            return True
        return self._is_memory_frame(self.frame_index + 1)

    # ----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def step(
        self,
        image: np.ndarray | torch.Tensor | None,
        mask: np.ndarray | torch.Tensor | None = None,
        objects: Sequence[int] | None = None,
        *,
        need_output: bool = True,
    ) -> torch.Tensor | None:
        """Process the next frame.

        Args:
            image: HxWx3 uint8 numpy array, or a 3xHxW float tensor in [0, 1]; may be None for a
                frame that :meth:`will_compute` says is skipped.
            mask: optional HxW map of object ids for this frame (0 = background); any frame may carry
                one, bringing new objects or re-annotating known ones.
            objects: the ids the mask defines (default: all non-zero ids in it). Pixels of other ids
                are ignored.
            need_output: ``False`` lets the engine skip a frame that is neither memory nor annotated
                (the original's YouTube-VOS path skips frames it does not write); it returns None
                and does no work at all (no resize, no network). Skipping is a pure optimisation:
                the frames that are computed give the same results either way.

        Returns:
            (K+1, H, W) float32 probabilities at the input size, channel 0 the background and channel
            i the object ``self.object_ids[i-1]``; or None for a skipped frame.
        """
        if not self.will_compute(annotated=mask is not None, need_output=need_output):
            # Skipped before any work on the image (it may even be None). A pending memory value
            # stays pending: it is encoded by the next computed frame, or never if none follows.
            self.frame_index += 1
            return None
        if image is None:
            raise ValueError("image may be None only for a frame that the engine skips (see will_compute)")
        t = self.frame_index + 1
        self.frame_index = t
        self._flush_pending()
        x, size, proc, amounts = self._prepare_image(image)
        is_memory = self._is_memory_frame(t)

        feats: KeyFeatures | None = None
        object_probs: torch.Tensor | None = None  # (O, 1, Hp, Wp)
        if self.object_ids and len(self.memory):
            feats = self._encode_key(x)
            object_probs = self._propagate(feats)
        probs: torch.Tensor | None = None
        if object_probs is not None:
            probs = aggregate(object_probs, dim=0)

        if mask is not None:
            labels = self._prepare_mask(mask, size, proc, amounts)
            given = sorted(int(i) for i in torch.unique(labels).tolist() if i != 0) if objects is None \
                else [int(i) for i in objects]
            new = [i for i in given if i not in self.object_ids]
            self.object_ids.extend(new)
            hp, wp = labels.shape
            current = torch.zeros(len(self.object_ids), 1, hp, wp, device=self.device)
            if probs is not None:
                current[: probs.shape[0] - 1] = probs[1:]
            if given:
                given_t = torch.tensor(given, device=self.device)
                region = torch.isin(labels, given_t)
                current[:, :, region] = 0
                for oid in given:
                    current[self.object_ids.index(oid), 0] = (labels == oid).float()
            probs = aggregate(current, dim=0)
            is_memory = bool(self.object_ids)
            if feats is None:
                feats = self._encode_key(x)

        if probs is None:  # no object yet: everything is background
            return torch.ones(1, *size, device=self.device)

        if is_memory or self.include_last:
            if feats is None:
                feats = self._encode_key(x)
            pinned = is_memory and mask is not None and not self._pinned  # kept by bounded memory
            self._pinned = self._pinned or pinned
            self._pending = _PendingMemory(
                t, feats.key, feats.f16, x, probs[1:], tuple(self.object_ids), temporary=not is_memory,
                pinned=pinned,
            )
            if is_memory:
                self.last_memory_frame = t
        return self._to_output(probs, size, proc, amounts)

    def _to_output(self, probs: torch.Tensor, size, proc, amounts) -> torch.Tensor:
        out = unpad(probs[:, 0], amounts)
        if tuple(proc) != tuple(size):
            out = F.interpolate(out[None], size=size, mode="bilinear", align_corners=False)[0]
        return out

    def labels(self, probs: torch.Tensor) -> np.ndarray:
        """(K+1, H, W) probabilities -> HxW label map in the original object ids (uint8 when ids fit)."""
        index = most_likely(probs, dim=0).cpu().numpy()
        lut = np.array([0, *self.object_ids], dtype=np.int64)
        out = lut[index]
        return out.astype(np.uint8) if lut.max() <= 255 else out.astype(np.int32)

