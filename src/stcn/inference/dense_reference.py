"""The original STCN's dense inference computation: the fast engine's test oracle and the benchmark's
baseline.

:class:`DenseReferenceCore` follows exactly the rules of :class:`~stcn.inference.InferenceCore`
(which frames are memory, masks on any frame, skipping, ``include_last``) but computes every frame
the way the original code does:

* objects whose values sit in the same memory frames share one bank and one affinity, as in the
  original's DAVIS path (``MemoryBank.match_memory``: "one affinity for all"); objects that first
  appear later have their own (its YouTube-VOS path keeps a bank per object);
* ``(-|mk|^2 + 2 mk^T qk) / sqrt(C)`` as an (N, M) matrix, the top-k softmax written into a dense
  (N, M) matrix (zeros elsewhere), and the read-out ``values (C_v, N) x matrix (N, M)`` per object;
* one decoder call per bank on ``cat(readout, f16_thin)`` with f16_thin repeated for every object and
  the skip convolutions of f8 and f4 on the query's batch-1 features, broadcast over the objects (the
  original's ``segment_with_query`` expands only the 1/16 features);
* the value encoder on ``cat(value features, key f16)`` for every object;
* contiguous (NCHW) tensors, no chunking.

Its cost grows with the memory as ``2 * C_v * N * M`` per object and frame (the dense read-out), and
its peak memory as ``N * M`` floats per object.
"""
from __future__ import annotations

import torch

from stcn.inference.inference_core import InferenceCore
from stcn.model.memory import Similarity, get_similarity, softmax
from stcn.model.network import KeyFeatures


def dense_read(mem_key: torch.Tensor, mem_value: torch.Tensor, query_key: torch.Tensor, top_k: int,
               similarity: Similarity = "l2") -> torch.Tensor:
    """The original's read for one object: mem_key (1, C_k, N), mem_value (1, C_v, N), query_key
    (1, C_k, M) -> (1, C_v, M) through the dense (N, M) top-k matrix."""
    return torch.bmm(mem_value, dense_topk_weights(get_similarity(mem_key, query_key, similarity), top_k))


def dense_topk_weights(sim: torch.Tensor, top_k: int) -> torch.Tensor:
    """The top-k softmax of a memory-major similarity (B, N, M) as the original writes it: a dense
    (B, N, M) matrix, zero outside each query's top k."""
    weights, indices = softmax(sim, top_k)
    return torch.zeros_like(sim).scatter_(1, indices, weights.to(sim.dtype))


class DenseReferenceCore(InferenceCore):
    """:class:`InferenceCore` with the original's dense computation (see the module docstring).
    Accepts the same arguments; ``channels_last`` defaults to off and ``precision`` to fp32 (the
    original's default; ``amp=True`` as its ``--amp``), ``max_memory_frames`` works too."""

    def __init__(self, model, **options) -> None:
        options.setdefault("channels_last", False)
        options.setdefault("precision", "fp32")
        if options.get("compile"):
            raise ValueError("the dense reference does not compile")
        super().__init__(model, **options)
        self._banks: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _encode_values(self, image: torch.Tensor, f16: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model.encode_object_values(image, f16, probs).float()

    def _banks_of_objects(self) -> list[tuple[list[int], torch.Tensor, torch.Tensor]]:
        """[(object ids, keys (1, C_k, N), values (K, C_v, N))], one per distinct set of memory entries
        holding values of the objects, concatenated once per memory change (as the original does on add)."""
        groups: dict[tuple, list[int]] = {}
        for oid in self.object_ids:
            stamp = tuple(e.order for e in self.memory.entries if oid in e.values)
            groups.setdefault(stamp, []).append(oid)
        banks, kept = [], {}
        for stamp, oids in groups.items():
            key = (stamp, tuple(oids))
            cached = self._banks.get(key)
            if cached is None:
                entries = [e for e in self.memory.entries if e.order in stamp]  # stamp: their orders
                keys = torch.cat([e.key for e in entries], dim=2).contiguous()
                values = torch.stack([torch.cat([e.values[o] for e in entries], dim=1) for o in oids]).contiguous()
                cached = (keys, values)
            kept[key] = cached
            banks.append((oids, *cached))
        self._banks = kept  # banks of an older memory are dropped
        return banks

    def _propagate(self, feats: KeyFeatures) -> torch.Tensor:
        query = feats.key.float().flatten(2).contiguous()
        h, w = feats.key.shape[-2:]
        probs = {}
        for oids, keys, values in self._banks_of_objects():
            weights = dense_topk_weights(get_similarity(keys, query, self.memory.similarity), self.memory.top_k)
            readout = torch.bmm(values, weights.expand(len(oids), -1, -1)).view(len(oids), -1, h, w)
            f16_thin = feats.f16_thin.expand(len(oids), -1, -1, -1)
            with self._autocast():
                logits = self.model.decoder(readout, f16_thin, feats.f8, feats.f4)
            for oid, p in zip(oids, torch.sigmoid(logits.float())):
                probs[oid] = p
        return torch.stack([probs[oid] for oid in self.object_ids])
