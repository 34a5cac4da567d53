"""Interactive video object segmentation (MiVOS with STCN propagation).

Interaction-to-mask (S2M), scribble encodings for the DAVIS-interactive and GUI paths, MiVOS's two
aggregations, difference-aware fusion (FusionNet + alignment of the mask difference) and the
interactive propagation core (:class:`InteractivePropagation`). The propagation network is STCN's own
(:class:`stcn.model.network.STCN`). See docs/interactive.md.
"""
from stcn.interactive.aggregate import aggregate_sbg, aggregate_wbg
from stcn.interactive.fusion import (
    FusionNet,
    align_difference,
    attention_weights,
    distances,
    fuse_frame,
    load_fusion,
    mask_difference,
)
from stcn.interactive.propagation import InteractivePropagation
from stcn.interactive.s2m import S2M, load_s2m, s2m_input, s2m_mask
from stcn.interactive.scribbles import (
    ScribbleInteraction,
    canvas_pos_neg,
    davis_pos_neg,
    davis_scribble_maps,
    free_hand,
    rasterize_paths,
    scribbled_frame,
    strokes_canvas,
)

__all__ = [
    "S2M",
    "FusionNet",
    "InteractivePropagation",
    "ScribbleInteraction",
    "aggregate_sbg",
    "aggregate_wbg",
    "align_difference",
    "attention_weights",
    "canvas_pos_neg",
    "davis_pos_neg",
    "davis_scribble_maps",
    "distances",
    "free_hand",
    "fuse_frame",
    "load_fusion",
    "load_s2m",
    "mask_difference",
    "rasterize_paths",
    "s2m_input",
    "s2m_mask",
    "scribbled_frame",
    "strokes_canvas",
]
