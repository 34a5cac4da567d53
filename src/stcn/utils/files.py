"""Writing files so that readers never see a partial one: a hidden temp file in the same folder, then a
rename (atomic on one file system)."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_path(path: Path) -> Path:
    """A fresh hidden file name next to ``path`` (same folder, so a rename is atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` through a temp file and a rename; creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "xb") as fh:  # "x": the usual permissions (umask), never clobbers
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
