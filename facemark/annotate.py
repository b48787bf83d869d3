"""The pre-label loop: label images with the current model so that a person only corrects them.

``facemark annotate IMAGES... --out labels.xml`` writes a dlib imglab XML file (open it in imglab,
move the points that are wrong, train on it with ``facemark data prepare``); ``--pts`` writes a
300-W ``.pts`` beside each image instead. Faces are written lowest :attr:`Face.quality` first
(faces without a quality estimate, from a model without a calibration, come first too), so the
ones most likely to need correcting are at the top. Both files read back through
:func:`~facemark.data.formats.read_dlib_xml` and :func:`~facemark.data.formats.read_pts` to
within the writers' precision (whole pixels for dlib XML, which dlib requires; 3 decimals for ``.pts``).

Inputs are expanded as ``facemark predict`` expands them (:func:`facemark.inputs.input_files`:
files, and folders searched recursively for images). An image that cannot be read is skipped and
listed; the others are still labelled. Existing labels (perhaps corrected by hand) are never
replaced without ``overwrite``: ``.pts`` files are kept, an existing XML file is refused. Two images
with one stem in one folder (``a.jpg``, ``a.png``) would share ``a.pts``: it goes to the image the
dataset reader pairs with it (:func:`~facemark.data.formats.find_image`), the other is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemark.data.formats.dlib_xml import write_dlib_xml
from facemark.data.formats.pts import find_image, write_pts
from facemark.data.record import DataError, FaceSample
from facemark.images import IMAGE_SUFFIXES
from facemark.inputs import input_files


def _quality_key(item) -> float:
    quality = item[1].quality
    return -1.0 if quality is None else float(quality)


def annotate(images: list[str | Path], landmarker, out: str | Path | None = None, pts: bool = False,
             overwrite: bool = False, max_faces: int | None = None) -> dict:
    """Detect faces and points in ``images`` (files and folders) and write them as labels.

    ``out``: a dlib XML file with every face, lowest quality first (an existing file is refused
    unless ``overwrite``). ``pts``: ``<image stem>.pts`` beside each image with its highest-scoring
    face (a ``.pts`` holds one face; the other faces are counted in ``"extra_faces"``); existing
    ``.pts`` files (perhaps corrected by hand) are kept unless ``overwrite``. Returns ``{"faces":
    [(image, quality), ...] in written order, "written": [files], "no_face": [images], "kept":
    [existing .pts], "skipped": [{"path", "reason"}], "images": images labelled}``.
    """
    if (out is None) == (not pts):
        raise ValueError("annotate writes either a dlib XML file (--out labels.xml) or .pts files (--pts), one of them")
    if out is not None and Path(out).is_dir():
        raise ValueError(f"{out}: --out names a folder; give the XML file to write, e.g. labels.xml")
    if out is not None and Path(out).exists() and not overwrite:
        raise ValueError(f"{out}: exists (perhaps corrected by hand); --overwrite replaces it")
    files, skipped = input_files(images, IMAGE_SUFFIXES)
    if not files and not skipped:
        raise ValueError(f"no image files in {', '.join(map(str, images))}: nothing to do")
    if pts:
        files = [(image, rel) for image, rel in files if _pts_owner(image, skipped)]
    found, no_face, extra, done = [], [], 0, 0
    for image, _ in files:
        try:
            faces = landmarker.detect(str(image), max_faces=max_faces)
        except (ValueError, OSError) as err:  # an unreadable image (ImageError, a missing file): skip and list it
            skipped.append({"path": str(image), "reason": str(err)})
            continue
        done += 1
        if not faces:
            no_face.append(str(image))
        for face in faces[:1] if pts else faces:
            found.append((image, face))
        extra += max(0, len(faces) - 1) if pts else 0
    found.sort(key=_quality_key)  # stable: equal qualities keep image order
    written, kept = [], []
    if pts:
        for image, face in found:
            target = image.with_suffix(".pts")
            if target.exists() and not overwrite:
                kept.append(str(target))
                continue
            write_pts(target, np.asarray(face.points, dtype=np.float64))
            written.append(str(target))
    elif done:
        samples = [FaceSample(str(image), np.asarray(face.points, dtype=np.float32),
                              box=tuple(float(v) for v in face.box)) for image, face in found]
        write_dlib_xml(out, samples)
        written.append(str(out))
    return {"faces": [(str(image), face.quality) for image, face in found], "written": written,
            "no_face": no_face, "kept": kept, "extra_faces": extra, "skipped": skipped, "images": done}


def _pts_owner(image: Path, skipped: list[dict]) -> bool:
    """Whether ``image`` is the one the dataset reader pairs with its ``.pts`` (else it is listed in ``skipped``)."""
    target = image.with_suffix(".pts")
    try:
        paired = find_image(target)
    except DataError as err:
        skipped.append({"path": str(image), "reason": f"{target.name} would not be read back with it ({err.reason})"})
        return False
    if paired.resolve() != image.resolve():
        skipped.append({"path": str(image), "reason": f"{paired.name} beside it gets {target.name} (the image the "
                                                      "dataset reader pairs with it); label one of the two at a time"})
        return False
    return True
