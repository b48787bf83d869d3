"""The pre-label loop: label images with the current model so that a person only corrects them.

``facemark annotate IMAGES... --out labels.xml`` writes a dlib imglab XML file (open it in imglab,
move the points that are wrong, train on it with ``facemark data prepare``); ``--pts`` writes a
300-W ``.pts`` beside each image instead. Faces are written lowest :attr:`Face.quality` first
(faces without a quality estimate, from a model without a calibration, come first too), so the
ones most likely to need correcting are at the top. Both files read back through
:func:`~facemark.data.formats.read_dlib_xml` and :func:`~facemark.data.formats.read_pts` to
within the writers' precision (whole pixels for dlib XML, which dlib requires; 3 decimals for ``.pts``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from facemark.data.formats.dlib_xml import write_dlib_xml
from facemark.data.formats.pts import write_pts
from facemark.data.record import FaceSample


def _quality_key(item) -> float:
    quality = item[1].quality
    return -1.0 if quality is None else float(quality)


def annotate(images: list[str | Path], landmarker, out: str | Path | None = None, pts: bool = False,
             overwrite: bool = False, max_faces: int | None = None) -> dict:
    """Detect faces and points in ``images`` and write them as labels.

    ``out``: a dlib XML file with every face, lowest quality first. ``pts``: ``<image stem>.pts``
    beside each image with its highest-scoring face (a ``.pts`` holds one face; the other faces are
    counted in ``"extra_faces"``); existing ``.pts`` files (perhaps corrected by hand) are kept
    unless ``overwrite``. Returns ``{"faces": [(image, quality), ...] in written order, "written":
    [files], "no_face": [images], "kept": [existing .pts]}``.
    """
    if (out is None) == (not pts):
        raise ValueError("annotate writes either a dlib XML file (--out labels.xml) or .pts files (--pts), one of them")
    found, no_face, extra = [], [], 0
    for image in images:
        faces = landmarker.detect(str(image), max_faces=max_faces)
        if not faces:
            no_face.append(str(image))
        for face in faces[:1] if pts else faces:
            found.append((Path(image), face))
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
    else:
        samples = [FaceSample(str(image), np.asarray(face.points, dtype=np.float32),
                              box=tuple(float(v) for v in face.box)) for image, face in found]
        write_dlib_xml(out, samples)
        written.append(str(out))
    return {"faces": [(str(image), face.quality) for image, face in found], "written": written,
            "no_face": no_face, "kept": kept, "extra_faces": extra}
