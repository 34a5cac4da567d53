"""The original STCN's dense inference computation: the fast engine's test oracle and the benchmark's
baseline.

:class:`DenseReferenceCore` follows exactly the rules of :class:`~stcn.inference.InferenceCore`
(which frames are memory, masks on any frame, skipping, ``include_last``) but computes every frame
the way the original code does:

* one bank per object (the original's YouTube-VOS path): keys and values of the memory frames where
  the object has a value, concatenated, recomputing the affinity for every object;
* ``(-|mk|^2 + 2 mk^T qk) / sqrt(C)`` as an (N, M) matrix, the top-k softmax written into a dense
  (N, M) matrix (zeros elsewhere), and the read-out ``values (C_v, N) x matrix (N, M)``;
* the decoder on ``cat(readout, f16_thin)`` with the query's features repeated for every object;
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
    Accepts the same arguments; ``channels_last`` defaults to off, ``max_memory_frames`` works too."""

    def __init__(self, model, **options) -> None:
        options.setdefault("channels_last", False)
        if options.get("compile"):
            raise ValueError("the dense reference does not compile")
        super().__init__(model, **options)
        self._banks: dict[int, tuple] = {}

    def _encode_values(self, image: torch.Tensor, f16: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model.encode_object_values(image, f16, probs).float()

    def _object_bank(self, oid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The object's own bank, concatenated once per memory change (as the original does on add)."""
        entries = [e for e in self.memory.entries if oid in e.values]
        stamp = tuple(e.order for e in entries)
        cached = self._banks.get(oid)
        if cached is None or cached[0] != stamp:
            keys = torch.cat([e.key for e in entries], dim=2).contiguous()
            values = torch.cat([e.values[oid] for e in entries], dim=1)[None].contiguous()
            cached = self._banks[oid] = (stamp, keys, values)
        return cached[1], cached[2]

    def _propagate(self, feats: KeyFeatures) -> torch.Tensor:
        query = feats.key.float().flatten(2).contiguous()
        h, w = feats.key.shape[-2:]
        readouts = []
        for oid in self.object_ids:
            keys, values = self._object_bank(oid)
            readouts.append(dense_read(keys, values, query, self.memory.top_k, self.memory.similarity))
        readout = torch.cat(readouts).view(len(self.object_ids), -1, h, w)
        with self._autocast():
            logits = self.model.decode(readout, feats.f16_thin, feats.f8, feats.f4)
        return torch.sigmoid(logits.float())
