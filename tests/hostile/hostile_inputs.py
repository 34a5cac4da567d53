"""Builders of small hostile inputs (bomb PNGs, lossy masks, broken checkpoints) and the CLI runner the
hostile tests share. Every input is tiny, so a whole run of the CLI on it takes about a second."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

H, W, FRAMES = 48, 64, 6
SRC = Path(__file__).resolve().parents[2] / "src"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def child_env(**extra: str) -> dict[str, str]:
    """This environment with the checkout's sources first on the path and one thread per child (the
    cases run side by side). Warnings are kept: a warning line would break the one-line promise."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    env.pop("PYTHONWARNINGS", None)
    env.update(extra)
    return env


def cli_command(args) -> list[str]:
    """``python -m stcn.cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "stcn.cli", *map(str, args)]


def run_cli(args, *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
    proc = subprocess.run(cli_command(args), cwd=cwd, env=env or child_env(), capture_output=True, text=True,
                          timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_many(cases: list[tuple[list, Path, dict]], *, workers: int = 4, timeout: float = 600) -> list[Result]:
    """Run ``(argv, cwd, env changes)`` command lines, each in its own forked process that runs
    ``stcn.cli.main(argv)`` after imports done once (cli_forks.py): a table of dozens of cases then
    costs seconds instead of a torch import per case."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory(prefix="stcn-hostile-") as tmp:
        spec = Path(tmp) / "cases.json"
        spec.write_text(json.dumps([{"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env}
                                    for argv, cwd, env in cases]))
        subprocess.run([sys.executable, str(Path(__file__).with_name("cli_forks.py")), str(spec),
                        str(Path(tmp) / "results.json"), str(workers)], env=child_env(), check=True, timeout=timeout)
        results = json.loads((Path(tmp) / "results.json").read_text())
    return [Result(r["returncode"], r["stdout"], r["stderr"]) for r in results]


def assert_one_line_error(result: Result, status: int = 2) -> str:
    """Exit ``status``, exactly one stderr line, starting ``stcn: error:``, no traceback. Returns the line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stcn: error: "), result.stderr
    return lines[0]


def listing(root: Path) -> set[str]:
    """Every path under ``root`` (hidden ones included), relative to it."""
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# ---- images --------------------------------------------------------------------------------------
def write_frames(folder: Path, frames: int = FRAMES, h: int = H, w: int = W, ext: str = ".jpg") -> Path:
    """A clip of a red box sliding over grey noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for t in range(frames):
        image = np.full((h, w, 3), 90, np.uint8)
        x = (t * 3) % max(1, w // 2)
        image[h // 4: h // 2, x: x + max(1, w // 4)] = (220, 40, 40)
        image = np.clip(image.astype(int) + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{t:05d}{ext}")
    return folder


def label_map(h: int = H, w: int = W) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)
    labels[h // 4: h // 2, : max(1, w // 4)] = 1
    return labels


def write_mask(path: Path, labels: np.ndarray | None = None) -> Path:
    from stcn.io.masks import save_label_png

    path.parent.mkdir(parents=True, exist_ok=True)
    save_label_png(path, label_map() if labels is None else labels)
    return path


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(path: Path, width: int = 20000, height: int = 20000, mode: int = 0) -> Path:
    """A PNG whose header says ``width`` x ``height`` (greyscale, or palette with ``mode=3``) with a
    tiny body: what a decompression bomb looks like to a reader, in a few hundred bytes."""
    chunks = [_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, mode, 0, 0, 0))]
    if mode == 3:
        chunks.append(_chunk(b"PLTE", bytes(768)))
    chunks += [_chunk(b"IDAT", zlib.compress(b"\0" * 1024)), _chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(chunks))
    return path


# ---- checkpoints ---------------------------------------------------------------------------------
def broken_checkpoints(folder: Path) -> dict[str, Path]:
    """NaN-filled, integer, truncated, random-bytes, empty and code-running checkpoints, built from the
    demo model's names and shapes."""
    import pickle

    import torch
    from safetensors.torch import save_file

    from stcn.weights import registry
    from stcn.weights.io import read_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    ckpt = read_checkpoint(registry.resolve("demo"))
    nan = {k: (torch.full_like(v, float("nan")) if v.is_floating_point() else v).contiguous()
           for k, v in ckpt.state_dict.items()}
    ints = {k: v.to(torch.int32).contiguous() for k, v in ckpt.state_dict.items()}
    out = {"nan": folder / "nan.safetensors", "int": folder / "int.safetensors", "random": folder / "random.pth",
           "truncated": folder / "truncated.pth", "pickle": folder / "evil.pth", "empty": folder / "empty.pth"}
    save_file(nan, out["nan"], metadata=dict(ckpt.metadata))
    save_file(ints, out["int"], metadata=dict(ckpt.metadata))
    out["random"].write_bytes(bytes(range(7, 256)) * 16)
    torch.save({"w": torch.zeros(64)}, folder / "small.pth")
    out["truncated"].write_bytes((folder / "small.pth").read_bytes()[:200])

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    out["pickle"].write_bytes(pickle.dumps(Evil()))
    out["empty"].write_bytes(b"")
    return out


def unwritable_folder() -> Path | None:
    """A folder in which even root cannot create a file (sysfs, procfs), or None on this host."""
    for candidate in (Path("/sys/kernel"), Path("/proc/1")):
        if not candidate.is_dir():
            continue
        probe = candidate / f"stcn-probe-{os.getpid()}"
        try:
            fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except OSError:
            return candidate
        os.close(fd)
        probe.unlink()
    return None
