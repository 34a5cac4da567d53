"""The training / evaluation data sets: download them, and resize YouTube-VOS to 480p (``stcn data``).

:func:`download_dataset` (``stcn data download {davis,youtube,static,bl30k} --root DIR``) fetches each
archive of the set into ``DIR/.stcn-data/`` (resumable, atomic, sha256-checked where a checksum is
known, rejected when it is not a valid archive), extracts it aside and moves its content into place,
then records it as done, so running the command again skips finished archives and continues an
interrupted one. An archive already saved by hand as ``DIR/.stcn-data/<name>`` is used as it is.

Layouts produced (what ``stcn train`` / ``stcn evaluate`` read):

* davis: ``DIR/trainval/{JPEGImages,Annotations}/480p/<seq>``, ``DIR/trainval/ImageSets/2017``, and
  ``DIR/test-dev/...`` (the official DAVIS 2017 480p archives);
* youtube: ``DIR/train``, ``DIR/valid``, ``DIR/all_frames/valid_all_frames`` (the original's Google
  Drive copies) and ``DIR/train_480p`` (``train`` resized, as ``stcn data resize-youtube``);
* static: ``DIR/{fss,DUTS-TR,DUTS-TE,ecssd,BIG_small,HRSOD_small}`` (the original's static_data.zip);
* bl30k: ``DIR/JPEGImages/<seq>``, ``DIR/Annotations/<seq>`` from the BL30K_[a-f].tar parts.
"""
from __future__ import annotations

import os
import shutil
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from stcn.errors import DataError, UserError
from stcn.io.files import atomic_folder, merge_into

STATE_DIR = ".stcn-data"


@dataclass(frozen=True)
class Archive:
    """One archive: where it comes from and where its content goes under the root."""

    name: str  # file name (also its name under --mirror)
    url: str | None  # None: no direct link is known (see the data set's note)
    target: str = "."  # folder under the root that receives the content
    strip: str | None = None  # a top-level folder of the archive whose content is what goes to target
    sha256: str | None = None  # checked when known
    mirrors: tuple[str, ...] = ()  # tried in turn when the main URL fails


@dataclass(frozen=True)
class DataSet:
    archives: tuple[Archive, ...]
    note: str = ""
    after: tuple[str, ...] = field(default_factory=tuple)  # post-steps ("resize-youtube")


_DRIVE = "https://drive.google.com/uc?id="

#: The official archives, and the Google Drive copies listed by the original's download scripts.
#: No sha256 is published for them, so the archives are only checked to be valid zip / tar files.
DATASETS: dict[str, DataSet] = {
    "davis": DataSet(
        archives=(
            Archive("DAVIS-2017-trainval-480p.zip",
                    "https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-trainval-480p.zip",
                    target="trainval", strip="DAVIS", mirrors=(_DRIVE + "1kiaxrX_4GuW6NmiVuKGSGVoKGWjOdp6d",)),
            Archive("DAVIS-2017-test-dev-480p.zip",
                    "https://data.vision.ee.ethz.ch/csergi/share/davis/DAVIS-2017-test-dev-480p.zip",
                    target="test-dev", strip="DAVIS", mirrors=(_DRIVE + "1fmkxU2v9cQwyb62Tj1xFDdh2p4kDsUzD",)),
        ),
        note="DAVIS 2017 (https://davischallenge.org); the official ETH archives, with the original's "
             "Google Drive copies as fallback",
    ),
    "youtube": DataSet(
        archives=(
            Archive("youtube-train.zip", _DRIVE + "13Eqw0gVK-AO5B-cqvJ203mZ2vzWck9s4"),
            Archive("youtube-valid.zip", _DRIVE + "1o586Wjya-f2ohxYf9C1RlRH-gkrzGS8t"),
            Archive("youtube-valid-all-frames.zip", _DRIVE + "1rWQzZcMskgpEQOZdJPJ7eTmLCBEIIpEN",
                    target="all_frames"),
        ),
        note="YouTube-VOS 2019 (https://youtube-vos.org) as redistributed on Google Drive by the original "
             "authors; the official copy needs a CodaLab account",
        after=("resize-youtube",),
    ),
    "static": DataSet(
        archives=(Archive("static_data.zip", _DRIVE + "1wUJq3HcLdN-z1t4CsUhjeZ9BVDb9YKLd"),),
        note="FSS-1000, DUTS, ECSSD, BIG, HRSOD as pre-processed by the original authors (Google Drive); "
             "read and respect each data set's license",
    ),
    "bl30k": DataSet(
        archives=tuple(Archive(f"BL30K_{part}.tar", None) for part in "abcdef"),
        note="BL30K's Google Drive links are no longer available; it is distributed at "
             "https://doi.org/10.13012/B2IDB-1702934_V1 (about 700 GB)",
    ),
}


# --------------------------------------------------------------------------------------------------
# Download and extraction
# --------------------------------------------------------------------------------------------------


def _check_archive(path: Path) -> None:
    if not (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
        raise UserError(f"{path.name} is not a zip or tar archive")


def _extract(archive_path: Path, archive: Archive, root: Path) -> None:
    tmp = root / STATE_DIR / f"extract-{archive.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive_path):
            with zipfile.ZipFile(archive_path) as zf:
                zf.extractall(tmp)  # member names are sanitised (no absolute paths, no "..")
        else:
            with tarfile.open(archive_path) as tf:
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python < 3.11.4
                    tf.extractall(tmp)
        content = tmp
        if archive.strip is not None:
            content = tmp / archive.strip
            if not content.is_dir():
                found = sorted(p.name for p in tmp.iterdir())
                raise DataError(f"{archive_path}: expected a top-level folder {archive.strip}/ in the archive, "
                                f"found {found[:5]}; the file may be a different version")
        merge_into(content, root / archive.target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive_path}: cannot extract ({exc}); delete it and run the command again") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(archive: Archive, dest: Path, mirror: str | None, progress: bool, note: str) -> None:
    from stcn.utils.download import DownloadError, download_file

    if mirror:
        urls = [mirror.rstrip("/") + "/" + archive.name]
    else:
        urls = [u for u in (archive.url, *archive.mirrors) if u]
    if not urls:
        raise DataError(f"{archive.name}: no download link is known ({note}); download it by hand and save it as "
                        f"{dest}, or pass --mirror URL of a folder holding it, then run the command again")
    error: DownloadError | None = None
    for i, url in enumerate(urls):
        try:
            download_file(url, dest, sha256=archive.sha256, progress=progress, resume=i == 0, check=_check_archive,
                          desc=archive.name)
            return
        except DownloadError as exc:
            error = exc
            if i + 1 < len(urls):
                print(f"  {exc}; trying {urls[i + 1]}", file=sys.stderr)
    assert error is not None
    raise error


def download_dataset(name: str, root: str | os.PathLike, *, mirror: str | None = None, keep_archives: bool = False,
                     progress: bool = True, resize: bool = True, log=print) -> Path:
    """Download and extract data set ``name`` (a :data:`DATASETS` key) into ``root``; returns root."""
    if name not in DATASETS:
        raise UserError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    spec = DATASETS[name]
    root = Path(root).expanduser()
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    for archive in spec.archives:
        done = state / f"{archive.name}.done"
        if done.exists():
            log(f"{name}: {archive.name} already in place")
            continue
        path = state / archive.name
        if path.is_file():
            log(f"{name}: using {path}")
        else:
            log(f"{name}: downloading {archive.name}")
            _fetch(archive, path, mirror, progress, spec.note)
        log(f"{name}: extracting {archive.name} into {root / archive.target}")
        _extract(path, archive, root)
        done.write_text("ok\n")
        if not keep_archives:
            path.unlink(missing_ok=True)
    if "resize-youtube" in spec.after and resize:
        train = root / "train"
        if (train / "JPEGImages").is_dir():
            log(f"{name}: resizing {train} to 480p in {root / 'train_480p'}")
            resize_youtube(train, root / "train_480p", progress=progress)
    log(f"{name}: ready in {root}")
    return root


# --------------------------------------------------------------------------------------------------
# YouTube-VOS to 480p
# --------------------------------------------------------------------------------------------------


def _resize_folder(src: Path, dst: Path, size: int, masks: bool, quality: int) -> None:
    """Resize every image of ``src`` so its shorter side is ``size`` into ``dst`` (written aside, then
    renamed into place)."""
    from PIL import Image

    with atomic_folder(dst) as tmp:
        for name in sorted(os.listdir(src)):
            with Image.open(src / name) as im:
                im.load()
                w, h = im.size
                ratio = size / min(w, h)
                new = (int(w * ratio), int(h * ratio))
                if masks:
                    if im.mode not in ("P", "L"):
                        raise DataError(f"{src / name}: masks must be palette or greyscale PNGs, got {im.mode}")
                    im.resize(new, Image.Resampling.NEAREST).save(tmp / name)
                else:
                    out = im.convert("RGB").resize(new, Image.Resampling.BICUBIC)
                    out.save(tmp / name, quality=quality)


def _resize_video(job: tuple[Path, Path, str, int, int]) -> str:
    src_root, dst_root, video, size, quality = job
    for folder, masks in (("Annotations", True), ("JPEGImages", False)):
        src, dst = src_root / folder / video, dst_root / folder / video
        if src.is_dir() and not dst.is_dir():
            _resize_folder(src, dst, size, masks, quality)
    return video


def resize_youtube(src: str | os.PathLike, dst: str | os.PathLike, *, size: int = 480, workers: int | None = None,
                   quality: int = 75, progress: bool = True) -> Path:
    """Resize a YouTube-VOS split (``src/{JPEGImages,Annotations}/<video>``) so that every frame's shorter
    side is ``size`` pixels: images bicubic (JPEG quality 75, PIL's default, as the original's
    scripts/resize_youtube.py), masks nearest (palette kept). Each video folder is written aside and
    renamed into place; finished videos are skipped, so an interrupted run continues."""
    from tqdm import tqdm

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not (src / "JPEGImages").is_dir():
        raise DataError(f"{src}: no JPEGImages folder (expected a YouTube-VOS split: JPEGImages/<video>/*.jpg and "
                        "Annotations/<video>/*.png)")
    videos = sorted(set(os.listdir(src / "JPEGImages")) | set(
        os.listdir(src / "Annotations") if (src / "Annotations").is_dir() else []))
    videos = [v for v in videos if not v.startswith(".")]
    for folder in ("JPEGImages", "Annotations"):
        (dst / folder).mkdir(parents=True, exist_ok=True)
    jobs = [(src, dst, v, size, quality) for v in videos]
    workers = workers if workers is not None else min(8, os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc="resize", disable=not progress, file=sys.stderr)
    if workers > 1 and len(jobs) > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for _ in pool.imap_unordered(_resize_video, jobs):
                bar.update(1)
    else:
        for job in jobs:
            _resize_video(job)
            bar.update(1)
    bar.close()
    meta = src / "meta.json"
    if meta.is_file():
        shutil.copyfile(meta, dst / "meta.json")
    return dst
