"""Writing files and folders so that readers never see a partial one.

A file is written to a hidden temporary sibling, then renamed over its target (atomic on one file
system). A folder is filled as a hidden sibling, then swapped in by renames. This module and the
download helper (:mod:`stcn.utils.download`) are the only places that rename files.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from stcn.errors import DataError

__all__ = ["TEMP_TAG", "OLD_TAG", "temp_path", "atomic_write", "atomic_file", "move", "merge_into",
           "atomic_folder", "remove_stale", "staged_output"]

#: Marks of the hidden siblings of a folder being swapped in (``.<name>.tmp-<tag>``, ``.<name>.old-<tag>``).
TEMP_TAG = ".tmp-"
OLD_TAG = ".old-"


def _tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def temp_path(path: Path) -> Path:
    """A fresh hidden file name next to ``path`` (same folder, so a rename is atomic); keeps the suffix
    so that writers which pick a format from it (matplotlib, PyAV) still do."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp{path.suffix}")


def move(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename ``src`` to ``dst``, replacing a file there (one atomic rename)."""
    os.replace(src, dst)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary path next to ``path`` (not yet created) to write the file to; on success
    it is renamed to ``path``, on any exception deleted. Creates the folder.

        >>> with atomic_file("run/model.pth") as tmp:
        ...     torch.save(state, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        move(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (str as UTF-8) to ``path`` through a temp file and a rename; creates the folder."""
    path = Path(path)
    with atomic_file(path) as tmp, open(tmp, "xb") as fh:  # "x": the usual permissions (umask), never clobbers
        fh.write(data.encode() if isinstance(data, str) else data)
    return path


def merge_into(src: Path, dst: Path) -> None:
    """Move the content of folder ``src`` into folder ``dst``: entries new to ``dst`` are moved in one
    rename each, folders present on both sides are merged, files replace files. Other entries of
    ``dst`` are left alone."""
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dst / entry.name
        if entry.is_dir() and not entry.is_symlink() and target.is_dir():
            merge_into(entry, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            move(entry, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale(folder: Path) -> None:
    """Delete the hidden siblings an interrupted :func:`atomic_folder` of ``folder`` left behind."""
    folder = Path(folder)
    if not folder.parent.is_dir():
        return
    prefixes = (f".{folder.name}{TEMP_TAG}", f".{folder.name}{OLD_TAG}")
    for p in folder.parent.iterdir():
        if p.name.startswith(prefixes):
            _remove(p)


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``final`` to fill; on success it replaces ``final`` (whatever
    was there) by two renames, on any exception it is deleted and ``final`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = _tag()
    tmp = final.parent / f".{final.name}{TEMP_TAG}{tag}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists() or final.is_symlink():
        old = final.parent / f".{final.name}{OLD_TAG}{tag}"
        move(final, old)
    try:
        move(tmp, final)
    except BaseException:
        if old is not None:
            move(old, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        _remove(old)


# --------------------------------------------------------------------------------------------------
# Staged (all-or-nothing) output folders that may merge into an existing one
# --------------------------------------------------------------------------------------------------


def _check_target(final: Path, force: bool) -> bool:
    """Whether ``final`` exists (as a folder we may write into); raises if we may not."""
    if final.is_symlink() and not final.exists():
        raise DataError(f"{final}: is a broken symbolic link")
    if not final.exists():
        return False
    if not final.is_dir():
        raise DataError(f"{final}: exists and is not a folder")
    try:
        non_empty = any(final.iterdir())
    except OSError as exc:
        raise DataError(f"cannot read the output folder {final}: {exc.strerror or _first_line(exc)}") from None
    if non_empty and not force:
        raise DataError(
            f"{final}: the output folder exists and is not empty; pass --force to write into it "
            "(files of the same name are replaced) or choose another folder"
        )
    return True


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p ``folder``; return the folders created (deepest last)."""
    created: list[Path] = []
    missing = []
    p = folder
    while not p.exists() and not p.is_symlink():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        p.mkdir()
        created.append(p)
    return created


def _remove_empty(folders: list[Path]) -> None:
    for p in reversed(folders):
        with contextlib.suppress(OSError):
            p.rmdir()


@contextlib.contextmanager
def staged_output(final: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a hidden, empty sibling folder of ``final`` to write into; publish it on success.

    * ``final`` missing: its parents are created, and on success the staging folder is renamed to
      ``final`` (one atomic rename);
    * ``final`` an empty folder, or a non-empty one with ``force=True``: on success each staged file
      replaces the file of the same name in ``final`` (an atomic rename per file); other files in
      ``final`` are left alone;
    * ``final`` non-empty without ``force``, or not a folder: :class:`DataError`, nothing created.

    On any exception (including KeyboardInterrupt) the staging folder, and any parent folder this
    call created, are removed and ``final`` is untouched.
    """
    final = Path(final)
    exists = _check_target(final, force)
    created: list[Path] = []
    try:
        if not exists:
            created = _make_parents(final.parent)
        staging = final.parent / f".{final.name}.stcn-tmp-{_tag()}"
        staging.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise DataError(f"cannot create the output folder {final}: {exc.strerror or _first_line(exc)}") from None
    try:
        yield staging
        try:
            if exists:
                merge_into(staging, final)
                shutil.rmtree(staging, ignore_errors=True)
            else:
                move(staging, final)
        except OSError as exc:
            raise DataError(f"cannot move the outputs into {final}: {exc.strerror or _first_line(exc)}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise
