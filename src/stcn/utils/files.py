"""Kept for imports written before :mod:`stcn.io.files` existed; atomic writes live there."""
from stcn.io.files import atomic_write, temp_path

__all__ = ["atomic_write", "temp_path"]
