"""The released STCN checkpoints and where they are kept on this machine.

    >>> from stcn.weights import registry
    >>> registry.cached_path("s012")          # ~/.cache/stcn/weights/stcn_s012.pth (may not exist yet)
    >>> registry.default_weights()            # that path if the file is there, else None

The cache folder is ``$STCN_HOME`` (default ``~/.cache/stcn``); weights live in ``<cache>/weights/``.
To add a checkpoint later (e.g. the S2M/fusion networks for interactive use), call :func:`add` with a
:class:`WeightsEntry`, or add it to ``_BUILTIN`` below. An entry with ``package_file`` set is shipped
inside the ``stcn`` package (e.g. a small demo model) and needs no download.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stcn.errors import CheckpointError, UserError

DEFAULT = "s012"
DEMO = "demo"  # the small model shipped in the package (stcn demo's default)
REAL = "real"  # the small model fine-tuned for real footage, shipped in the package
ENV_HOME = "STCN_HOME"


@dataclass(frozen=True)
class WeightsEntry:
    """One released checkpoint.

    name: what the user types (``stcn weights download NAME``). filename: its name in the cache.
    url: where to download it (None for a packaged file). sha256: expected digest, None if unknown.
    package_file: path relative to the ``stcn`` package for a file shipped with it (no download).
    """

    name: str
    filename: str
    description: str
    url: str | None = None
    sha256: str | None = None
    package_file: str | None = None

    @property
    def downloadable(self) -> bool:
        return self.url is not None and self.package_file is None


def google_drive_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?id={file_id}"


_BUILTIN = (
    WeightsEntry(
        name=DEMO,
        filename="stcn_demo_small.safetensors",
        description="built in: the small model trained on synthetic video only (stcn demo; docs/demo-model.md)",
        package_file="assets/stcn_demo_small.safetensors",
        sha256="3ba2392bc8b82bd016ba26a29a7ca03eeeb1785049ceabdfc1f20f1f10e027a9",
    ),
    WeightsEntry(
        name=REAL,
        filename="stcn_real_small.safetensors",
        description="built in: the demo model fine-tuned on real photos and real-looking video, for real footage "
                    "(docs/demo-model.md)",
        package_file="assets/stcn_real_small.safetensors",
        sha256="55ab997c986e6bd4e011a84501834ab4c5cbc22a535f73d02aa000e6a673781b",
    ),
    WeightsEntry(
        name="s012",
        filename="stcn_s012.pth",
        description="the default: trained on static images, BL30K, then DAVIS + YouTube-VOS",
        url=google_drive_url("1mRrE0uCI2ktdWlUgapJI_KmgeIiF2eOm"),
    ),
    WeightsEntry(
        name="s03",
        filename="stcn_s03.pth",
        description="trained on static images, then DAVIS + YouTube-VOS (no BL30K)",
        url=google_drive_url("1JllXPJZola0G-g1aUQfXe9nLMBioj-aH"),
    ),
    WeightsEntry(
        name="s2m",
        filename="mivos_s2m.pth",
        description="interactive: MiVOS scribble-to-mask network S2M (stcn.interactive.load_s2m)",
        url=google_drive_url("1HKwklVey3P2jmmdmrACFlkXtcvNxbKMM"),
    ),
    WeightsEntry(
        name="fusion",
        filename="mivos_fusion_stcn.pth",
        description="interactive: MiVOS fusion net for STCN (stcn.interactive.load_fusion)",
        url=google_drive_url("1MAbWHrOjlze9vPQdW-HxMnvjPpaZlfLv"),
    ),
)

REGISTRY: dict[str, WeightsEntry] = {entry.name: entry for entry in _BUILTIN}


class UnknownWeightsError(UserError):
    """A weights name that the registry does not know."""


def add(entry: WeightsEntry) -> None:
    """Register (or replace) a checkpoint."""
    REGISTRY[entry.name] = entry


def names(*, downloadable_only: bool = False) -> list[str]:
    return [n for n, e in REGISTRY.items() if e.downloadable or not downloadable_only]


def get(name: str) -> WeightsEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownWeightsError(f"unknown weights {name!r}; known: {', '.join(REGISTRY)}") from None


def cache_dir() -> Path:
    """``$STCN_HOME``, or ``~/.cache/stcn`` when it is not set (not created here)."""
    home = os.environ.get(ENV_HOME)
    return Path(home).expanduser() if home else Path.home() / ".cache" / "stcn"


def weights_dir() -> Path:
    return cache_dir() / "weights"


def cached_path(name: str) -> Path:
    """Where checkpoint ``name`` is (or will be once downloaded); the file may not exist."""
    entry = get(name)
    if entry.package_file is not None:
        return Path(__file__).resolve().parents[1] / entry.package_file
    return weights_dir() / entry.filename


def default_weights() -> Path | None:
    """The default (s012) checkpoint if it is on this machine, else None."""
    path = cached_path(DEFAULT)
    return path if path.is_file() else None


def missing_weights_message(name: str = DEFAULT, option: str = "--weights") -> str:
    """One line telling the user how to get checkpoint ``name``."""
    return (
        f"no {name} weights found (looked for {cached_path(name)}): run `stcn weights download {name}` "
        f"to fetch them, or pass {option} PATH"
    )


def resolve(name_or_path: str | os.PathLike | None, *, default: str = DEFAULT, option: str = "--weights") -> Path:
    """The checkpoint file meant by ``name_or_path``: an existing file, else a registry name
    (``default`` when None). Raises :class:`~stcn.errors.CheckpointError` with one line naming
    ``option`` and what to do when it is neither, or when a named checkpoint is not on this machine."""
    if name_or_path is None:
        name_or_path = default
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if name in REGISTRY:
        cached = cached_path(name)
        if cached.is_file():
            return cached
        if REGISTRY[name].package_file is not None:
            raise CheckpointError(f"the built-in weights {name!r} are missing from this installation ({cached}): "
                                  f"reinstall stcn, or pass {option} PATH")
        raise CheckpointError(missing_weights_message(name, option))
    if path.exists():
        raise CheckpointError(f"{option}: {path} is not a checkpoint file")
    raise CheckpointError(f"{option}: checkpoint not found: {path} (known names: {', '.join(REGISTRY)})")
