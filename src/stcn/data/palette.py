"""Kept for imports written before :mod:`stcn.io.masks` existed; the palette and the label-PNG reader
and writer live there."""
from stcn.io.masks import DAVIS_PALETTE, davis_palette, load_label_png, read_label_png, save_label_png

__all__ = ["DAVIS_PALETTE", "davis_palette", "save_label_png", "load_label_png", "read_label_png"]
