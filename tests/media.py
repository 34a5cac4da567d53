"""Small video files for tests (importable by every test module, like reference_data)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from stcn.io.writers import pick_video_encoder


def write_mp4(path: Path, frames: np.ndarray, *, codec: str | None = None, faststart: bool = False,
              gop: int | None = None) -> Path:
    """Encode ``frames`` (T, H, W, 3) uint8 as a 24 fps yuv420p video at ``path``; ``gop`` sets the keyframe
    interval (the reverse reader's seeks), ``faststart`` moves the index to the front."""
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec or pick_video_encoder(), rate=24)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if gop is not None:
            stream.gop_size = gop
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
