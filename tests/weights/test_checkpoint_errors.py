"""Bad checkpoints: each gives a one-line error naming the problem, through stcn.load_model (CheckpointError)
and through `stcn weights info` (exit status 2, one `stcn: error:` line on stderr)."""
from __future__ import annotations

import os
import pickle
import shlex
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import stcn
from stcn.cli import main
from stcn.errors import CheckpointError

REMOVED = "key_proj.key_proj.bias"
RENAMED = "decoder.pred.weight"
RESHAPED = "key_comp.weight"


class _Payload:
    """Unpickling this runs a shell command (here: harmlessly creating a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def _wrong_keys(sd, path):
    sd = OrderedDict(sd)
    del sd[REMOVED]
    sd["decoder.pred2.weight"] = sd.pop(RENAMED)
    torch.save(sd, path)


def _wrong_shapes(sd, path):
    sd = OrderedDict(sd)
    sd[RESHAPED] = torch.zeros(512, 1024, 1, 1)
    torch.save(sd, path)


def _truncated_pth(sd, path, *, source):
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _list_pickle(sd, path):
    torch.save([torch.zeros(1), torch.ones(1)], path)


def _dict_of_ints(sd, path):
    torch.save({"a": 1}, path)


def _directory(sd, path):
    path.mkdir()


def _truncated_safetensors(sd, path):
    from safetensors.torch import save_file

    whole = path.with_name("whole.safetensors")
    save_file({k: v.contiguous() for k, v in list(sd.items())[:20]}, str(whole))  # real bytes
    data = whole.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage_safetensors(sd, path):
    path.write_bytes(b"this is not a safetensors file\n" * 10)


def _nan_weights(sd, path):
    sd = OrderedDict(sd)
    sd[RESHAPED] = torch.full_like(sd[RESHAPED], float("nan"))
    torch.save(sd, path)


def _integer_weights(sd, path):
    torch.save(OrderedDict((k, v.to(torch.int32)) for k, v in sd.items()), path)


def _random_bytes(sd, path):
    path.write_bytes(bytes(range(7, 256)) * 16)  # starts like no pickle and no zip


CASES = {
    # name: (file name, writer, substrings the message must contain)
    "wrong keys": ("keys.pth", _wrong_keys,
                   ["does not match", "2 missing keys", REMOVED, RENAMED, "1 unexpected keys", "decoder.pred2.weight"]),
    "wrong shapes": ("shapes.pth", _wrong_shapes,
                     ["does not match", "wrong shapes", RESHAPED, "(512, 1024, 1, 1)", "(512, 1024, 3, 3)"]),
    "truncated pth": ("truncated.pth", _truncated_pth, ["truncated or corrupt"]),
    "list pickle": ("list.pth", _list_pickle, ["not a state dict", "list"]),
    "dict of ints": ("ints.pth", _dict_of_ints, ["not a state dict", "not tensors: a"]),
    "missing file": ("missing.pth", None, ["not found"]),
    "directory": ("folder.pth", _directory, ["is a directory"]),
    "truncated safetensors": ("truncated.safetensors", _truncated_safetensors, ["not a readable safetensors"]),
    "garbage safetensors": ("garbage.safetensors", _garbage_safetensors, ["not a readable safetensors"]),
    # issue 18: these loaded silently and gave all-background masks, or were described as unsafe pickles
    "nan weights": ("nan.pth", _nan_weights, ["1 tensor(s) hold NaN or infinite values", RESHAPED]),
    "integer weights": ("ints32.pth", _integer_weights, ["not floating point", "(int32)"]),
    "random bytes": ("random.pth", _random_bytes, ["not a PyTorch checkpoint (neither a zip checkpoint nor a pickle"]),
}


@pytest.fixture(scope="module")
def bad_files(skeleton_sd, recipe_weights, tmp_path_factory):
    """The key/shape cases only need the right names and shapes: written from the tiny skeleton dict."""
    folder = tmp_path_factory.mktemp("bad_checkpoints")
    files = {}
    for case, (name, writer, _) in CASES.items():
        path = folder / name
        if writer is _truncated_pth:
            writer(skeleton_sd, path, source=recipe_weights("mo"))
        elif writer is not None:
            writer(skeleton_sd, path)
        files[case] = path
    return files


def _cli_error(capsys, *argv) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert err.startswith("stcn: error:") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_checkpoint(case, bad_files, capsys):
    path = bad_files[case]
    expected = CASES[case][2]
    with pytest.raises(CheckpointError) as err:
        stcn.load_model(path)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert str(path) in msg
    for text in expected:
        assert text in msg, (text, msg)

    err_line = _cli_error(capsys, "weights", "info", str(path))
    for text in expected:
        assert text in err_line, (text, err_line)


def test_convert_refuses_a_bad_checkpoint(bad_files, tmp_path, capsys):
    out = tmp_path / "out.safetensors"
    err = _cli_error(capsys, "weights", "convert", str(bad_files["wrong keys"]), str(out))
    assert REMOVED in err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "x": _Payload(marker)}, path)

    # the payload is live: plain unpickling runs it
    with open(path, "rb") as f:
        torch.load(f, weights_only=False)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError) as err:
        stcn.load_model(path)
    assert "\n" not in str(err.value) and "refused to load" in str(err.value) and str(path) in str(err.value)
    err_line = _cli_error(capsys, "weights", "info", str(path))
    assert "refused to load" in err_line
    _cli_error(capsys, "weights", "convert", str(path), str(tmp_path / "out.safetensors"))
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


def test_plain_pickle_file_is_refused(tmp_path, capsys):
    """A checkpoint written with pickle.dump (not torch.save) holding the same payload."""
    marker = tmp_path / "marker"
    path = tmp_path / "evil_plain.pth"
    with open(path, "wb") as f:
        pickle.dump(_Payload(marker), f, protocol=2)
    with pytest.raises(CheckpointError):
        stcn.load_model(path)
    _cli_error(capsys, "weights", "info", str(path))
    assert not marker.exists()
