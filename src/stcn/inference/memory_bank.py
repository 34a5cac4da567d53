"""The key-value memory of the inference engine: one key bank shared by all objects.

Keys depend on the image only, so they are stored once per memory frame; values are stored per
object. An object that first appeared at frame t has no value in earlier memory frames: it is marked
invalid there, and reads take its top-k over its own frames only (identical to a separate bank per
object, as the original's YouTube-VOS path keeps, without recomputing the affinity per object).

Storage. Entries live in slots of preallocated tensors: keys (1, C_k, S*hw) (a view of position-major
(S*hw, C_k) memory), their squared norms,
and values **position-major** (objects, S*hw, C_v), so that a top-k read gathers contiguous rows of
C_v floats (:func:`stcn.model.memory.read_memory_pm`). Adding a frame writes one slot: nothing is
concatenated per frame. Unbounded, the slot capacity doubles when full (amortised copies); bounded
(``max_frames``), the capacity is fixed at ``max_frames`` + 1 (the ``include_last`` slot) and an
evicted frame's slot is overwritten in place, so the bank's memory never grows after it fills.
``entries[i]`` is slot ``i``; its ``key`` and ``values`` are views into the storage.

Bounded memory. With ``max_frames`` set, adding a permanent frame to a full bank first evicts one
unpinned permanent frame (the engine pins the first annotated frame):

* ``"oldest"``: the earliest-added frame;
* ``"least_used"``: the frame whose positions received the least top-k weight per read since it
  was added (usage is summed over the query positions of every read; a frame not yet read is never
  evicted; ties go to the oldest).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from stcn.model.memory import DEFAULT_READ_BUDGET, Similarity, auto_query_chunk, read_memory, read_memory_pm
from stcn.model.topk_read import DEFAULT_BLOCK as BLOCK
from stcn.model.topk_read import DEFAULT_QUERY_BLOCK as QUERY_BLOCK
from stcn.model.topk_read import read_memory_blocked

Policy = Literal["least_used", "oldest"]
POLICIES: tuple[str, ...] = ("least_used", "oldest")


def _key_storage(like: torch.Tensor, channels: int, positions: int) -> torch.Tensor:
    """Zeroed key storage (1, C_k, N), a view of position-major (N, C_k) memory: the GEMMs read it as a
    transposed matrix at the same speed, and the grouped search gathers whole keys as rows of it."""
    return like.new_zeros(positions, channels).t().unsqueeze(0)


@dataclass(eq=False)
class _Entry:
    frame: int
    key: torch.Tensor  # (1, C_k, h*w)
    values: dict[int, torch.Tensor]  # object id -> (C_v, h*w)
    temporary: bool = False
    usage: float = 0.0  # top-k weight received over all reads since added
    reads: int = 0
    pinned: bool = False
    order: int = field(default=0, repr=False)  # insertion counter

    @property
    def mean_usage(self) -> float:
        return self.usage / self.reads if self.reads else math.inf


class MemoryBank:
    """Memory frames, plus at most one temporary entry (``include_last``), always the last slot.

    Args:
        top_k: affinities kept per query position.
        similarity: ``"l2"`` or ``"dot"``.
        query_chunk: query positions per read chunk; None chooses it from ``read_budget``.
        max_frames: bound on the permanent entries (None: unbounded, the paper).
        policy: ``"least_used"`` or ``"oldest"`` (which frame a full bank evicts).
        read_budget: bytes of affinity per read chunk (default 64 MiB); bounds a read's peak memory.
        blocked_read: read through :func:`stcn.model.topk_read.read_memory_blocked` (same output; its
            1.2-1.4x faster than the one-GEMM read at 480p, benchmarks/RESULTS.md; False: the one-GEMM read).
    """

    def __init__(
        self,
        top_k: int | None = 20,
        similarity: Similarity = "l2",
        query_chunk: int | None = None,
        *,
        max_frames: int | None = None,
        policy: Policy = "least_used",
        read_budget: int | None = None,
        blocked_read: bool = True,
    ) -> None:
        if max_frames is not None and max_frames < 1:
            raise ValueError("max_frames must be >= 1 (or None for unbounded memory)")
        if policy not in POLICIES:
            raise ValueError(f"unknown memory policy {policy!r} (expected one of {', '.join(POLICIES)})")
        self.top_k = top_k
        self.similarity = similarity
        self.query_chunk = query_chunk
        self.max_frames = max_frames
        self.policy = policy
        self.read_budget = DEFAULT_READ_BUDGET if read_budget is None else int(read_budget)
        self.blocked_read = blocked_read
        self._entries: list[_Entry] = []
        self._counter = 0
        self.evicted: list[int] = []  # frames evicted so far, in order
        self._reset_storage()

    # ---- storage ----------------------------------------------------------------------------------
    def _reset_storage(self) -> None:
        self._keys: torch.Tensor | None = None  # (1, C_k, S*hw)
        self._sq: torch.Tensor | None = None  # (1, S*hw) squared key norms
        self._values: torch.Tensor | None = None  # (R, S*hw, C_v)
        self._valid: torch.Tensor | None = None  # (R, S*hw) bool
        self._rows: dict[int, int] = {}
        self._hw = 0
        self._capacity = 0
        self._workspace: torch.Tensor | None = None
        self._synced = True

    @property
    def entries(self) -> list[_Entry]:
        return self._entries

    @entries.setter
    def entries(self, entries: list[_Entry]) -> None:
        # Callers may hand over another bank's entries; the storage is rebuilt from them when next used
        # (copying, so the other bank's entries and storage are left alone).
        self._entries = list(entries)
        self._synced = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def frames(self) -> list[int]:
        """Frames of the entries in slot order (insertion order until a bounded bank evicts)."""
        return [e.frame for e in self._entries]

    @property
    def permanent(self) -> int:
        return sum(not e.temporary for e in self._entries)

    def nbytes(self) -> int:
        """Bytes held by the storage (allocated capacity, workspace included)."""
        return sum(t.numel() * t.element_size() for t in (self._keys, self._sq, self._values, self._valid,
                                                          self._workspace) if t is not None)

    def _sync(self) -> None:
        if self._synced:
            return
        old = self._entries
        self._entries = []
        self._reset_storage()
        for e in old:
            slot = self._new_slot()
            self._write(slot, e.frame, e.key, e.values, temporary=e.temporary, pinned=e.pinned,
                        usage=e.usage, reads=e.reads, order=e.order)

    def _allocate(self, capacity: int, key: torch.Tensor, value: torch.Tensor, rows: int) -> None:
        """(Re)allocate storage for ``capacity`` slots and ``rows`` objects, keeping what is stored."""
        hw, ck, cv = self._hw, key.shape[1], value.shape[0]
        n = capacity * hw
        keys = _key_storage(key, ck, n)
        sq = key.new_zeros(1, n)
        values = value.new_zeros(rows, n, cv)
        valid = torch.zeros(rows, n, dtype=torch.bool, device=key.device)
        if self._keys is not None:
            used = len(self._entries) * hw
            old_rows = self._values.shape[0]
            keys[:, :, :used] = self._keys[:, :, :used]
            sq[:, :used] = self._sq[:, :used]
            values[:old_rows, :used] = self._values[:, :used]
            valid[:old_rows, :used] = self._valid[:, :used]
        self._keys, self._sq, self._values, self._valid = keys, sq, values, valid
        self._capacity = capacity
        for slot, e in enumerate(self._entries):  # re-point the entries' views
            self._point(slot, e)

    def _point(self, slot: int, e: _Entry) -> None:
        s = slice(slot * self._hw, (slot + 1) * self._hw)
        e.key = self._keys[:, :, s]
        e.values = {oid: self._values[row, s].t() for oid, row in self._rows.items() if bool(self._valid[row, s][0])}

    def _new_slot(self) -> int:
        return len(self._entries)

    def _write(self, slot: int, frame: int, key: torch.Tensor, values: dict[int, torch.Tensor], *,
               temporary: bool, pinned: bool, usage: float = 0.0, reads: int = 0,
               order: int | None = None) -> _Entry:
        key = key.reshape(1, key.shape[1], -1)
        flat = {oid: v.reshape(v.shape[0], -1) for oid, v in values.items()}
        if not flat:
            raise ValueError("a memory frame needs the value of at least one object")
        hw = key.shape[2]
        if self._keys is None:
            self._hw = hw
        elif hw != self._hw:
            raise ValueError(f"memory frames must share one size: {hw} positions, the bank holds {self._hw}")
        new_rows = [oid for oid in flat if oid not in self._rows]
        sample = next(iter(flat.values()))
        rows = len(self._rows) + len(new_rows)
        if self._keys is None or slot >= self._capacity or rows > self._values.shape[0]:
            capacity = self._capacity
            if slot >= capacity:
                capacity = self.max_frames + 1 if self.max_frames is not None else max(4, 2 * capacity)
                capacity = max(capacity, slot + 1)
            for oid in new_rows:
                self._rows[oid] = len(self._rows)
            self._allocate(capacity, key, sample, rows)
        else:
            for oid in new_rows:
                self._rows[oid] = len(self._rows)
        s = slice(slot * hw, (slot + 1) * hw)
        self._keys[:, :, s] = key
        self._sq[:, s] = key.pow(2).sum(1)
        self._valid[:, s] = False
        for oid, v in flat.items():
            row = self._rows[oid]
            self._values[row, s] = v.t()
            self._valid[row, s] = True
        self._counter = self._counter + 1 if order is None else max(self._counter, order)
        e = _Entry(frame, key, {}, temporary, usage, reads, pinned, self._counter if order is None else order)
        self._point(slot, e)
        if slot == len(self._entries):
            self._entries.append(e)
        else:
            self._entries[slot] = e
        return e

    # ---- public API --------------------------------------------------------------------------------
    def add(self, frame: int, key: torch.Tensor, values: dict[int, torch.Tensor], *, temporary: bool = False,
            pinned: bool = False) -> None:
        """Add a memory frame: key (1, C_k, h, w) or (1, C_k, h*w); values: object id -> (C_v, h, w).

        Any temporary entry is dropped first (the original's "last frame" slot). A bounded bank that
        is full evicts one unpinned permanent entry (see the module docstring) and reuses its slot."""
        self._sync()
        if self._entries and self._entries[-1].temporary:
            self._entries.pop()
        slot = self._new_slot()
        if not temporary and self.max_frames is not None and self.permanent >= self.max_frames:
            slot = self._victim()
            self.evicted.append(self._entries[slot].frame)
        self._write(slot, frame, key, values, temporary=temporary, pinned=pinned)

    def _victim(self) -> int:
        candidates = [i for i, e in enumerate(self._entries) if not e.temporary and not e.pinned]
        if not candidates:
            raise RuntimeError("bounded memory is full of pinned frames: raise max_frames")
        if self.policy == "oldest":
            return min(candidates, key=lambda i: self._entries[i].order)
        return min(candidates, key=lambda i: (self._entries[i].mean_usage, self._entries[i].order))

    def remove(self, index: int) -> None:
        """Remove the entry in slot ``index`` (later slots move down one)."""
        del self._entries[index]
        self._synced = False
        old = [(e, e.key.clone(), {oid: v.clone() for oid, v in e.values.items()}) for e in self._entries]
        for e, k, v in old:
            e.key, e.values = k, v
        self._sync()

    # ---- saving and restoring -------------------------------------------------------------------
    def state_dict(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """``(meta, tensors)``: JSON-able settings and bookkeeping, and the used part of the storage
        (``keys`` (1, C_k, N), ``sq`` (1, N), ``values`` (R, N, C_v), ``valid`` (R, N) for the N = slots x
        positions in use), copied to the CPU. :meth:`load_state_dict` restores the same slots, rows and
        usage, so reads after it are bit-identical to reads of this bank."""
        self._sync()
        meta = {
            "top_k": self.top_k, "similarity": self.similarity, "query_chunk": self.query_chunk,
            "max_frames": self.max_frames, "policy": self.policy, "read_budget": self.read_budget,
            "blocked_read": self.blocked_read, "counter": self._counter, "evicted": list(self.evicted),
            "hw": self._hw, "capacity": self._capacity, "rows": [[oid, row] for oid, row in self._rows.items()],
            # usage is a float64 sum: JSON's repr of a float round-trips it exactly
            "entries": [{"frame": e.frame, "temporary": e.temporary, "usage": e.usage, "reads": e.reads,
                         "pinned": e.pinned, "order": e.order} for e in self._entries],
        }
        tensors = {}
        if self._keys is not None:
            used = len(self._entries) * self._hw
            tensors = {"keys": self._keys[:, :, :used], "sq": self._sq[:, :used], "values": self._values[:, :used],
                       "valid": self._valid[:, :used]}
            tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
        return meta, tensors

    def load_state_dict(self, meta: dict, tensors: dict[str, torch.Tensor], device: torch.device | str = "cpu") -> None:
        """Restore what :meth:`state_dict` returned (storage on ``device``). Raises ValueError when the
        bank's settings differ from the saved ones."""
        settings = ("top_k", "similarity", "query_chunk", "max_frames", "policy", "read_budget", "blocked_read")
        differ = [f"{k} {meta[k]!r} != {getattr(self, k)!r}" for k in settings if meta[k] != getattr(self, k)]
        if differ:
            raise ValueError("the saved memory has other settings: " + ", ".join(differ))
        self._entries = []
        self._reset_storage()
        self._counter = int(meta["counter"])
        self.evicted = [int(f) for f in meta["evicted"]]
        if not meta["entries"]:
            return
        self._hw, self._capacity = int(meta["hw"]), int(meta["capacity"])
        self._rows = {int(oid): int(row) for oid, row in meta["rows"]}
        keys, values = tensors["keys"].to(device), tensors["values"].to(device)
        n = self._capacity * self._hw
        used = keys.shape[2]
        # the same capacity as the saved bank: slot reuse and growth then continue exactly as they would have
        self._keys = _key_storage(keys, keys.shape[1], n)
        self._sq = keys.new_zeros(1, n)
        self._values = values.new_zeros(values.shape[0], n, values.shape[2])
        self._valid = torch.zeros(values.shape[0], n, dtype=torch.bool, device=keys.device)
        self._keys[:, :, :used] = keys
        self._sq[:, :used] = tensors["sq"].to(device)
        self._values[:, :used] = values
        self._valid[:, :used] = tensors["valid"].to(device)
        for slot, m in enumerate(meta["entries"]):
            e = _Entry(int(m["frame"]), self._keys, {}, bool(m["temporary"]), float(m["usage"]), int(m["reads"]),
                       bool(m["pinned"]), int(m["order"]))
            self._point(slot, e)
            self._entries.append(e)

    def _workspace_for(self, elements: int, like: torch.Tensor) -> torch.Tensor:
        ws = self._workspace
        if ws is None or ws.numel() < elements or ws.device != like.device or ws.dtype != like.dtype:
            ws = self._workspace = like.new_empty(elements)
        return ws

    def read(self, query_key: torch.Tensor, object_ids: tuple[int, ...]) -> torch.Tensor:
        """Read-out for the given objects: query_key (1, C_k, h, w) -> (O, C_v, h, w), channels-last.

        The memory is read in chunks of query positions (``query_chunk``, or as many as fit
        ``read_budget``), so the peak memory of a read is bounded at any resolution."""
        self._sync()
        if not self._entries:
            raise RuntimeError("the memory is empty")
        used = len(self._entries) * self._hw
        rows = [self._rows[oid] for oid in object_ids]
        if rows == list(range(self._values.shape[0])):
            values, valid = self._values[:, :used], self._valid[:, :used]
        else:
            index = torch.tensor(rows, device=self._values.device)
            values, valid = self._values[index, :used], self._valid[index, :used]
        if bool(valid.all()):
            valid = None
        h, w = query_key.shape[-2:]
        query = query_key.reshape(1, query_key.shape[1], -1).to(self._keys.dtype)
        m = query.shape[2]
        if self.top_k is None:  # full softmax (training's read): the original's form
            out = read_memory(self._keys[:, :, :used], values.transpose(1, 2), query, top_k=None,
                              similarity=self.similarity, valid=valid, query_chunk=self.query_chunk)
            return out.view(len(object_ids), -1, h, w)
        copies = 1 + (len(object_ids) if valid is not None else 0)
        usage = None
        if self.max_frames is not None and self.policy == "least_used":
            usage = torch.zeros(len(self._entries), dtype=torch.float64, device=query.device)
        mem_sq = self._sq[:, :used] if self.similarity == "l2" else None
        if self.blocked_read:
            # a cache-sized block of query x memory positions at a time (stcn.model.topk_read)
            block = min(BLOCK, used)
            chunk = min(self.query_chunk or auto_query_chunk(block, m, copies, self.read_budget), m, QUERY_BLOCK)
            out = read_memory_blocked(
                self._keys[:, :, :used], values, query, top_k=self.top_k, similarity=self.similarity,
                valid=valid, mem_sq=mem_sq, usage=usage, slot_positions=self._hw, block=block,
                query_block=chunk, workspace=self._workspace_for(chunk * block, query),
                keys_pm=self._keys[0, :, :used].t(),
            )
        else:
            chunk = min(self.query_chunk or auto_query_chunk(used, m, copies, self.read_budget), m)
            out = read_memory_pm(
                self._keys[:, :, :used], values, query, top_k=self.top_k, similarity=self.similarity,
                valid=valid, query_chunk=chunk, mem_sq=mem_sq, usage=usage, slot_positions=self._hw,
                workspace=self._workspace_for(copies * chunk * used, query),
            )
        if usage is not None:
            for e, u in zip(self._entries, usage.tolist()):
                e.usage += u
                e.reads += 1
        return out.view(len(object_ids), h, w, -1).permute(0, 3, 1, 2)
