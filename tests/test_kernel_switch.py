"""The second CI pass (STCN_TEST_NO_MKLDNN=1, .ci/run) really runs the float-sensitive tests without oneDNN."""
from __future__ import annotations

import os

import pytest
import torch


@pytest.mark.float_sensitive
def test_onednn_follows_the_environment_switch():
    disabled = os.environ.get("STCN_TEST_NO_MKLDNN", "") not in ("", "0")
    assert torch.backends.mkldnn.enabled is (not disabled)
