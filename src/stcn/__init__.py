"""STCN: Space-Time Correspondence Networks for semi-supervised video object segmentation.

    >>> import stcn
    >>> model = stcn.load_model("stcn.pth", device="cpu")     # a checkpoint file, or a name such as "demo"
    >>> for r in stcn.segment_video("frames/", {0: first_mask}, model=model):
    ...     r.name, r.labels                                     # HxW object ids, frame by frame
"""
from stcn._version import __version__
from stcn.errors import CheckpointError, DataError, UserError
from stcn.inference.options import EngineOptions
from stcn.inference.video import FrameResult, segment_video
from stcn.model.network import STCN
from stcn.weights.io import load_model, read_checkpoint, save_safetensors

__all__ = ["STCN", "load_model", "segment_video", "FrameResult", "EngineOptions", "read_checkpoint",
           "save_safetensors", "UserError", "CheckpointError", "DataError", "__version__"]
