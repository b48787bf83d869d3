"""Point schemes: how many points, their names, the mirror permutation and the NME normaliser.

"Right" means the subject's right (image left), as in 300-W. ``flip_perm[i]`` is the index of the
point that point ``i`` becomes after a horizontal flip of the image.

It also holds the one YAML reader (:func:`load_yaml`, :func:`parse_yaml`), for scheme files, training
configs (:mod:`facemark.config`) and the tools alike: plain YAML only, no anchors or aliases, so an
alias bomb ("billion laughs") is a one-line error naming the file before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml


@dataclass(frozen=True)
class PointScheme:
    name: str
    num_points: int
    flip_perm: tuple[int, ...]
    outer_eye_corners: tuple[int, int]  # inter-ocular normaliser (subject's right, left)
    right_eye: tuple[int, ...]  # points whose mean is the right pupil
    left_eye: tuple[int, ...]
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # five points (eye centres, nose tip, mouth corners) used for face alignment and pose
    nose_tip: int | None = None
    mouth_corners: tuple[int, int] | None = None
    # point names (from a scheme file; compare=False so schemes equal by geometry alone)
    point_names: tuple[str, ...] = field(default=(), compare=False)
    # names of the ``groups`` drawn as closed outlines (eyes, lips); the others are open polylines
    closed: tuple[str, ...] = field(default=(), compare=False)
    # the scheme file it was read from (load_scheme, the shipped ones too), for messages; empty for spec schemes
    source: str = field(default="", compare=False)
    # head pose (facemark.pose): per point, the 68-point mean-face points it stands for (a point that
    # is the mean of several, such as an eye centre, names them all), None for a point with no
    # counterpart; empty: the scheme file names none (a scheme file's ``pose`` list)
    pose_points: tuple[tuple[int, ...] | None, ...] = field(default=(), compare=False)

    def flip(self, points: np.ndarray, width: float) -> np.ndarray:
        """Mirror ``(..., K, 2)`` pixel points of an image of ``width`` pixels (pixel centres)."""
        flipped = np.array(points, dtype=np.float32, copy=True)[..., self.flip_perm, :]
        flipped[..., 0] = (width - 1) - flipped[..., 0]
        return flipped

    def flip_normalised(self, points: np.ndarray) -> np.ndarray:
        """Mirror ``(..., K, 2)`` points in 0..1 crop coordinates."""
        flipped = np.array(points, dtype=np.float32, copy=True)[..., self.flip_perm, :]
        flipped[..., 0] = 1.0 - flipped[..., 0]
        return flipped

    def pupils(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        points = np.asarray(points)
        return points[..., self.right_eye, :].mean(axis=-2), points[..., self.left_eye, :].mean(axis=-2)


class SchemeError(ValueError):
    """A scheme file that does not describe a valid point scheme (one line: file, key, problem)."""


# --------------------------------------------------------------------------- the one YAML reader

#: the largest YAML file read: scheme files and training configs are a few kB (a 98-point scheme ~3 kB)
MAX_YAML_BYTES = 1 << 20
MAX_SCHEME_BYTES = MAX_YAML_BYTES


class YAMLFileError(ValueError):
    """A YAML file (or text) that cannot be read or is refused, in one line naming it."""


class _PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors and aliases (``&a`` / ``*a``, merge keys with them): refused
    at the first one, while parsing, so an alias bomb never expands. Configs and scheme files never
    need them."""

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.MarkedYAMLError(problem="YAML anchors and aliases (& and *) are not accepted",
                                       problem_mark=event.start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str = "YAML"):
    """The plain YAML ``text`` (no anchors or aliases) as Python values; :class:`YAMLFileError`
    ``"<where>: <problem> (line N)"`` in one line otherwise."""
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = " ".join(str(getattr(err, "problem", None) or "not valid YAML").split())
        if "anchors and aliases" not in problem:
            problem = f"not valid YAML: {problem}"
        raise YAMLFileError(f"{where}: {problem}{at}") from None


def load_yaml(path, what: str = "YAML file", max_bytes: int = MAX_YAML_BYTES):
    """The values of the YAML file ``path``: only a regular file (not ``/dev/zero`` or a FIFO) of at
    most ``max_bytes``, plain YAML (:func:`parse_yaml`). Every refusal is one :class:`YAMLFileError`
    line naming the file (``what``: how it is called, "scheme file", "config")."""
    path = Path(path)
    try:
        if not path.is_file():
            raise YAMLFileError(f"{path}: cannot read: {'no such file' if not path.exists() else 'not a regular file'}")
        size = path.stat().st_size
        if size > max_bytes:
            raise YAMLFileError(f"{path}: {size} bytes is too large for a {what} (at most {max_bytes})")
        text = path.read_text()
    except OSError as err:
        raise YAMLFileError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise YAMLFileError(f"{path}: not a text file (not UTF-8)") from None
    return parse_yaml(text, str(path))


#: the shipped scheme files (facemark/assets/schemes/*.yaml)
SCHEME_DIR = Path(__file__).parent / "assets" / "schemes"


def _index(where: str, key: str, value, k: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchemeError(f"{where}: {key}: {value!r} is not a point index")
    if not 0 <= value < k:
        raise SchemeError(f"{where}: {key}: index {value} out of range 0..{k - 1}")
    return value


def _indices(where: str, key: str, value, k: int, length: int | None = None, min_len: int = 1) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise SchemeError(f"{where}: {key}: expected a list of point indices, got {value!r}")
    if length is not None and len(value) != length:
        raise SchemeError(f"{where}: {key}: expected {length} point indices, got {len(value)}")
    if len(value) < min_len:
        raise SchemeError(f"{where}: {key}: expected at least {min_len} point index(es)")
    return tuple(_index(where, key, v, k) for v in value)


_KEYS = {"name", "points", "flip", "normalise", "nose_tip", "mouth_corners", "lines", "closed_lines", "pose"}
#: the point count of the 3D mean face a scheme's ``pose`` list refers to (facemark/assets/mean_face_68.json)
POSE_REFERENCE_POINTS = 68


def _pose_points(where: str, value, k: int) -> tuple[tuple[int, ...] | None, ...]:
    """A scheme file's ``pose`` list: K entries, each a 68-point index, a list of them (the point is
    their mean) or null (no counterpart)."""
    if not isinstance(value, list) or len(value) != k:
        raise SchemeError(f"{where}: pose: expected a list of {k} entries (one per point: a 68-point index, a list "
                          f"of them, or null), got {value if not isinstance(value, list) else f'{len(value)} entries'}")
    out = []
    for i, entry in enumerate(value):
        if entry is None:
            out.append(None)
        elif isinstance(entry, list):
            out.append(_indices(where, f"pose[{i}]", entry, POSE_REFERENCE_POINTS))
        else:
            out.append((_index(where, f"pose[{i}]", entry, POSE_REFERENCE_POINTS),))
    return tuple(out)


def scheme_from_dict(data, where: str = "<scheme>") -> PointScheme:
    """A :class:`PointScheme` from the mapping of a scheme file, validated; ``where`` names it in errors.

    Keys: ``name``; ``points`` (unique point names, K of them); ``flip`` (the left-right flip
    permutation, K indices, an involution); ``normalise`` with ``outer_eye_corners`` (the NME point
    pair) and optionally ``right_eye`` / ``left_eye`` (groups whose means are the pupils; default the
    two corner points); optional ``nose_tip`` and ``mouth_corners`` (for alignment and 5-point
    conversion); ``lines`` (name -> point indices drawn as a polyline; also the per-group NME groups);
    ``closed_lines`` (names of ``lines`` drawn as closed outlines, such as the eyes and lips);
    ``pose`` (head pose, :mod:`facemark.pose`: for each point, the point of the 68-point scheme it
    is, a list of 68-point indices whose mean it is (an eye centre), or null).
    """
    if not isinstance(data, dict):
        raise SchemeError(f"{where}: expected a mapping of scheme keys, got {type(data).__name__}")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise SchemeError(f"{where}: {unknown[0]}: unknown key (known: {', '.join(sorted(_KEYS))})")
    for key in ("name", "points", "flip", "normalise"):
        if key not in data:
            raise SchemeError(f"{where}: {key}: missing")
    name = data["name"]
    if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name):
        raise SchemeError(f"{where}: name: expected a non-empty string, got {name!r}")
    names = data["points"]
    if not isinstance(names, list) or not names:
        raise SchemeError(f"{where}: points: expected a non-empty list of point names")
    names = [str(n) for n in names]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise SchemeError(f"{where}: points: name {n!r} is not unique")
        seen.add(n)
    k = len(names)
    flip = _indices(where, "flip", data["flip"], k, length=k)
    for i, j in enumerate(flip):
        if flip[j] != i:
            raise SchemeError(f"{where}: flip: not an involution of 0..{k - 1}: {i} -> {j} but {j} -> {flip[j]}")
    norm = data["normalise"]
    if not isinstance(norm, dict):
        raise SchemeError(f"{where}: normalise: expected a mapping with outer_eye_corners (and right_eye, left_eye)")
    extra = sorted(set(norm) - {"outer_eye_corners", "right_eye", "left_eye"})
    if extra:
        raise SchemeError(f"{where}: normalise.{extra[0]}: unknown key (known: outer_eye_corners, right_eye, left_eye)")
    if "outer_eye_corners" not in norm:
        raise SchemeError(f"{where}: normalise.outer_eye_corners: missing")
    corners = _indices(where, "normalise.outer_eye_corners", norm["outer_eye_corners"], k, length=2)
    if corners[0] == corners[1]:
        raise SchemeError(f"{where}: normalise.outer_eye_corners: the two points must differ, got {list(corners)}")
    right = _indices(where, "normalise.right_eye", norm.get("right_eye", [corners[0]]), k)
    left = _indices(where, "normalise.left_eye", norm.get("left_eye", [corners[1]]), k)
    nose = data.get("nose_tip")
    nose = None if nose is None else _index(where, "nose_tip", nose, k)
    mouth = data.get("mouth_corners")
    mouth = None if mouth is None else _indices(where, "mouth_corners", mouth, k, length=2)
    lines = data.get("lines") or {}
    if not isinstance(lines, dict):
        raise SchemeError(f"{where}: lines: expected a mapping of name -> point indices")
    groups = {str(g): _indices(where, f"lines.{g}", idx, k) for g, idx in lines.items()}
    closed = data.get("closed_lines") or []
    if not isinstance(closed, list):
        raise SchemeError(f"{where}: closed_lines: expected a list of line names")
    for g in closed:
        if str(g) not in groups:
            raise SchemeError(f"{where}: closed_lines: {g!r} is not one of the lines ({', '.join(groups) or 'none'})")
    pose = () if data.get("pose") is None else _pose_points(where, data["pose"], k)
    return PointScheme(str(name), k, flip, corners, right, left, groups, nose_tip=nose, mouth_corners=mouth,
                       point_names=tuple(names), closed=tuple(str(g) for g in closed), pose_points=pose)


def load_scheme(path) -> PointScheme:
    """Read and validate a scheme YAML file; raises :class:`SchemeError` with a one-line message naming
    the file and the key. Only a regular file of at most :data:`MAX_SCHEME_BYTES` is read (not
    ``/dev/zero`` or a FIFO)."""
    path = Path(path)
    try:
        data = load_yaml(path, "scheme file", MAX_SCHEME_BYTES)
    except YAMLFileError as err:
        raise SchemeError(str(err)) from None
    return replace(scheme_from_dict(data, str(path)), source=str(path))


def scheme_to_dict(scheme: PointScheme) -> dict:
    """The mapping of a scheme file for ``scheme`` (inverse of :func:`scheme_from_dict`)."""
    names = list(scheme.point_names) or [f"p{i}" for i in range(scheme.num_points)]
    data = {
        "name": scheme.name,
        "points": names,
        "flip": list(scheme.flip_perm),
        "normalise": {"outer_eye_corners": list(scheme.outer_eye_corners),
                      "right_eye": list(scheme.right_eye), "left_eye": list(scheme.left_eye)},
    }
    if scheme.nose_tip is not None:
        data["nose_tip"] = scheme.nose_tip
    if scheme.mouth_corners is not None:
        data["mouth_corners"] = list(scheme.mouth_corners)
    data["lines"] = {g: list(idx) for g, idx in scheme.groups.items()}
    if scheme.closed:
        data["closed_lines"] = list(scheme.closed)
    if scheme.pose_points:
        data["pose"] = [None if p is None else p[0] if len(p) == 1 else list(p) for p in scheme.pose_points]
    return data


def _builtin_schemes() -> dict[int, PointScheme]:
    order = ["ibug68.yaml", "wflw98.yaml", "cofw29.yaml", "five.yaml"]
    files = sorted(SCHEME_DIR.glob("*.yaml"), key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    schemes = [load_scheme(p) for p in files]
    return {s.num_points: s for s in schemes}


SCHEMES: dict[int, PointScheme] = _builtin_schemes()


def spec_value(scheme: PointScheme) -> str | dict:
    """How a model spec or a store index records ``scheme``: a built-in one by its name (``"68"``),
    any other as its full mapping (:func:`scheme_to_dict`), so the file describes it by itself."""
    builtin = SCHEMES.get(scheme.num_points)
    if builtin is not None and builtin == scheme and builtin.name == scheme.name:
        return builtin.name
    return scheme_to_dict(scheme)


#: the built-in schemes by name ("68", "98", "29", "5")
BUILTIN_NAMES: dict[str, PointScheme] = {s.name: s for s in SCHEMES.values()}


def scheme_from_spec(value, num_points: int, where: str) -> PointScheme:
    """The scheme a model spec or a store index records (:func:`spec_value`): a built-in scheme's
    name or point count, or a scheme's full mapping; None: the built-in scheme of ``num_points``.
    Never a path: a string in a file is not a file to read. :class:`SchemeError` naming ``where``
    otherwise, or when the scheme's point count is not ``num_points``."""
    if value is None:
        out = get_scheme(num_points)
    elif isinstance(value, dict):
        out = scheme_from_dict(value, where)
    elif isinstance(value, (str, int)) and not isinstance(value, bool) and str(value) in BUILTIN_NAMES:
        out = BUILTIN_NAMES[str(value)]
    else:
        shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
        raise SchemeError(f"{where} = {shown}: expected a built-in scheme name ({', '.join(BUILTIN_NAMES)}) "
                          "or a scheme mapping (a model file or store carries its scheme, never a path to one)")
    if out.num_points != int(num_points):
        raise SchemeError(f"{where}: scheme {out.name!r} has {out.num_points} points, the model/data has {num_points}")
    return out


def resolve_scheme(scheme, num_points: int | None = None) -> PointScheme:
    """A scheme from what a user or a spec gives: a :class:`PointScheme`, a built-in name/point count
    (``"68"``, ``5``), a path to a YAML file, or a scheme mapping (as stored in a model spec); ``None``
    means the built-in scheme of ``num_points``. Checks the point count when ``num_points`` is given."""
    if scheme is None:
        if num_points is None:
            raise ValueError("no scheme and no point count")
        return get_scheme(num_points)
    if isinstance(scheme, PointScheme):
        out = scheme
    elif isinstance(scheme, dict):
        out = scheme_from_dict(scheme, "spec scheme")
    elif isinstance(scheme, int) or (isinstance(scheme, str) and scheme.isdigit()):
        out = get_scheme(int(scheme))
    else:
        out = load_scheme(scheme)
    if num_points is not None and out.num_points != int(num_points):
        where = f"{out.source}: " if out.source else ""
        raise SchemeError(f"{where}scheme {out.name!r} has {out.num_points} points, the data/model has {num_points}")
    return out


#: The 5-point tight box from a 68-point tight box, as fractions of the 68-point box's width and
#: height: ``(x0, y0, x1, y1)`` of the five points' box = ``x0_68 + f0 * w68`` ... (medians over the
#: 1621 300w-lite training faces, fitted by facemark.calibrate.fit_five_box via
#: ``python -m bench.fit_five_box``). Detector calibrations give the 68-point box; a 5-point model's
#: ``detect`` maps it with this before cropping.
FIVE_FROM_68_BOX = (0.2645, 0.1730, 0.7419, 0.6857)


def five_from_68_box(box) -> tuple[float, float, float, float]:
    """The expected tight box of the five points of a face whose 68-point tight box is ``box``."""
    x0, y0, x1, y1 = (float(v) for v in box)
    f = FIVE_FROM_68_BOX
    return x0 + f[0] * (x1 - x0), y0 + f[1] * (y1 - y0), x0 + f[2] * (x1 - x0), y0 + f[3] * (y1 - y0)


def box_68_from_five(box) -> tuple[float, float, float, float]:
    """The expected tight 68-point box of a face whose five points' tight box is ``box`` (the exact
    inverse of :func:`five_from_68_box`)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    f = FIVE_FROM_68_BOX
    w, h = (x1 - x0) / (f[2] - f[0]), (y1 - y0) / (f[3] - f[1])
    return x0 - f[0] * w, y0 - f[1] * h, x0 - f[0] * w + w, y0 - f[1] * h + h


def to_five(points: np.ndarray) -> np.ndarray:
    """``(..., K, 2)`` points of a 68/98/29-point scheme as ``(..., 5, 2)`` points of the 5-point scheme:
    eye centre = mean of the eye's points (68: 36-41 and 42-47), nose tip (68: 30), mouth corners
    (68: 48 and 54). Five points are returned as they are. A missing (NaN) eye point makes its centre NaN."""
    points = np.asarray(points, dtype=np.float32)
    scheme = get_scheme(points.shape[-2])
    if scheme.num_points == 5:
        return points.copy()
    if scheme.nose_tip is None or scheme.mouth_corners is None:
        raise ValueError(f"scheme {scheme.name!r} has no nose tip / mouth corners: no 5-point mapping")
    right, left = scheme.pupils(points)
    return np.stack([right, left, points[..., scheme.nose_tip, :], points[..., scheme.mouth_corners[0], :],
                     points[..., scheme.mouth_corners[1], :]], axis=-2).astype(np.float32)


#: WFLW's 98 points that correspond to the iBUG 68 (the mapping the literature uses: every second
#: jaw point, the upper brow contours, the nose, the eye contours without their midpoints, the mouth)
WFLW98_TO_68 = (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 33, 34, 35, 36, 37, 42, 43, 44,
                45, 46, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 63, 64, 65, 67, 68, 69, 71, 72, 73, 75, 76, 77,
                78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95)


def to_68(points: np.ndarray) -> np.ndarray:
    """``(..., 98, 2)`` WFLW points as ``(..., 68, 2)`` iBUG points (:data:`WFLW98_TO_68`); 68 stay as they are."""
    points = np.asarray(points, dtype=np.float32)
    if points.shape[-2] == 68:
        return points.copy()
    if points.shape[-2] != 98:
        raise ValueError(f"no 68-point mapping for {points.shape[-2]}-point data (only WFLW's 98)")
    return points[..., list(WFLW98_TO_68), :].copy()


#: ``facemark data convert --to`` targets
CONVERSIONS = {"5pt": to_five, "68pt": to_68}


def get_scheme(num_points: int) -> PointScheme:
    try:
        return SCHEMES[int(num_points)]
    except KeyError:
        raise ValueError(f"no point scheme with {num_points} points; known: {sorted(SCHEMES)}") from None
