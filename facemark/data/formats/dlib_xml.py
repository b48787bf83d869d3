"""dlib imglab XML datasets (the training input of dlib's shape predictor).

Files are parsed with ``defusedxml``, which refuses document type declarations, entities and
external references, so billion-laughs and external-entity files are refused whatever the limits
of the installed expat; dlib's own files use none of these.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml
import defusedxml.ElementTree
import numpy as np

from facemark.data.formats.guard import reader
from facemark.data.record import DataError, FaceSample, check_points
from facemark.files import write_atomic


@reader
def read_dlib_xml(path: str | Path) -> list[FaceSample]:
    """One sample per ``<box>`` with parts; boxes marked ``ignore`` or without parts are skipped.

    dlib boxes are inclusive pixel ranges, but ``FaceSample.box`` is taken as
    ``(left, top, left + width, top + height)``; part names must be the indices ``0..N-1``.
    """
    path = Path(path)
    try:
        root = defusedxml.ElementTree.parse(path, forbid_dtd=True).getroot()
    except ET.ParseError as e:
        raise DataError(path, f"malformed XML: {e}", e.position[0]) from None
    except defusedxml.DefusedXmlException as e:  # DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
        raise DataError(path, f"refused ({type(e).__name__}): a dlib XML file needs no document type "
                              "declaration, entities or external references") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from None
    if root.tag != "dataset":
        raise DataError(path, f"root element is <{root.tag}>, expected <dataset>")
    samples = []
    for image in root.iterfind("images/image"):
        file = image.get("file")
        if not file:
            raise DataError(path, "<image> without a file attribute")
        image_path = path.parent / file
        if not image_path.is_file():
            raise DataError(path, f"image not found: {file}")
        for k, box in enumerate(image.iterfind("box"), 1):
            if box.get("ignore", "0").strip() not in ("0", "") or box.find("part") is None:
                continue
            where = f"image {file!r}, box {k}"
            left, top, width, height = (_number(path, box, a, where) for a in ("left", "top", "width", "height"))
            samples.append(FaceSample(
                str(image_path), _parts(path, box, where), dataset=path.stem,
                sample_id=f"{Path(file).with_suffix('').as_posix()}_{k}",
                box=(left, top, left + width, top + height),
            ))
    return samples


def _number(path: Path, element: ET.Element, attribute: str, where: str) -> float:
    value = element.get(attribute)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(path, f"{where}: <{element.tag}> {attribute}={value!r} is not a number") from None
    if not np.isfinite(number):
        raise DataError(path, f"{where}: <{element.tag}> {attribute} is {value}")
    return number


def _parts(path: Path, box: ET.Element, where: str) -> np.ndarray:
    points = {}
    for part in box.iterfind("part"):
        name = part.get("name", "")
        if not name.strip().isdecimal():
            raise DataError(path, f"{where}: part name {name!r} is not an index")
        if int(name) in points:
            raise DataError(path, f"{where}: part {name!r} appears twice")
        points[int(name)] = (_number(path, part, "x", where), _number(path, part, "y", where))
    if sorted(points) != list(range(len(points))):
        raise DataError(path, f"{where}: part indices are not 0..{len(points) - 1}")
    return check_points([points[i] for i in range(len(points))], path)


def write_dlib_xml(path: str | Path, samples: list[FaceSample], integer: bool = True) -> None:
    """Write samples grouped by image, image paths relative to the XML's folder.

    dlib parses every coordinate as an integer and rejects ``12.5``, so by default points and
    boxes are rounded; ``integer=False`` keeps 3 decimals for files only this package reads.
    A sample without a box gets its points' bounding box.
    """
    path = Path(path)
    fmt = (lambda v: str(int(round(v)))) if integer else (lambda v: f"{v:.3f}")
    root = ET.Element("dataset")
    images_el = ET.SubElement(root, "images")
    by_image: dict[str, ET.Element] = {}
    for sample in samples:
        points = np.asarray(check_points(sample.points, sample.image_path), dtype=np.float64)
        file = Path(os.path.relpath(sample.image_path, path.parent)).as_posix()
        if file not in by_image:
            by_image[file] = ET.SubElement(images_el, "image", file=file)
        x0, y0, x1, y1 = sample.box if sample.box is not None else (*points.min(0), *points.max(0))
        box = ET.SubElement(by_image[file], "box", top=fmt(y0), left=fmt(x0), width=fmt(x1 - x0), height=fmt(y1 - y0))
        digits = max(2, len(str(len(points) - 1)))
        for i, (x, y) in enumerate(points):
            ET.SubElement(box, "part", name=f"{i:0{digits}d}", x=fmt(x), y=fmt(y))
    ET.indent(root)
    write_atomic(path, ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n")
