"""MiVOS's DAVIS-interactive driver (``DAVISProcessor`` of the MiVOS-STCN branch) on our modules.

Every interaction runs S2M on the scribbled frame (the latest scribble only, rasterised on the padded
canvas like MiVOS) and produces a hard (K+1) mask. On the 3rd, 6th and 8th interactions (counter
schedule [2, 5, 7]) the mask is propagated and fused (:meth:`InteractivePropagation.interact`) and the robot
may pick any frame next (candidates None); otherwise only the frame's label map changes
(:meth:`InteractivePropagation.update_mask_only`) and the robot is asked for another scribble on the same frame
(candidates [t]). One processor per sample (fresh state, also between the scribble sets of a sequence).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from stcn.interactive.davis_local import validate_scribble
from stcn.interactive.fusion import FusionNet
from stcn.interactive.propagation import InteractivePropagation
from stcn.interactive.s2m import S2M, s2m_mask
from stcn.interactive.scribbles import davis_scribble_maps
from stcn.model.network import STCN

PROPAGATE_AT = (2, 5, 7)  # 0-based interaction counts that propagate (MiVOS's schedule)


class DAVISProcessor:
    """One DAVIS-interactive sample: ``interact(scribble)`` -> (labels (T, H, W) uint8, next-frame
    candidates ([t] or None), scribbled frame t).

    frames: (T, H, W, 3) uint8; num_objects: K. ``padded_canvas`` keeps MiVOS's rasterisation on the
    padded canvas (False: the geometrically correct placement). ``last`` holds the latest interaction's
    S2M inputs and outputs (frame, raster, prev_labels, pos, neg, logits; padded size) for diagnostics.
    """

    def __init__(self, prop_net: STCN, fusion: FusionNet | None, s2m: S2M, frames, num_objects: int, *,
                 schedule: Sequence[int] = PROPAGATE_AT, padded_canvas: bool = True, mem_every: int = 5,
                 top_k: int = 20, precision: str = "auto") -> None:
        self.vos = InteractivePropagation(prop_net, fusion, frames, num_objects, mem_every=mem_every, top_k=top_k,
                                          precision=precision)
        self.s2m = s2m.eval()
        self.num_objects = num_objects
        self.schedule = list(schedule)
        self.padded_canvas = padded_canvas
        self.count = 0
        self.last: dict | None = None

    @torch.inference_mode()
    def interact(self, scribble: dict) -> tuple[np.ndarray, list[int] | None, int]:
        vos = self.vos
        validate_scribble(scribble, vos.num_frames, self.num_objects, "scribble")
        t, raster, pos, neg = davis_scribble_maps(scribble, vos.size, vos.pad, self.num_objects,
                                                  padded_canvas=self.padded_canvas)
        prev = vos.masks[t].clone()
        mask, logits = s2m_mask(self.s2m, vos.images[t:t + 1], prev, torch.from_numpy(pos), torch.from_numpy(neg))
        self.last = {"frame": t, "raster": raster, "prev_labels": prev.cpu().numpy(), "pos": pos, "neg": neg,
                     "logits": logits[:, 0].cpu().numpy()}
        if self.schedule and self.count == self.schedule[0]:
            self.schedule.pop(0)
            labels = vos.interact(mask, t)
            candidates = None
        else:
            labels = vos.update_mask_only(mask, t)
            candidates = [t]
        self.count += 1
        return labels, candidates, t
