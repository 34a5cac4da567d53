"""segment_clip: the first-mask loop shared by the demo, synthetic validation and the policy benchmark."""
from __future__ import annotations

import numpy as np
import torch

from stcn.data.synthetic import generate_video
from stcn.inference import InferenceCore, segment_clip
from stcn.model import PRESETS, STCN


def test_segment_clip_equals_stepping_the_engine():
    torch.manual_seed(0)
    model = STCN(PRESETS["small"]).eval()
    video = generate_video(3, num_frames=7, height=64, width=96, num_objects=2)
    seen = []
    result = segment_clip(model, video.frames, video.labels[0], on_frame=lambda t, lab: seen.append((t, lab)),
                          max_memory_frames=2, memory_policy="oldest", mem_every=1)
    core = InferenceCore(model, max_memory_frames=2, memory_policy="oldest", mem_every=1)
    with torch.inference_mode():
        expected = np.stack([core.labels(core.step(f, video.labels[0] if t == 0 else None))
                             for t, f in enumerate(video.frames)])
    np.testing.assert_array_equal(result.labels, expected)
    assert [t for t, _ in seen] == list(range(7)) and all(np.array_equal(a, b) for (_, a), b in zip(seen, expected))
    assert result.engine.memory.permanent == 2 and result.engine.memory.evicted  # the options reached the engine
    assert result.seconds > 0 and result.fps == 7 / result.seconds
