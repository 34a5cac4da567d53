"""Writing files and folders so that readers never see a partial one.

A file is written to a hidden temporary sibling, then renamed over its target (atomic on one file
system). A folder is filled as a hidden sibling, then swapped in by renames. This module and the
download helper (:mod:`stcn.utils.download`) are the only places that rename files.

File-system failures (a read-only folder, a full disk, a path under a file) surface as one-line
:class:`stcn.errors.DataError` messages (:func:`os_error`), and clean-up of temporary files never
raises over the error being reported. Hidden siblings carry their writer's process id, so those left
by a process that died without cleaning up (SIGKILL, a power cut) are swept by the next writer of the
same target (:func:`sweep_stale`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from stcn.errors import DataError

__all__ = ["TEMP_TAG", "OLD_TAG", "STAGING_TAG", "temp_path", "atomic_write", "atomic_file", "move",
           "merge_into", "atomic_folder", "remove_stale", "staged_output", "reason", "os_error", "check_writable",
           "check_output_folder", "sweep_stale", "remove_quietly", "staged_files"]

#: Marks of the hidden siblings of a folder being swapped in (``.<name>.tmp-<tag>``, ``.<name>.old-<tag>``).
TEMP_TAG = ".tmp-"
OLD_TAG = ".old-"
#: Mark of the hidden staging folder of :func:`staged_output` (``.<name>.stcn-tmp-<pid>-<hex>``).
STAGING_TAG = ".stcn-tmp-"


def _tag() -> str:
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


# --------------------------------------------------------------------------------------------------
# File-system failures in words
# --------------------------------------------------------------------------------------------------
# The C library's strerror is sometimes misleading for a user ("Invalid cross-device link" for a
# rename off a mount point), so the common cases get a plain sentence.
_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.EEXIST: "it already exists",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long",
    errno.EMFILE: "too many open files",
    errno.EXDEV: "the target is on another file system (a mount point)",
}


def reason(exc: BaseException) -> str:
    """What ``exc`` (usually an :class:`OSError`) means, as a short phrase without a line break."""
    if isinstance(exc, OSError):
        if exc.errno in _REASONS:
            return _REASONS[exc.errno]
        if exc.strerror:
            return exc.strerror.splitlines()[0]
    return _first_line(exc)


def os_error(exc: BaseException, action: str, path: str | os.PathLike) -> DataError:
    """``cannot <action> <path>: <reason>`` as a :class:`DataError` (raise it ``from None``)."""
    return DataError(f"cannot {action} {path}: {reason(exc)}")


def remove_quietly(path: str | os.PathLike) -> None:
    """Delete a file or folder tree if it is there; never raises (clean-up runs while another error is
    being reported, and must not replace it)."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not (p.exists() or p.is_symlink()) and p.parent != p:
        p = p.parent
    return p


def check_writable(folder: str | os.PathLike, what: str = "the output folder") -> None:
    """Refuse ``folder`` (existing, or to be created) when no file can be created in it; ``what``
    names it in the message (``cannot create the output folder X: ...``).

    A real file is created and removed in ``folder`` or in its nearest existing ancestor: permission
    bits do not tell, since root writes through them and a read-only mount ignores them.
    """
    folder = Path(folder)
    base = _nearest_existing(folder)
    same = base == Path(os.path.abspath(folder))
    action = f"write into {what} {folder}" if same else f"create {what} {folder}"
    if not base.is_dir():
        raise DataError(f"cannot {action}: {base} is a file, not a folder")
    probe = base / f".stcn-write-test-{_tag()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        where = "" if same else f" (in {base})"
        raise DataError(f"cannot {action}{where}: {reason(exc)}") from None
    os.close(fd)
    remove_quietly(probe)


def check_output_folder(folder: str | os.PathLike, option: str = "--out") -> None:
    """``folder`` is a folder or can become one, and a file can be created in it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{option} {folder}: exists and is not a folder")
    check_writable(folder, f"the {option} folder")


# --------------------------------------------------------------------------------------------------
# Debris of dead writers
# --------------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else: alive
        return True
    return True


def _staging_patterns(target: Path) -> list[re.Pattern]:
    name, stem, suffix = re.escape(target.name), re.escape(target.stem), re.escape(target.suffix)
    return [re.compile(rf"^\.{name}{re.escape(STAGING_TAG)}(\d+)-[0-9a-f]+$"),  # staged_output
            re.compile(rf"^\.{name}(?:{re.escape(TEMP_TAG)}|{re.escape(OLD_TAG)})(\d+)-[0-9a-f]+$"),  # atomic_folder
            re.compile(rf"^\.{stem}\.(\d+)\.[0-9a-f]{{12}}\.tmp{suffix}$")]  # temp_path (atomic files)


def sweep_stale(target: str | os.PathLike, *, inside: bool = False) -> list[Path]:
    """Remove the hidden siblings of ``target`` (staging folders, temp files) whose writer process no
    longer exists; with ``inside``, also those inside ``target`` (staging made in a mount point).

    Entries of live processes (another run writing right now) are left alone. Returns what was
    removed; never raises.
    """
    target = Path(target)
    patterns = _staging_patterns(target)
    removed: list[Path] = []
    for parent in (target.parent, target) if inside else (target.parent,):
        try:
            entries = list(parent.iterdir())
        except OSError:
            continue
        for entry in entries:
            for pattern in patterns:
                match = pattern.match(entry.name)
                if match is None:
                    continue
                pid = int(match.group(1))
                if pid != os.getpid() and not _pid_alive(pid):
                    remove_quietly(entry)
                    removed.append(entry)
                break
    return removed


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, "create the folder of", path) from None
    tmp = temp_path(path)
    try:
        yield tmp
        move(tmp, path)
    except OSError as exc:  # the writer's own failure (full disk, read-only folder): one line
        remove_quietly(tmp)
        raise os_error(exc, "write", path) from None
    except BaseException:
        remove_quietly(tmp)
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


def _create_hidden(folder: Path, named: Path) -> list[Path]:
    """mkdir ``folder`` and the parents it lacks; returns the parents created (for clean-up). On failure
    nothing is left and the error names ``named``, the folder the user asked for."""
    created: list[Path] = []
    try:
        created = _make_parents(folder.parent)
        folder.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise os_error(exc, "create", named) from None
    return created


@contextlib.contextmanager
def atomic_folder(final: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``final`` to fill; on success it replaces ``final`` (whatever
    was there) by two renames, on any exception it is deleted and ``final`` is untouched."""
    final = Path(final)
    tag = _tag()
    tmp = final.parent / f".{final.name}{TEMP_TAG}{tag}"
    created = _create_hidden(tmp, final)
    try:
        yield tmp
    except BaseException:
        # the folders this call created go too: a first video that fails leaves no empty --out
        remove_quietly(tmp)
        _remove_empty(created)
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
        raise os_error(exc, "read the output folder", final) from None
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


def _is_mount_point(folder: Path) -> bool:
    try:
        return folder.stat().st_dev != folder.resolve().parent.stat().st_dev
    except OSError:
        return False


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
    check_writable(final)  # a read-only mount or a path under a file: refused before anything is made
    # Staged next to final (one file system, so the renames are atomic), or inside final when final is
    # a mount point, since a rename off it would cross file systems.
    inside = exists and _is_mount_point(final)
    sweep_stale(final, inside=inside)  # what runs killed outright (SIGKILL) left
    created: list[Path] = []
    staging = (final if inside else final.parent) / f".{final.name}{STAGING_TAG}{_tag()}"
    try:
        if not exists:
            created = _make_parents(final.parent)
        staging.mkdir()
    except OSError as exc:
        _remove_empty(created)
        raise os_error(exc, "create the output folder", final) from None
    try:
        yield staging
        try:
            if exists:
                merge_into(staging, final)
                remove_quietly(staging)
            else:
                move(staging, final)
        except OSError as exc:
            raise os_error(exc, "move the outputs into", final) from None
    except BaseException:
        remove_quietly(staging)
        _remove_empty(created)
        raise


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike, name: str = "save") -> Iterator[Path]:
    """Yield an empty hidden staging folder inside ``folder`` (created with its parents) whose files
    replace those of the same relative path in ``folder`` on success, all or nothing.

    Every target that exists is first moved aside into the staging folder, then each staged file is
    renamed into place (renames within ``folder``: one file system). If any rename fails, the ones
    done are undone and the originals put back, so ``folder`` ends either fully updated or exactly
    as it was. Other files in ``folder`` are left alone. On any exception the staging folder, and the
    folders this call created, are removed; file-system failures are one-line :class:`DataError`.
    Staging folders of dead processes (``.<name>.stcn-tmp-<pid>-*``) are swept first.
    """
    folder = Path(folder)
    check_output_folder(folder, "--out")
    sweep_stale(folder / name)
    stage = folder / f".{name}{STAGING_TAG}{_tag()}"
    created = _create_hidden(stage, folder)
    try:
        yield stage
        files = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file() or p.is_symlink())
        for rel in files:  # a target in the way of a file (a folder named like it) refuses the whole save
            target = folder / rel
            if target.is_dir() and not target.is_symlink():
                raise DataError(f"cannot save {target}: it is a folder")
            for parent in rel.parents[:-1]:
                if (folder / parent).exists() and not (folder / parent).is_dir():
                    raise DataError(f"cannot save into {folder / parent}: it is a file, not a folder")
        _publish(stage, folder, files)
    except OSError as exc:
        remove_quietly(stage)
        _remove_empty(created)
        raise os_error(exc, "save into", folder) from None
    except BaseException:
        remove_quietly(stage)
        _remove_empty(created)
        raise
    remove_quietly(stage)


def _publish(stage: Path, folder: Path, files: list[Path]) -> None:
    backup = stage / f".backup{STAGING_TAG}{_tag()}"
    done: list[tuple[Path, Path | None, list[Path]]] = []  # (target, its backup, folders made for it)
    try:
        for i, rel in enumerate(files):
            target = folder / rel
            made = _make_parents(target.parent)
            saved = None
            if target.exists() or target.is_symlink():
                saved = backup / f"{i}"
                saved.parent.mkdir(exist_ok=True)
                move(target, saved)
            done.append((target, saved, made))
            move(stage / rel, target)
    except BaseException:
        for target, saved, made in reversed(done):  # undo: the folder ends as it was
            with contextlib.suppress(OSError):
                if saved is not None:
                    move(saved, target)
                else:
                    target.unlink(missing_ok=True)
            _remove_empty(made)
        raise
