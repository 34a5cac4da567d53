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
  the network's per-frame parts;
* the encoders' BatchNorms folded into the convolutions before them (:func:`fold_batchnorm`).

*When* a frame is computed, read or added to the memory is the callers' business (their rules differ).
"""
from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence

import torch
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from stcn.inference.memory_bank import MemoryBank
from stcn.inference.options import DEFAULT_WORK_MEMORY_MB
from stcn.inference.precision import autocast_dtype, resolve_precision
from stcn.model.aggregation import aggregate
from stcn.model.decoder import DecoderQuery
from stcn.model.encoders import KeyEncoder, ValueEncoder
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
        fold_bn: run a copy of the network whose encoder BatchNorms are folded into their
            convolutions (:func:`fold_batchnorm`; equal up to float rounding). Off: ``model`` as it is.

    The network runs from a copy of ``model`` -- BatchNorm folded, and in bf16 / fp16 the convolution and
    linear weights already in that dtype (:func:`weights_in`) -- made when the first FrameStep of these
    settings is built and shared by later ones while ``model``'s tensors are unchanged
    (:func:`prepared_network`): weights changed in ``model`` while a FrameStep runs are not seen by it.
    """

    def __init__(self, model: STCN, *, precision: str = "fp32", work_memory_mb: float = DEFAULT_WORK_MEMORY_MB,
                 compile: bool | str = False, fold_bn: bool = True) -> None:
        if work_memory_mb <= 0:
            raise ValueError("work_memory_mb must be positive")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.work_memory = int(work_memory_mb * 2**20)
        net = prepared_network(model, autocast_dtype(self.precision), fold_bn=fold_bn)
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


# model -> {(dtype, fold_bn): (stamp of model's tensors, the copy)}; weak, so a model's copies go with it
_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prepared_network(model: torch.nn.Module, dtype: torch.dtype | None, *, fold_bn: bool = True) -> torch.nn.Module:
    """The network a :class:`FrameStep` runs for ``model``: :func:`fold_batchnorm` (if ``fold_bn``), then
    :func:`weights_in` ``dtype`` (None: float32, no copy of the weights). Cached per model and settings
    while the model's parameters and buffers are the same tensors at the same versions, so that engines
    of one model (a two-direction run's two passes, validation rounds) share one copy."""
    tensors = (*model.parameters(), *model.buffers())
    # a tensor made under torch.inference_mode() has no version counter: such a model is copied afresh
    stamp = None if any(t.is_inference() for t in tensors) else tuple((t.data_ptr(), t._version) for t in tensors)
    cache = _PREPARED.setdefault(model, {})
    hit = cache.get((dtype, fold_bn))
    if stamp is not None and hit is not None and hit[0] == stamp:
        return hit[1]
    net = fold_batchnorm(model) if fold_bn else model
    if dtype is not None:
        net = weights_in(net, dtype)
    if stamp is not None and net is not model:  # never the model as its own value: the weak key would be held
        cache[(dtype, fold_bn)] = (stamp, net)
    return net


def _conv_bn_pairs(model: torch.nn.Module) -> list[tuple[str, str, str]]:
    """``(parent, conv, bn)`` module names of every BatchNorm2d that normalises a Conv2d's output and
    nothing else: the stems of STCN's encoders and the blocks of torchvision's ResNets, whose
    ``forward`` is known to apply ``bnX(convX(.))`` (a downsample is ``Sequential(conv, bn)``)."""
    pairs = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, (KeyEncoder, ValueEncoder)):
            pairs.append((name, "conv1", "bn1"))
        elif isinstance(module, (BasicBlock, Bottleneck)):
            pairs += [(name, f"conv{i}", f"bn{i}") for i in range(1, 4 if isinstance(module, Bottleneck) else 3)]
            down = module.downsample
            if (isinstance(down, torch.nn.Sequential) and len(down) == 2 and isinstance(down[0], torch.nn.Conv2d)
                    and isinstance(down[1], torch.nn.BatchNorm2d)):
                pairs.append((f"{prefix}downsample", "0", "1"))
    return [(parent, conv, bn) for parent, conv, bn in pairs
            if type(model.get_submodule(parent).get_submodule(bn)) is torch.nn.BatchNorm2d]


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` (eval mode) in which every BatchNorm2d right after a convolution in the
    encoders (:func:`_conv_bn_pairs`) is folded into it: ``conv'(x) = bn(conv(x))`` with the running
    statistics, the BatchNorm replaced by Identity. Every other parameter and buffer is shared with
    ``model``; ``model`` itself is unchanged (its state dict keeps its names). Returns ``model`` itself
    when nothing folds.

    Why: in inference BatchNorm is an affine map per channel, but run as a module it is one more pass
    over every activation of the encoders (the key encoder's ResNet-50 has 43). Folded, the outputs
    differ by float rounding only (the weights are rescaled once); measured ~1.1-1.3x on the key encoder
    on CPU (docs/performance.md).
    """
    import copy

    model.eval()
    pairs = _conv_bn_pairs(model)
    if not pairs:
        return model
    folded = {id(model.get_submodule(p).get_submodule(m)) for p, c, b in pairs for m in (c, b)}
    memo: dict[int, object] = {}
    for module in model.modules():
        if id(module) in folded:
            continue
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            memo[id(tensor)] = tensor
        if "_split_cache" in module.__dict__:
            memo[id(module.__dict__["_split_cache"])] = {}
    out = copy.deepcopy(model, memo).eval()
    for parent_name, conv_name, bn_name in pairs:
        parent = out.get_submodule(parent_name)
        conv = fuse_conv_bn_eval(parent.get_submodule(conv_name), parent.get_submodule(bn_name))
        conv.weight.requires_grad_(False)
        conv.bias.requires_grad_(False)
        setattr(parent, conv_name, conv)
        setattr(parent, bn_name, torch.nn.Identity())
    return out


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


def lowered_weight_bytes(model: torch.nn.Module | None, precision: str, *, fold: bool = True) -> int:
    """Bytes of the weights that :class:`FrameStep`'s copy of ``model`` at ``precision`` holds on top of
    ``model``'s: the folded convolutions (weights and biases, float32) in fp32; in bf16 / fp16 every
    ``Conv2d`` / ``Linear`` weight and bias in that dtype (biases the folding adds included)."""
    if model is None:
        return 0
    dtype = autocast_dtype(resolve_precision(precision, next(model.parameters()).device))
    pairs = _conv_bn_pairs(model) if fold else []
    folded = [model.get_submodule(p).get_submodule(c) for p, c, _ in pairs]
    if dtype is None:
        return sum((conv.weight.numel() + conv.out_channels) * 4 for conv in folded)
    size = torch.empty((), dtype=dtype).element_size()
    added_biases = sum(conv.out_channels for conv in folded if conv.bias is None)
    return size * (added_biases + sum(p.numel() for m in model.modules() if isinstance(m, _LOWERED)
                                      for p in m.parameters(recurse=False)))


class _Compiled:
    """The network's per-frame parts through ``torch.compile`` (shapes are static within a video)."""

    def __init__(self, model: STCN, backend: str = "inductor") -> None:
        self.model = model
        for name in ("encode_key", "query_features", "decode_objects", "encode_object_values_split"):
            setattr(self, name, torch.compile(getattr(model, name), dynamic=False, backend=backend))
