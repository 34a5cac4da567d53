"""A local DAVIS-interactive session (davisinteractive 1.0.4's ``DavisInteractiveSession`` with its
local evaluation service), rebuilt from its description; no code of the package.

Dataset layout (DAVIS 2017; ROOT may also be the folder holding ``trainval/``)::

    ROOT/ImageSets/2017/<split>.txt        sequence names
    ROOT/JPEGImages/480p/<seq>/*.jpg       frames
    ROOT/Annotations/480p/<seq>/*.png      ground truth of every frame (ids 1..K, K = frame 0's max id)
    ROOT/Scribbles/<seq>/NNN.json          the initial ("human") scribbles, one sample each

Protocol (:class:`LocalDavisServer`): samples = (sequence, scribble index) pairs in list order. ``next()``
moves to the next sample once the current one has ``max_interactions`` submissions or has run longer
than ``max_time * K`` seconds (wall clock since the sample started); ``get_scribbles`` returns the
sample's human scribble first, then the robot's latest (``only_last=True``) or every scribble so far
merged frame by frame, and starts the interaction clock; ``submit_masks`` stops it (timing = model
time), discards the submission when the sample is already over its time, else scores J and F on every
frame and object, appends the report rows, picks the next frame (:func:`~stcn.interactive.protocol.
next_frame`, the human-scribbled frame does not count as annotated) and asks the robot for the next
scribble. The robot and the scoring run after the clock stopped but count against the sample's time.
"""
from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stcn.errors import DataError
from stcn.eval.datasets import resolve_davis_root, video_frames
from stcn.interactive.protocol import (
    REPORT_COLUMNS,
    batched_scores,
    frame_metric,
    next_frame,
    summarize_report,
)
from stcn.interactive.robot import ScribbleRobot
from stcn.io.frames import read_rgb
from stcn.io.masks import read_label_png

__all__ = ["MAX_INTERACTIONS", "MAX_TIME", "DavisInteractiveData", "DavisSequence", "LocalDavisServer",
           "validate_scribble"]

MAX_TIME = 600  # seconds per object: the benchmark clips max_time to this
MAX_INTERACTIONS = 16  # and the number of interactions to this


def validate_scribble(scribble, num_frames: int, num_objects: int, where: str) -> dict:
    """Check a benchmark scribble dict; DataError naming ``where`` and the problem. Returns it."""
    if not isinstance(scribble, dict) or not isinstance(scribble.get("scribbles"), list):
        raise DataError(f"{where}: not a scribble (a JSON object with a 'scribbles' list per frame)")
    frames = scribble["scribbles"]
    if len(frames) != num_frames:
        raise DataError(f"{where}: {len(frames)} frames of scribbles but the sequence has {num_frames}")
    count = 0
    for t, paths in enumerate(frames):
        if not isinstance(paths, list):
            raise DataError(f"{where}: frame {t}: expected a list of paths")
        for i, p in enumerate(paths):
            if not isinstance(p, dict) or "path" not in p or "object_id" not in p:
                raise DataError(f"{where}: frame {t} path {i}: needs 'path' and 'object_id'")
            oid = p["object_id"]
            if isinstance(oid, bool) or not isinstance(oid, int) or not 0 <= oid <= num_objects:
                raise DataError(f"{where}: frame {t} path {i}: object id {oid!r} is not 0 (background) "
                                f"or an object of the sequence (1..{num_objects})")
            try:
                xy = np.asarray(p["path"], dtype=np.float64)
            except (TypeError, ValueError):
                raise DataError(f"{where}: frame {t} path {i}: points must be [x, y] numbers") from None
            if xy.size == 0:
                raise DataError(f"{where}: frame {t} path {i}: empty stroke")
            if xy.ndim != 2 or xy.shape[1] != 2:
                raise DataError(f"{where}: frame {t} path {i}: points must be [x, y] pairs")
            if not np.isfinite(xy).all() or xy.min() < 0 or xy.max() > 1:
                raise DataError(f"{where}: frame {t} path {i}: points outside the frame (coordinates are "
                                "normalised to [0, 1])")
            count += 1
    if count == 0:
        raise DataError(f"{where}: holds no path")
    return scribble


@dataclass(frozen=True)
class DavisSequence:
    """One sequence of the set: its frame files, annotations and scribble files {index: path}."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]
    scribbles: dict[int, Path]
    num_objects: int

    @property
    def num_frames(self) -> int:
        return len(self.frames)


class DavisInteractiveData:
    """The sequences of ``ImageSets/<year>/<split>.txt`` with their annotations and scribbles, checked
    up front (DataError naming the first problem). ``sequences`` limits the set to those names."""

    def __init__(self, root: str | Path, *, year: str = "2017", split: str = "val",
                 sequences: Sequence[str] | None = None) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"DAVIS root {root} not found")
        base = resolve_davis_root(root, year, split)
        listing = base / "ImageSets" / str(year) / f"{split}.txt"
        names = [n.strip() for n in listing.read_text().splitlines() if n.strip()]
        if sequences is not None:
            unknown = [s for s in sequences if s not in names]
            if unknown:
                raise DataError(f"sequence {unknown[0]!r} is not in {listing}")
            names = [n for n in names if n in set(sequences)]
        if not names:
            raise DataError(f"sequence list {listing} names no sequence")
        self.root = base
        self.sequences: dict[str, DavisSequence] = {n: self._sequence(base, n) for n in names}

    @staticmethod
    def _sequence(base: Path, name: str) -> DavisSequence:
        frames = video_frames(base / "JPEGImages" / "480p" / name, f"{name}: frame folder")
        ann_dir = base / "Annotations" / "480p" / name
        annotations = tuple(ann_dir / (f.stem + ".png") for f in frames)
        missing = [a for a in annotations if not a.is_file()]
        if missing:
            raise DataError(f"{name}: annotation {missing[0]} not found (every frame needs its ground truth)")
        scribble_dir = base / "Scribbles" / name
        if not scribble_dir.is_dir():
            raise DataError(f"{name}: scribble folder {scribble_dir} not found (DAVIS-interactive needs "
                            "Scribbles/<seq>/NNN.json)")
        scribbles = {}
        for p in sorted(scribble_dir.glob("*.json")):
            if p.stem.isdigit():
                scribbles[int(p.stem)] = p
        if not scribbles:
            raise DataError(f"{name}: no scribble file (NNN.json) in {scribble_dir}")
        first = _read_labels_png(annotations[0])
        with Image.open(frames[0]) as im:
            size = (im.height, im.width)
        if first.shape != size:
            raise DataError(f"{name}: annotation {annotations[0]} is {first.shape[1]}x{first.shape[0]} "
                            f"but the frames are {size[1]}x{size[0]}")
        num_objects = int(first.max())
        if num_objects == 0:
            raise DataError(f"{name}: the first frame's annotation {annotations[0]} holds no object")
        seq = DavisSequence(name, tuple(frames), annotations, scribbles, num_objects)
        for path in scribbles.values():
            validate_scribble(_read_json(path), seq.num_frames, num_objects, str(path))
        return seq

    @property
    def samples(self) -> list[tuple[str, int]]:
        return [(n, i) for n, s in self.sequences.items() for i in sorted(s.scribbles)]

    @property
    def avg_num_objects(self) -> float:
        return float(np.mean([s.num_objects for s in self.sequences.values()]))

    def scribble(self, name: str, idx: int) -> dict:
        return _read_json(self.sequences[name].scribbles[idx])

    def frames(self, name: str) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB frames."""
        return np.stack([read_rgb(p) for p in self.sequences[name].frames])

    def annotations(self, name: str) -> np.ndarray:
        """(T, H, W) uint8 ground-truth label maps."""
        seq = self.sequences[name]
        labels = [_read_labels_png(p) for p in seq.annotations]
        if any(a.shape != labels[0].shape for a in labels):
            raise DataError(f"{name}: annotations differ in size")
        return np.stack(labels)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read scribble {path}: {exc}") from None


def _read_labels_png(path: Path) -> np.ndarray:
    return read_label_png(path, "annotation")[0]


def merge_scribbles(scribbles: Sequence[dict]) -> dict:
    """Several scribble dicts of one sequence -> one dict with the paths merged frame by frame."""
    frames = [[] for _ in scribbles[0]["scribbles"]]
    for s in scribbles:
        for t, paths in enumerate(s["scribbles"]):
            frames[t].extend(paths)
    return {"scribbles": frames, "sequence": scribbles[0].get("sequence")}


class LocalDavisServer:
    """The benchmark loop over a :class:`DavisInteractiveData`::

        session = LocalDavisServer(data, max_time=240, max_interactions=8)
        while session.next():
            seq, scribble, new_sequence = session.get_scribbles(only_last=True)
            session.submit_masks(pred, next_candidates)      # pred (T, H, W) label maps
        rows, summary = session.report, session.summary()

    max_time: seconds per object for a sample (None: no limit; the summary needs it), clipped to 600;
    max_interactions clipped to 16. ``clock`` (seconds, monotonic) is replaceable for tests.
    """

    def __init__(self, data: DavisInteractiveData, *, max_time: float | None = None, max_interactions: int = 5,
                 metric: str = "J_AND_F", robot: Callable | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if metric not in ("J", "F", "J_AND_F"):
            raise ValueError(f"metric must be J, F or J_AND_F, not {metric}")
        self.data = data
        self.max_time = None if max_time is None else min(float(max_time), MAX_TIME)
        self.max_interactions = min(int(max_interactions), MAX_INTERACTIONS)
        self.metric = metric
        self.robot = robot if robot is not None else ScribbleRobot()
        self.clock = clock
        self.samples = data.samples
        self.report: list[dict] = []
        self.discarded = 0  # submissions that came after their sample's time was over
        self._idx = -1
        self._gt: tuple[str, np.ndarray] | None = None
        self._reset_sample()

    def _reset_sample(self) -> None:
        self.interaction = 0  # submissions accepted or not, in this sample
        self._scribbles: list[dict] = []
        self._annotated: list[int] = []
        self._sample_start = self.clock()
        self._interaction_start: float | None = None

    # ---- the current sample -------------------------------------------------------------------------
    @property
    def sample(self) -> tuple[str, int]:
        return self.samples[self._idx]

    @property
    def num_objects(self) -> int:
        return self.data.sequences[self.sample[0]].num_objects

    def _time_over(self) -> bool:
        return self.max_time is not None and self.clock() - self._sample_start > self.max_time * self.num_objects

    def next(self) -> bool:
        """Move on when the sample is done (all interactions, or out of time); False at the end."""
        if self._idx < 0 or self.interaction >= self.max_interactions or self._time_over():
            self._idx += 1
            self._reset_sample()
        return self._idx < len(self.samples)

    def ground_truth(self) -> np.ndarray:
        name = self.sample[0]
        if self._gt is None or self._gt[0] != name:
            self._gt = (name, self.data.annotations(name))
        return self._gt[1]

    def get_scribbles(self, only_last: bool = False) -> tuple[str, dict, bool]:
        """(sequence, scribble dict, new_sequence); starts the interaction clock."""
        if not 0 <= self._idx < len(self.samples):
            raise RuntimeError("call next() first")
        name, idx = self.sample
        new = not self._scribbles
        if new:
            self._scribbles.append(self.data.scribble(name, idx))
        scribble = self._scribbles[-1] if only_last else merge_scribbles(self._scribbles)
        self._interaction_start = self.clock()
        return name, scribble, new

    def submit_masks(self, pred_masks: np.ndarray, next_scribble_frame_candidates: Sequence[int] | None = None) -> bool:
        """Stop the clock, score, and ask the robot for the next scribble. Returns False when the
        submission was discarded (the sample ran out of time)."""
        if self._interaction_start is None:
            raise RuntimeError("call get_scribbles() before submit_masks()")
        timing = self.clock() - self._interaction_start
        self._interaction_start = None
        self.interaction += 1
        if self._time_over():
            warnings.warn(f"{self.sample[0]} #{self.sample[1]}: interaction {self.interaction} came after the "
                          f"sample's {self.max_time * self.num_objects:.0f} s: discarded", stacklevel=2)
            self.discarded += 1
            return False
        gt = self.ground_truth()
        pred = np.asarray(pred_masks)
        if pred.shape != gt.shape:
            raise ValueError(f"pred_masks is {pred.shape}, the sequence's annotations are {gt.shape}")
        jac, con = batched_scores(gt, pred, self.num_objects)
        name, idx = self.sample
        for t in range(len(gt)):
            for k in range(self.num_objects):
                self.report.append({"sequence": name, "scribble_idx": idx, "interaction": self.interaction,
                                    "object_id": k + 1, "frame": t, "jaccard": float(jac[t, k]),
                                    "contour": float(con[t, k]), "j_and_f": float(0.5 * jac[t, k] + 0.5 * con[t, k]),
                                    "timing": float(timing)})
        frame = next_frame(frame_metric(jac, con, self.metric), next_scribble_frame_candidates, self._annotated)
        self._annotated.append(frame)
        self._scribbles.append(self.robot(name, gt, pred, self.num_objects, frame=frame))
        return True

    @property
    def last_scribble(self) -> dict | None:
        return self._scribbles[-1] if self._scribbles else None

    def summary(self, threshold: float = 60.0) -> dict:
        """AUC, the metric at ``threshold`` s and the curve (:func:`~stcn.interactive.protocol.summarize_report`)."""
        if self.max_time is None:
            raise ValueError("the summary needs max_time (its curve ends at avg objects * max_time)")
        return summarize_report(self.report, max_time=self.max_time, max_interactions=self.max_interactions,
                                avg_num_objects=self.data.avg_num_objects, metric=self.metric, threshold=threshold)


def report_table(rows: Sequence[dict]) -> list[list]:
    """Report rows -> a table (header + rows) in the benchmark's column order."""
    return [list(REPORT_COLUMNS)] + [[r[c] for c in REPORT_COLUMNS] for r in rows]
