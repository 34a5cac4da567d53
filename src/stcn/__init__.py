"""STCN: Space-Time Correspondence Networks for semi-supervised video object segmentation.

    >>> import stcn
    >>> model = stcn.load_model("stcn.pth", device="cpu")     # the released s012 checkpoint
"""
from stcn.errors import CheckpointError, DataError, UserError
from stcn.model.network import STCN
from stcn.weights.io import load_model, read_checkpoint, save_safetensors

__version__ = "0.1.0"

__all__ = ["STCN", "load_model", "read_checkpoint", "save_safetensors", "UserError", "CheckpointError",
           "DataError", "__version__"]
