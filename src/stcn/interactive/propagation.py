"""The interactive propagation core of MiVOS with STCN: Interact -> Propagate -> Fuse.

    vos = InteractivePropagation(stcn_model, fusion_net, frames, num_objects=K)   # frames: T x H x W x 3 uint8
    labels = vos.interact(mask, t)        # mask (K+1, H, W) or (K+1, 1, H, W): e.g. S2M's hard mask
    labels = vos.update_mask_only(mask, t)  # show an interaction's result without propagating it

State (at the padded size Hp x Wp): ``prob`` (K+1, T, 1, Hp, Wp) (background 1e-7, objects 0 before any
result), the label maps, the set of interacted frames and the *certain memory* (key + values of every
frame propagated from, in interaction order, never removed; a frame interacted twice is there twice).

One round ``interact(mask, tr)``: D = mask - prob[:, tr] (kept as D+ / D- for the fusion);
prob[:, tr] = mask; (key, values of the mask's objects) appended to the certain memory; then a forward
pass and a backward pass from tr. A pass stops before the nearest interacted frame ``tc`` in its
direction (or runs to the video's end); for each frame it reads the certain memory plus the pass-local
memory (top-k STCN read), soft-aggregates the decoder's sigmoids (``out_mask``), inserts the frame into
the pass-local memory when it is not the pass's last frame and at least ``mem_every`` frames from the
last insertion (counted from tr), and writes ``prob[:, ti]`` = out_mask when the pass has no ``tc``,
else the difference-aware fusion of (prob[:, ti], out_mask) (:func:`stcn.interactive.fusion.fuse_frame`).
Pass-local memory is dropped after the pass. Labels = argmax of prob for every frame.

Each frame's network work is the engine's (:class:`stcn.inference.frame_step.FrameStep`, the recipe
:class:`stcn.inference.InferenceCore` runs): key encoding, the top-k read of a
:class:`stcn.inference.MemoryBank`, the decoder per object in object batches, soft aggregation, the
values of memory frames, and the precision (autocast). Only the order of frames and memory is MiVOS's.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from stcn.inference.frame_step import FrameStep
from stcn.inference.memory_bank import MemoryBank
from stcn.inference.options import DEFAULT_WORK_MEMORY_MB
from stcn.inference.preprocess import pad, pad_amounts, to_normalised_tensor, unpad
from stcn.interactive.fusion import (
    FusionNet,
    align_difference,
    fuse_frame,
    mask_difference,
)
from stcn.model.aggregation import most_likely
from stcn.model.network import STCN, KeyFeatures


@dataclass
class PassTrace:
    """What one propagation pass did (for tests and diagnostics)."""

    start: int
    forward: bool
    stop: int  # the interacted frame the pass stopped before; T or -1 at the video's end
    certain_memory: int  # certain-memory frames it read
    memory_added: list[int] = field(default_factory=list)  # frames added to the pass-local memory
    fused: list[tuple[int, int, int]] = field(default_factory=list)  # (tc, tr, ti)


@dataclass
class RoundTrace:
    frame: int
    passes: list[PassTrace]
    interacted: list[int]


class InteractivePropagation:
    """MiVOS's interactive core (InferenceCore of the MiVOS-STCN branch) on our STCN network.

    Args:
        prop_net: the STCN network (e.g. :func:`stcn.load_model`); MiVOS uses the released ``stcn.pth``.
        fusion: the FusionNet (:func:`stcn.interactive.load_fusion`), or None to overwrite instead of
            fusing (MiVOS without difference-aware fusion).
        frames: the video, T x H x W x 3 uint8 (a numpy array or a sequence of arrays), or a
            (T, 3, H, W) float tensor already normalised with ImageNet statistics. Padded here.
        num_objects: K (object ids 1..K).
        mem_every: pass-local memory insertion interval (MiVOS: 5).
        top_k: STCN's top-k read (20).
        feature_cache: how many frames' key-encoder features to keep (the 64-channel keys of every
            computed frame are always kept: they are small and serve the fusion alignment).
        precision, work_memory_mb: the propagation network's precision and work-memory budget, as
            :class:`stcn.inference.InferenceCore`'s (:class:`~stcn.inference.frame_step.FrameStep`);
            ``auto`` by default, ``fp32`` exact. The fusion network runs in float32.
    """

    def __init__(
        self,
        prop_net: STCN,
        fusion: FusionNet | None,
        frames,
        num_objects: int,
        *,
        mem_every: int = 5,
        top_k: int = 20,
        feature_cache: int = 16,
        precision: str = "auto",
        work_memory_mb: float = DEFAULT_WORK_MEMORY_MB,
    ) -> None:
        if num_objects < 1:
            raise ValueError("num_objects must be >= 1")
        self.prop_net = prop_net.eval()
        self.frame_step = FrameStep(prop_net, precision=precision, work_memory_mb=work_memory_mb)
        self.fusion = fusion.eval() if fusion is not None else None
        self.device = next(prop_net.parameters()).device
        self.num_objects = num_objects
        self.mem_every = mem_every
        self.top_k = top_k
        self.images = self._prepare_frames(frames)  # (T, 3, Hp, Wp) on the device
        self.num_frames = self.images.shape[0]
        hp, wp = self.images.shape[-2:]
        k1 = num_objects + 1
        self.prob = torch.zeros(k1, self.num_frames, 1, hp, wp, device=self.device)
        self.prob[0] = 1e-7
        self.masks = torch.zeros(self.num_frames, hp, wp, dtype=torch.uint8, device=self.device)
        self.interacted: set[int] = set()
        self.certain = self._memory()
        self.trace: list[RoundTrace] = []
        self._keys: dict[int, torch.Tensor] = {}
        self._features: OrderedDict[int, KeyFeatures] = OrderedDict()
        self._feature_cache = max(1, feature_cache)
        # set to a dict to receive, per fused frame of the latest round, (out_mask, attn) (diagnostics)
        self.fusion_inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    # ---- input preparation --------------------------------------------------------------------------
    def _prepare_frames(self, frames) -> torch.Tensor:
        if isinstance(frames, torch.Tensor) and frames.is_floating_point():
            x = frames.to(self.device, torch.float32)
            if x.dim() != 4 or x.shape[1] != 3:
                raise ValueError(f"expected normalised frames (T, 3, H, W), got {tuple(x.shape)}")
        else:
            x = torch.cat([to_normalised_tensor(np.asarray(f), self.device) for f in frames])
        self.size = tuple(x.shape[-2:])
        self.pad = pad_amounts(*self.size)
        return pad(x, self.pad)

    def _prepare_mask(self, mask) -> torch.Tensor:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        m = m.to(self.device, torch.float32)
        if m.dim() == 3:
            m = m.unsqueeze(1)
        if m.dim() != 4 or m.shape[0] != self.num_objects + 1 or m.shape[1] != 1:
            raise ValueError(f"mask must be (K+1, 1, H, W) or (K+1, H, W) with K = {self.num_objects}, "
                             f"got {tuple(m.shape)}")
        if tuple(m.shape[-2:]) == tuple(self.images.shape[-2:]) and any(self.pad):
            return m  # already padded
        if tuple(m.shape[-2:]) != self.size:
            raise ValueError(f"mask is {m.shape[-2]}x{m.shape[-1]} but the frames are {self.size[0]}x{self.size[1]}")
        return pad(m, self.pad)

    def _check_frame(self, t: int) -> int:
        t = int(t)
        if not 0 <= t < self.num_frames:
            raise IndexError(f"frame {t} outside 0..{self.num_frames - 1}")
        return t

    # ---- features -----------------------------------------------------------------------------------
    def _memory(self) -> MemoryBank:
        return MemoryBank(top_k=self.top_k, read_budget=self.frame_step.read_budget)

    def _encode(self, t: int) -> KeyFeatures:
        feats = self._features.get(t)
        if feats is None:
            feats = self.frame_step.encode_key(self.images[t:t + 1])
            self._features[t] = feats
            self._keys[t] = feats.key
            while len(self._features) > self._feature_cache:
                self._features.popitem(last=False)
        else:
            self._features.move_to_end(t)
        return feats

    def _key(self, t: int) -> torch.Tensor:
        return self._keys[t] if t in self._keys else self._encode(t).key

    def _values(self, t: int, feats: KeyFeatures, object_probs: torch.Tensor) -> dict[int, torch.Tensor]:
        values = self.frame_step.encode_values(self.images[t:t + 1], feats.f16, object_probs)
        return {k + 1: v for k, v in enumerate(values)}

    # ---- public API ---------------------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """(T, H, W) uint8 label maps at the input size."""
        return unpad(self.masks, self.pad).cpu().numpy().copy()  # a copy: later rounds update masks in place

    @torch.inference_mode()
    def update_mask_only(self, mask, t: int) -> np.ndarray:
        """Show an interaction's result at frame t without propagating: the label map changes, ``prob``
        does not (the next round's difference is measured against the last propagated result)."""
        t = self._check_frame(t)
        self.masks[t] = most_likely(self._prepare_mask(mask), dim=0)[0].to(torch.uint8)
        return self.labels

    def frames_to_propagate(self, t: int) -> int:
        """How many frames a round at frame ``t`` computes (up to the nearest interacted frames)."""
        t = self._check_frame(t)
        ahead = [f for f in self.interacted if f > t]
        behind = [f for f in self.interacted if f < t]
        return (min(ahead) if ahead else self.num_frames) - (max(behind) if behind else -1) - 2

    @torch.inference_mode()
    def interact(self, mask, t: int, *, on_frame: Callable[[int], None] | None = None) -> np.ndarray:
        """One round at frame ``t`` with the interaction's (K+1) mask (at the input size, or already
        padded): propagate forward then backward, fusing between interacted frames. Returns the
        (T, H, W) uint8 label maps.

        ``on_frame(ti)`` is called before each propagated frame is computed (progress reports; an
        exception raised there stops the round, and the caller must restore the state it saved)."""
        tr = self._check_frame(t)
        mask = self._prepare_mask(mask)
        self.interacted.add(tr)
        pos, neg = mask_difference(mask, self.prob[:, tr])
        self.prob[:, tr] = mask
        feats = self._encode(tr)
        self.certain.add(tr, feats.key, self._values(tr, feats, mask[1:]))
        if self.fusion_inputs is not None:
            self.fusion_inputs.clear()
        passes = [self._propagate(tr, forward, pos, neg, on_frame) for forward in (True, False)]
        self.trace.append(RoundTrace(tr, passes, sorted(self.interacted)))
        self.masks = most_likely(self.prob[:, :, 0], dim=0).to(torch.uint8)
        return self.labels

    # ---- one pass -----------------------------------------------------------------------------------
    def _propagate(self, tr: int, forward: bool, pos: torch.Tensor, neg: torch.Tensor,
                   on_frame: Callable[[int], None] | None = None) -> PassTrace:
        if forward:
            ahead = [f for f in self.interacted if f > tr]
            tc = min(ahead) if ahead else None
            frames = range(tr + 1, tc if tc is not None else self.num_frames)
            stop = tc if tc is not None else self.num_frames
        else:
            behind = [f for f in self.interacted if f < tr]
            tc = max(behind) if behind else None
            frames = range(tr - 1, tc if tc is not None else -1, -1)
            stop = tc if tc is not None else -1
        trace = PassTrace(tr, forward, stop, len(self.certain))
        if len(frames) == 0:
            return trace
        bank = self._memory()
        bank.entries = list(self.certain.entries)  # pass-local frames are appended to a copy
        object_ids = tuple(range(1, self.num_objects + 1))
        end = frames[-1]
        last = tr
        for ti in frames:
            if on_frame is not None:
                on_frame(ti)
            feats = self._encode(ti)
            out_mask = self.frame_step.probabilities(bank, feats, object_ids)  # (K+1, 1, Hp, Wp)
            if ti != end and abs(ti - last) >= self.mem_every:
                bank.add(ti, feats.key, self._values(ti, feats, out_mask[1:]))
                last = ti
                trace.memory_added.append(ti)
            if tc is not None and self.fusion is not None:
                attn = align_difference(self._key(tr), pos, neg, feats.key)
                if self.fusion_inputs is not None:
                    self.fusion_inputs[ti] = (out_mask, attn)
                self.prob[:, ti] = fuse_frame(
                    self.fusion, self.images[ti:ti + 1], self.prob[:, ti], out_mask, attn, tc, tr, ti
                )
                trace.fused.append((tc, tr, ti))
            else:
                self.prob[:, ti] = out_mask
        return trace

