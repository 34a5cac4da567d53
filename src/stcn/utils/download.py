"""Downloading one file: resumable, atomic, checksum-verified, with a progress bar.

    >>> from stcn.utils.download import download_file
    >>> download_file("https://example.org/big.zip", Path("~/.cache/stcn/big.zip").expanduser(), sha256="...")

* Plain ``http(s)`` URLs are fetched with :mod:`urllib`. The bytes go to ``<dest>.part``; when a previous
  attempt left that file, the download continues it with an HTTP ``Range`` request (a server that ignores
  the range sends the whole file again and the partial file is rewritten).
* Google Drive URLs (``drive.google.com``, ``docs.google.com``) go through :mod:`gdown`, which knows Drive's
  "can't scan this file for viruses" confirmation page. gdown keeps its own partial file
  (``<dest>.part`` + 8 random characters + ``.part``) and resumes it; the complete body lands in
  ``<dest>.part``.
* Only a complete file whose sha256 matches (when one is given) and that passes ``check`` (when given) is
  renamed to ``dest``, so ``dest`` never exists half-written. A file that fails verification is deleted.
* Every failure (offline, connection refused, HTTP error, dropped connection, wrong checksum) raises
  :class:`DownloadError`, a :class:`~stcn.errors.UserError` with a one-line message naming the URL and
  saying how to get the file by hand.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from stcn.errors import UserError

CHUNK_SIZE = 1 << 20
GOOGLE_DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com", "drive.usercontent.google.com"})
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)")
_URLLIB3_PREFIX = re.compile(r"^\w*Connection(Pool)?\(.*?\): ")  # "HTTPSConnection(host=..., port=443): "


class DownloadError(UserError):
    """A download that failed (no connection, HTTP error, interrupted transfer, wrong checksum)."""


def partial_path(dest: str | os.PathLike) -> Path:
    """Where the bytes of ``dest`` are kept until the download is complete and verified."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def is_google_drive(url: str) -> bool:
    return (urllib.parse.urlsplit(url).hostname or "").lower() in GOOGLE_DRIVE_HOSTS


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_SIZE), b""):
            h.update(block)
    return h.hexdigest()


def download_file(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    progress: bool = True,
    resume: bool = True,
    check: Callable[[Path], object] | None = None,
    timeout: float = 60.0,
    desc: str | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and return ``dest``.

    ``sha256``: expected hex digest (None: not checked). ``progress``: show a tqdm bar on stderr.
    ``resume``: continue a partial file left by an earlier attempt (False: start over).
    ``check``: called with the complete, not yet published file; a :class:`UserError` it raises rejects
    the file (e.g. a checkpoint that does not load). ``timeout``: seconds without data before giving up.
    An existing ``dest`` is replaced only once the new file is complete and verified.
    """
    dest = Path(dest).expanduser()
    part = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        _discard_partials(part)
    if is_google_drive(url):
        _fetch_google_drive(url, part, dest, progress=progress)
    else:
        _fetch_http(url, part, dest, progress=progress, timeout=timeout, desc=desc or dest.name)

    if sha256 is not None:
        actual = sha256_of(part)
        if actual != sha256.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"downloaded {url} but its sha256 is {actual}, expected {sha256.lower()}; the file was deleted "
                f"(try again, or download it manually and save it as {dest})"
            )
    if check is not None:
        try:
            check(part)
        except UserError as exc:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"downloaded {url} but the file is not usable ({_one_line(exc)}); it was deleted"
            ) from None
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------------------------------
# Plain HTTP(S)
# --------------------------------------------------------------------------------------------------


def _fetch_http(url: str, part: Path, dest: Path, *, progress: bool, timeout: float, desc: str) -> None:
    """Fill ``part`` with the complete body of ``url``, continuing what ``part`` already holds."""
    from stcn._version import __version__

    for _ in range(2):  # a second pass only after discarding a partial file the server cannot continue
        offset = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": f"stcn/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 416 and offset:  # the range starts at or past the end
                    m = _UNSATISFIED_RANGE.fullmatch(exc.headers.get("Content-Range", "").strip())
                    if m and int(m.group(1)) == offset:
                        return  # the partial file already holds everything
                    part.unlink()
                    continue
                raise _failed(url, dest, f"HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
            raise _failed(url, dest, _reason(exc)) from None

        with response:
            mode = "wb"
            if offset and response.status == 206:
                m = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
                if not m or int(m.group(1)) != offset:
                    part.unlink()  # an answer for another range: start over
                    continue
                mode = "ab"
            else:
                offset = 0  # the server sent the whole file
            length = _content_length(response)
            _copy_body(response, part, mode, offset, length, url, dest, progress=progress, desc=desc)
            return
    raise _failed(url, dest, "the server does not continue partial downloads consistently")


def _content_length(response: http.client.HTTPResponse) -> int | None:
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


def _copy_body(
    response: http.client.HTTPResponse,
    part: Path,
    mode: str,
    offset: int,
    length: int | None,
    url: str,
    dest: Path,
    *,
    progress: bool,
    desc: str,
) -> None:
    from tqdm import tqdm

    received = 0
    total = None if length is None else offset + length
    with open(part, mode) as f, tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
        disable=not progress, file=sys.stderr, leave=False,
    ) as bar:
        try:
            while True:
                chunk = response.read(CHUNK_SIZE)
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as exc:
            f.flush()
            raise _interrupted(url, part, offset + received, _reason(exc)) from None
        f.flush()
        os.fsync(f.fileno())
    if length is not None and received < length:
        raise _interrupted(url, part, offset + received, f"the connection closed before the announced {total} bytes")


# --------------------------------------------------------------------------------------------------
# Google Drive (through gdown)
# --------------------------------------------------------------------------------------------------


def _fetch_google_drive(url: str, part: Path, dest: Path, *, progress: bool) -> None:
    try:
        import gdown
    except ImportError:
        raise DownloadError(
            f"downloading {url} needs the 'gdown' package (pip install gdown); or download the file manually "
            f"and save it as {dest}"
        ) from None
    import requests

    errors: tuple[type[BaseException], ...] = (requests.RequestException, OSError)
    gdown_exceptions = getattr(gdown, "exceptions", None)
    for name in ("DownloadError", "FileURLRetrievalError"):
        if gdown_exceptions is not None and isinstance(getattr(gdown_exceptions, name, None), type):
            errors += (getattr(gdown_exceptions, name),)
    try:
        # resume=True: continue gdown's own partial file; an already complete `part` is returned as is.
        result = gdown.download(url=url, output=str(part), quiet=not progress, resume=True)
    except errors as exc:
        raise _failed(url, dest, _reason(exc)) from None
    if result is None or not part.is_file():
        raise _failed(url, dest, "Google Drive did not send the file")


def _discard_partials(part: Path) -> None:
    part.unlink(missing_ok=True)
    for leftover in part.parent.glob(f"{part.name}????????.part"):  # gdown's partial files
        leftover.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------------


def _one_line(exc: BaseException | str, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _reason(exc: BaseException) -> str:
    """The innermost useful description: urllib's URLError.reason, or the cause inside requests' and
    urllib3's wrappers (ConnectionError -> MaxRetryError -> NewConnectionError)."""
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason  # e.g. ConnectionRefusedError, socket.gaierror, or a string
        return _one_line(reason) or type(reason).__name__
    for _ in range(5):
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException) and exc.args and isinstance(exc.args[0], BaseException):
            inner = exc.args[0]
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = _URLLIB3_PREFIX.sub("", _one_line(exc))
    return text or type(exc).__name__


def _failed(url: str, dest: Path, reason: str) -> DownloadError:
    return DownloadError(
        f"could not download {url}: {reason}; check your internet connection, or download the file "
        f"manually and save it as {dest}"
    )


def _interrupted(url: str, part: Path, kept: int, reason: str) -> DownloadError:
    return DownloadError(
        f"download of {url} interrupted ({reason}); the {kept:,} bytes received are kept in {part} and "
        "running the same command again continues from there"
    )
