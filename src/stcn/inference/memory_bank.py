"""The key-value memory of the inference engine: one key bank shared by all objects.

Keys depend on the image only, so they are stored once per memory frame; values are stored per
object. An object that first appeared at frame t has no value in earlier memory frames: it is marked
invalid there, and reads take its top-k over its own frames only (identical to a separate bank per
object, as the original's YouTube-VOS path keeps, without recomputing the affinity per object).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from stcn.model.memory import Similarity, read_memory


@dataclass
class _Entry:
    frame: int
    key: torch.Tensor  # (1, C_k, h*w)
    values: dict[int, torch.Tensor]  # object id -> (C_v, h*w)
    temporary: bool = False
    usage: float = 0.0


@dataclass
class MemoryBank:
    """Memory frames in insertion order, plus at most one temporary entry (``include_last``)."""

    top_k: int | None = 20
    similarity: Similarity = "l2"
    query_chunk: int | None = None
    entries: list[_Entry] = field(default_factory=list)
    _cache: tuple | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def frames(self) -> list[int]:
        return [e.frame for e in self.entries]

    def add(self, frame: int, key: torch.Tensor, values: dict[int, torch.Tensor], *, temporary: bool = False) -> None:
        """Add a memory frame: key (1, C_k, h, w) or (1, C_k, h*w); values: object id -> (C_v, h, w).

        Any temporary entry is dropped first (the original's "last frame" slot)."""
        self.entries = [e for e in self.entries if not e.temporary]
        flat = {oid: v.reshape(v.shape[0], -1) for oid, v in values.items()}
        self.entries.append(_Entry(frame, key.reshape(1, key.shape[1], -1), flat, temporary))
        self._cache = None

    def remove(self, index: int) -> None:
        del self.entries[index]
        self._cache = None

    def _tensors(self, object_ids: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._cache is not None and self._cache[0] == object_ids:
            return self._cache[1:]
        keys = torch.cat([e.key for e in self.entries], dim=2)
        ref = self.entries[0].key
        hw = [e.key.shape[2] for e in self.entries]
        values, valid = [], []
        for oid in object_ids:
            per_frame, ok = [], []
            for e, n in zip(self.entries, hw):
                v = e.values.get(oid)
                per_frame.append(v if v is not None else ref.new_zeros(self._value_dim(), n))
                ok.append(torch.full((n,), v is not None, dtype=torch.bool, device=ref.device))
            values.append(torch.cat(per_frame, dim=1))
            valid.append(torch.cat(ok))
        value_t = torch.stack(values)
        valid_t = torch.stack(valid)
        valid_out = None if bool(valid_t.all()) else valid_t
        self._cache = (object_ids, keys, value_t, valid_out)
        return keys, value_t, valid_out

    def _value_dim(self) -> int:
        for e in self.entries:
            for v in e.values.values():
                return v.shape[0]
        raise RuntimeError("memory holds no values")

    def read(self, query_key: torch.Tensor, object_ids: tuple[int, ...]) -> torch.Tensor:
        """Read-out for the given objects: query_key (1, C_k, h, w) -> (O, C_v, h, w)."""
        keys, values, valid = self._tensors(object_ids)
        h, w = query_key.shape[-2:]
        out = read_memory(
            keys, values, query_key.flatten(2), top_k=self.top_k, similarity=self.similarity,
            valid=valid, query_chunk=self.query_chunk,
        )
        return out.view(len(object_ids), -1, h, w)
