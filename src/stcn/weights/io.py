"""Reading and writing STCN checkpoints, strictly and safely.

Accepted files: ``.pth``/``.pt`` through ``torch.load(weights_only=True)`` (never arbitrary unpickling)
and ``.safetensors``. Accepted contents: the released multi-object state dict, a training checkpoint
(``{'network': state_dict, ...}``), a stage-0 single-object state dict (4-channel
``value_encoder.conv1.weight``), and DDP-prefixed (``module.``) variants of those.
"""
from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from stcn.errors import CheckpointError
from stcn.io.files import atomic_file

FIRST_VALUE_CONV = "value_encoder.conv1.weight"
MULTI_OBJECT_IN_CHANNELS = 5  # image (3) + this object's mask + the others' mask
SINGLE_OBJECT_IN_CHANNELS = 4  # image (3) + mask
_SHOW = 5  # how many names of each kind an error message lists


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the state dict (CPU tensors), where it came from and what it is."""

    state_dict: "OrderedDict[str, torch.Tensor]"
    path: Path
    single_object: bool
    metadata: dict[str, str]
    config_json: str | None = None  # the network's ModelConfig as JSON, when the file records it

    @property
    def variant(self) -> str:
        return "stage-0 single-object" if self.single_object else "multi-object"

    @property
    def num_parameters(self) -> int:
        return sum(t.numel() for n, t in self.state_dict.items() if not n.endswith("num_batches_tracked"))


def _read_file(path: Path) -> tuple[Any, dict[str, str]]:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, expected a checkpoint file (.pth or .safetensors)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = OrderedDict((k, f.get_tensor(k)) for k in f.keys())
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None
        return tensors, metadata
    try:
        # torch warns "Detected pickle protocol 4" for foreign pickles: a second stderr line, and the
        # refusal below says what matters
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = _first_line(exc)
        if "Unsupported global" in str(exc) or "GLOBAL" in str(exc) or _starts_like_a_pickle(path):
            raise CheckpointError(
                f"{path}: refused to load: the file holds Python objects other than tensors, and loading it "
                "could run arbitrary code (only plain state dicts are accepted)"
            ) from None
        if "Weights only load failed" in str(exc):  # bytes that are no pickle at all (random, foreign)
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip checkpoint nor a pickle; "
                                  "is it another kind of file, or corrupt?)") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({detail})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        msg = str(exc)
        if "zip archive" in msg or "central directory" in msg or isinstance(exc, EOFError):
            raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({_first_line(exc)})") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_first_line(exc)})") from None
    return obj, {}


def _starts_like_a_pickle(path: Path) -> bool:
    """Whether the file starts with a pickle protocol header (2..5): a pickle the safe loader refused,
    as opposed to bytes that are no pickle at all."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


CONFIG_KEY = "stcn_config"  # safetensors metadata / training-checkpoint entry holding ModelConfig JSON


def _as_state_dict(obj: Any, path: Path) -> "OrderedDict[str, torch.Tensor]":
    if isinstance(obj, dict) and "network" in obj and isinstance(obj["network"], dict):
        obj = obj["network"]  # a training checkpoint
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path}: not a state dict (expected a dict of tensors, got {type(obj).__name__})")
    non_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        raise CheckpointError(
            f"{path}: not a state dict: entries that are not tensors: {', '.join(map(str, non_tensors[:_SHOW]))}"
        )
    if all(k.startswith("module.") for k in obj):  # saved from a DistributedDataParallel wrapper
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return OrderedDict(obj)


def _check_values(state_dict: "OrderedDict[str, torch.Tensor]", path: Path) -> None:
    """Refuse weights no trained network has: integer or bool tensors where weights are floats, and
    NaN or infinite values (both load silently and give all-background masks)."""
    not_float = [k for k, v in state_dict.items()
                 if not v.is_floating_point() and not k.endswith("num_batches_tracked")]
    if not_float:
        shown = ", ".join(f"{k} ({str(state_dict[k].dtype).replace('torch.', '')})" for k in not_float[:_SHOW])
        more = f" and {len(not_float) - _SHOW} more" if len(not_float) > _SHOW else ""
        raise CheckpointError(f"{path}: {len(not_float)} tensor(s) are not floating point: {shown}{more}")
    not_finite = [k for k, v in state_dict.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        more = f" and {len(not_finite) - _SHOW} more" if len(not_finite) > _SHOW else ""
        raise CheckpointError(f"{path}: {len(not_finite)} tensor(s) hold NaN or infinite values: "
                              f"{', '.join(not_finite[:_SHOW])}{more}")


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint file into a :class:`Checkpoint` (no model is built).

    Raises :class:`CheckpointError` with a one-line message for a missing file, a directory, a truncated
    or foreign file, a pickle that needs arbitrary code, a dict that is not a state dict, or tensors that
    are not floating point or hold NaN or infinite values.
    """
    path = Path(path)
    obj, metadata = _read_file(path)
    config_json = metadata.get(CONFIG_KEY)
    if isinstance(obj, dict) and isinstance(obj.get(CONFIG_KEY), str):
        config_json = obj[CONFIG_KEY]
    state_dict = _as_state_dict(obj, path)
    _check_values(state_dict, path)
    conv = state_dict.get(FIRST_VALUE_CONV)
    single_object = conv is not None and conv.ndim == 4 and conv.shape[1] == SINGLE_OBJECT_IN_CHANNELS
    return Checkpoint(state_dict, path, single_object, metadata, config_json)


def checkpoint_config(ckpt: Checkpoint):
    """The :class:`~stcn.model.network.ModelConfig` a checkpoint records (the paper's when it records none)."""
    from stcn.model.network import ModelConfig

    if ckpt.config_json is None:
        return ModelConfig(single_object=ckpt.single_object)
    try:
        return ModelConfig.from_json(ckpt.config_json).with_single_object(ckpt.single_object)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{ckpt.path}: unreadable network configuration ({exc})") from None


def widen_single_object(state_dict: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """A stage-0 state dict made loadable by the multi-object network: the value encoder's first conv
    gets a zero 5th input channel (the 'others' mask), as the original's inference scripts do.
    (Training from stage 0 fills it with an orthogonal init instead: see stcn.train.)"""
    out = OrderedDict(state_dict)
    w = out[FIRST_VALUE_CONV]
    pad = w.new_zeros(w.shape[0], MULTI_OBJECT_IN_CHANNELS - w.shape[1], *w.shape[2:])
    out[FIRST_VALUE_CONV] = torch.cat([w, pad], dim=1)
    return out


def load_state_dict_strict(
    module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str | Path, *, assign: bool = False,
    network: str = "STCN",
) -> None:
    """Load ``state_dict`` into ``module``, refusing any missing, unexpected or mis-shaped key.

    The error lists the first few names of each kind and names ``source`` and the ``network``.
    ``assign=True`` adopts the tensors themselves (for a module built on the ``meta`` device), cast to
    the module's dtypes.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)):
        if items:
            more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:_SHOW])}{more}")
    if problems:
        raise CheckpointError(f"{source}: does not match the {network} network: " + "; ".join(problems))
    if assign:
        state_dict = {k: v.to(expected[k].dtype) for k, v in state_dict.items()}
    module.load_state_dict(state_dict, strict=True, assign=assign)


def load_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    single_object: bool = False,
) -> torch.nn.Module:
    """Build the STCN network from a checkpoint and return it in eval mode on ``device``.

    ``path`` is what ``--weights`` takes: a checkpoint file (.pth / .safetensors) or a registry name
    such as ``"demo"`` (``stcn weights list``). A stage-0 single-object checkpoint is widened to the
    multi-object network (zero 'others' channel) unless ``single_object=True`` asks for the
    single-object network itself. The weights are ordinary tensors even when called inside
    ``torch.inference_mode()``, so the model may later be trained or changed in place.
    """
    from stcn.weights import registry

    if not Path(path).exists() and str(path) in registry.REGISTRY:
        path = registry.resolve(str(path), option="stcn.load_model")
    with torch.inference_mode(False):
        return _build(path, device, single_object)


def _build(path: str | os.PathLike, device: str | torch.device, single_object: bool) -> torch.nn.Module:
    from stcn.model.network import STCN

    ckpt = read_checkpoint(path)
    state_dict = ckpt.state_dict
    if ckpt.single_object and not single_object:
        state_dict = widen_single_object(state_dict)
    elif single_object and not ckpt.single_object:
        raise CheckpointError(f"{ckpt.path}: is a multi-object checkpoint, cannot build the single-object network")
    # Built on the meta device: no time spent on random initialisation that the checkpoint overwrites.
    with torch.device("meta"):
        model = STCN(checkpoint_config(ckpt), single_object=single_object)
    load_state_dict_strict(model, state_dict, ckpt.path, assign=True)
    return model.to(device).eval()


def save_safetensors(
    state_dict: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``state_dict`` as safetensors atomically (temporary file in the same folder, then rename).

    To make the file self-describing, pass ``metadata={"stcn_config": model.config.to_json()}``."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    with atomic_file(path) as tmp:  # creates the folder; file-system failures are one-line DataErrors
        save_file(tensors, tmp, metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path


def summarize(ckpt: Checkpoint) -> dict[str, Any]:
    """What ``stcn weights info`` prints: variant, parameter count, key groups, metadata."""
    groups: "OrderedDict[str, int]" = OrderedDict()
    for name, t in ckpt.state_dict.items():
        top = name.split(".", 1)[0]
        groups[top] = groups.get(top, 0) + (0 if name.endswith("num_batches_tracked") else t.numel())
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in ckpt.state_dict.values()})
    return {
        "file": str(ckpt.path),
        "variant": ckpt.variant,
        "tensors": len(ckpt.state_dict),
        "parameters": ckpt.num_parameters,
        "dtypes": dtypes,
        "groups": dict(groups),
        "value_encoder_in_channels": int(ckpt.state_dict[FIRST_VALUE_CONV].shape[1])
        if FIRST_VALUE_CONV in ckpt.state_dict else None,
        "metadata": ckpt.metadata,
    }


def summary_text(info: dict[str, Any]) -> str:
    lines = [
        f"file:       {info['file']}",
        f"variant:    {info['variant']}",
        f"tensors:    {info['tensors']}",
        f"parameters: {info['parameters']:,}",
        f"dtypes:     {', '.join(info['dtypes'])}",
        "groups:",
    ]
    lines += [f"  {name:<16} {count:>12,}" for name, count in info["groups"].items()]
    if info["metadata"]:
        lines.append("metadata:   " + json.dumps(info["metadata"], sort_keys=True))
    return "\n".join(lines)
