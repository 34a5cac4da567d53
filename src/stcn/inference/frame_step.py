"""The per-frame network recipe of the engine, in one place: what :class:`~stcn.inference.InferenceCore`
(semi-supervised inference) and :class:`stcn.interactive.propagation.InteractivePropagation` (MiVOS's
interactive rounds) both run for a frame.

* :meth:`FrameStep.encode_key`: the key encoder on a normalised, padded frame (key in float32);
* :meth:`FrameStep.object_probs`: the top-k memory read (float32, outside autocast) of a
  :class:`~stcn.inference.memory_bank.MemoryBank`, the decoder's query half once per frame and its
  per-object half in object batches that fit the work-memory budget, sigmoid;
* :meth:`FrameStep.probabilities`: that, soft-aggregated over {background, objects};
* :meth:`FrameStep.encode_values`: the values of a frame's objects for the memory (the value fuser's
  key-feature half once, the objects in batches);
* the precision (``fp32`` exact; ``bf16`` / ``fp16`` by autocast) and optional ``torch.compile`` of
  the network's per-frame parts.

*When* a frame is computed, read or added to the memory is the callers' business (their rules differ).
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence

import torch

from stcn.inference.memory_bank import MemoryBank
from stcn.inference.options import DEFAULT_WORK_MEMORY_MB
from stcn.inference.precision import autocast_dtype, resolve_precision
from stcn.model.aggregation import aggregate
from stcn.model.decoder import DecoderQuery
from stcn.model.network import STCN, KeyFeatures, others_sum

# Rough peak bytes per object per processed pixel in the decoder / value encoder (fp32): the last
# decoder stage holds ~6 tensors of hidden/2 = 256 channels at 1/4 resolution (6 * 256 * 4 / 16).
_BYTES_PER_OBJECT_PIXEL = 400

# the modules whose weights autocast casts (and :func:`weights_in` keeps cast)
_LOWERED = (torch.nn.Conv2d, torch.nn.Linear)


class FrameStep:
    """One frame's network work with STCN at a precision and a work-memory budget.

    Args:
        model: the STCN network (put in eval mode).
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"``
            (:func:`~stcn.inference.precision.resolve_precision`; the resolved mode is ``self.precision``).
        work_memory_mb: budget for transient working memory: objects are decoded / encoded in batches
            that fit it, and a memory read's affinity chunks get 1/16 of it (:attr:`read_budget`).
        compile: ``torch.compile`` the network's per-frame parts; True: inductor, a string: that backend.

    In bf16 / fp16 the network runs from a copy whose convolution and linear weights are already in that
    dtype (:func:`weights_in`), made by the first FrameStep of ``model`` at that precision and shared by
    later ones while ``model``'s tensors are unchanged (:func:`lowered_network`): weights changed in
    ``model`` while a FrameStep runs are not seen by it.
    """

    def __init__(self, model: STCN, *, precision: str = "fp32", work_memory_mb: float = DEFAULT_WORK_MEMORY_MB,
                 compile: bool | str = False) -> None:
        if work_memory_mb <= 0:
            raise ValueError("work_memory_mb must be positive")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.work_memory = int(work_memory_mb * 2**20)
        dtype = autocast_dtype(self.precision)
        net = model if dtype is None else lowered_network(model, dtype)
        self.net = _Compiled(net, "inductor" if compile is True else compile) if compile else net

    @property
    def read_budget(self) -> int:
        """Bytes of affinity per memory-read chunk (for the :class:`MemoryBank` the frames read)."""
        return self.work_memory // 16

    def autocast(self):
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def object_batch(self, pixels: int) -> int:
        """Objects per decoder / value-encoder batch that fit the work-memory budget."""
        return max(1, self.work_memory // (_BYTES_PER_OBJECT_PIXEL * pixels))

    def encode_key(self, x: torch.Tensor) -> KeyFeatures:
        """Key-encoder features of a normalised, padded frame (1, 3, Hp, Wp); the key in float32."""
        with self.autocast():
            feats = self.net.encode_key(x)
        return KeyFeatures(feats.key.float(), *feats[1:])

    def encode_values(self, image: torch.Tensor, f16: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Memory values (O, V, h, w) float32 of a frame's objects: image (1, 3, Hp, Wp), its key-encoder
        ``f16``, the objects' probabilities (O, 1, Hp, Wp) ("others" = the other objects' sum)."""
        step = self.object_batch(image.shape[-2] * image.shape[-1])
        others = None if self.model.single_object or step >= probs.shape[0] else others_sum(probs)
        with self.autocast():
            parts = [self.net.encode_object_values_split(
                         image, f16, probs[i:i + step], None if others is None else others[i:i + step])
                     for i in range(0, probs.shape[0], step)]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).float()

    def decode(self, readout: torch.Tensor, query: DecoderQuery) -> torch.Tensor:
        """Logits (O, 1, Hp, Wp) from read-outs (O, C_v, h, w), in object batches."""
        step = self.object_batch(16 * readout.shape[-2] * 16 * readout.shape[-1])
        parts = [self.net.decode_objects(readout[i:i + step], query) for i in range(0, readout.shape[0], step)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def object_probs(self, memory: MemoryBank, feats: KeyFeatures, object_ids: Sequence[int]) -> torch.Tensor:
        """Independent object probabilities (O, 1, Hp, Wp) of the frame ``feats`` read from ``memory``."""
        readout = memory.read(feats.key, tuple(object_ids))  # float32, outside autocast
        with self.autocast():
            query = self.net.query_features(feats)
            logits = self.decode(readout, query)
        return torch.sigmoid(logits.float())

    def probabilities(self, memory: MemoryBank, feats: KeyFeatures, object_ids: Sequence[int]) -> torch.Tensor:
        """(O+1, 1, Hp, Wp): :meth:`object_probs` soft-aggregated, channel 0 the background."""
        return aggregate(self.object_probs(memory, feats, object_ids), dim=0)


# model -> {dtype: (stamp of the model's tensors, its weights_in copy)}; weak: the copies go with the model
_LOWERED_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def lowered_network(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """``weights_in(model, dtype)``, cached while ``model``'s parameters and buffers are the same tensors
    at the same versions: the engines of one model (a two-direction run's two passes, which are alive
    together; validation rounds) share one copy, which is what the memory planner counts."""
    tensors = (*model.parameters(), *model.buffers())
    # a tensor made under torch.inference_mode() has no version counter: such a model is copied afresh
    if any(t.is_inference() for t in tensors):
        return weights_in(model, dtype)
    stamp = tuple((t.data_ptr(), t._version) for t in tensors)
    copies = _LOWERED_COPIES.setdefault(model, {})
    hit = copies.get(dtype)
    if hit is None or hit[0] != stamp:
        hit = copies[dtype] = (stamp, weights_in(model, dtype))
    return hit[1]


def weights_in(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """A copy of ``model`` (eval mode) whose ``Conv2d`` / ``Linear`` weights and biases are ``dtype``; every
    other parameter and buffer (BatchNorm's) is shared with ``model``, not copied.

    Why: autocast casts a float32 weight to bf16 / fp16 at every call, so each frame re-cast every weight
    of the network (~195 casts per frame at 480p, ~2.5 % of a bf16 frame). Autocast rounds with the same
    ``Tensor.to`` as this copy, and leaves an argument already in its dtype alone, so outputs are bit for bit
    those of autocast over ``model`` (tests/inference/test_precision.py).
    """
    import copy

    memo: dict[int, object] = {}
    for module in model.modules():
        lower = isinstance(module, _LOWERED)
        for name, p in module.named_parameters(recurse=False):
            if lower and name in ("weight", "bias"):
                memo[id(p)] = torch.nn.Parameter(p.detach().to(dtype), requires_grad=False)
            else:
                memo[id(p)] = p
        for b in module.buffers(recurse=False):
            memo[id(b)] = b
        if "_split_cache" in module.__dict__:  # slices of the float32 weights: not for the copy
            memo[id(module.__dict__["_split_cache"])] = {}
    return copy.deepcopy(model, memo).eval()


def lowered_weight_bytes(model: torch.nn.Module | None, precision: str) -> int:
    """Bytes of the copy :func:`weights_in` makes for ``model`` run at ``precision`` (0 in fp32)."""
    if model is None:
        return 0
    dtype = autocast_dtype(resolve_precision(precision, next(model.parameters()).device))
    if dtype is None:
        return 0
    size = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() * size for m in model.modules() if isinstance(m, _LOWERED)
               for p in m.parameters(recurse=False))


class _Compiled:
    """The network's per-frame parts through ``torch.compile`` (shapes are static within a video)."""

    def __init__(self, model: STCN, backend: str = "inductor") -> None:
        self.model = model
        for name in ("encode_key", "query_features", "decode_objects", "encode_object_values_split"):
            setattr(self, name, torch.compile(getattr(model, name), dynamic=False, backend=backend))
