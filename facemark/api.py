"""The public API: ``Landmarker().detect(image)`` and ``Landmarker().predict(image, box)``.

Everything else (the CLI, video, the HTTP service, evaluation) calls these two methods or their
batched forms, so the crop rule, the model's input and the point convention live in one path::

    import facemark
    lm = facemark.Landmarker()                  # shipped default model, ONNX Runtime on the CPU
    faces = lm.detect("photo.jpg")              # [Face(box, score, points (68, 2)), ...]
    points = lm.predict(image_bgr, (x0, y0, x1, y1))   # tight landmark-style box -> (68, 2)
    faces = lm.detect(image, boxes=[box], pose=True, aligned=True)   # given boxes, head pose, chips

The Landmarker owns every per-face output (:class:`Face`: points, point scores and fit quality
(:mod:`facemark.quality`), and pose and the aligned chip when asked; :meth:`Face.to_dict` is their
one JSON form): ``facemark predict`` only writes files and the HTTP service only speaks HTTP. Points are in original-image pixels, 0-based pixel centres (see :mod:`facemark.geometry`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from facemark.align import align_face
from facemark.detectors import DEFAULT_DETECTOR, Detector, get_detector
from facemark.detectors.given import GivenBoxes
from facemark.face import Face
from facemark.files import load_image
from facemark.geometry import (
    Box, CropRule, box_centre, box_from_points, crop_box_from_box, crop_image, from_crop, iou, turned_box, upright_turn,
)
from facemark.pose import PoseError, head_pose
from facemark.quality import QualityCalibration, raw_point_features
from facemark.runtime import open_model
from facemark.schemes import five_from_68_box, get_scheme, resolve_scheme
from facemark.track import VideoTracker

ALIGNED_SIZE = 112  # the ArcFace template's size
#: detect's refine pass (and tracking) crops a face turned upright when its eye line is tilted by
#: more than this many degrees. 0: every face. Measured (bench_end_to_end, bench_video): against
#: 20° it lowered end-to-end NME 3.33 -> 3.31 % and video NME 3.68 -> 3.61 %, and it avoids the
#: flicker of faces crossing a threshold (raw NMF 0.634 % at 20°, 0.562 % at 0)
ROLL_ALIGN = 0.0
#: a face placed from a detector's keypoints keeps its one pass when the box its points give overlaps
#: the keypoints' box this much and the two rolls agree within 5 degrees (else it is re-cut from its
#: points and predicted again; Landmarker.refine_iou). 0: only the roll is checked. Measured
#: (bench_end_to_end, split-trained twin): an IoU check of 0.9 re-cut most faces for 3.41 against
#: 3.42 % end to end, at 1.3x the time per photo
REFINE_IOU = 0.0
#: detect drops a face the detector found when its fit quality (Face.quality) is below this: hair,
#: hands and background patches that a detector takes for a face get quality near 0 (chosen by
#: python -m bench.bench_min_quality: it keeps every true face of the validation split)
MIN_QUALITY = 0.05


def check_min_quality(value) -> float | None:
    """``min_quality`` as a float in 0..1, or None (keep every face); ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"min_quality must be a number in 0..1 (or None to keep every face), got {value!r}")
    return float(value)


def check_max_faces(max_faces) -> int | None:
    """``max_faces`` as an int >= 1, or None (every face); ValueError otherwise (0 or -1 would slice faces away)."""
    if max_faces is None:
        return None
    if isinstance(max_faces, bool) or not hasattr(max_faces, "__index__") or max_faces < 1:
        raise ValueError(f"max_faces must be a whole number >= 1 (or None for every face), got {max_faces!r}")
    return int(max_faces)


class Landmarker:
    """Facial landmarks from images: a model, its crop rule and a face detector.

    ``model``: ``"default"`` (shipped with the package; ``"default-5"``: the shipped 5-point model,
    whose :meth:`predict` takes the tight box of the five points), a checkpoint ``.pt``, an exported
    ``.onnx`` or a classical model (:mod:`facemark.classical`: dlib ERT ``.dat``, LBF ``.lbf.npz``;
    they ignore ``backend``). ``backend``: ``"onnx"`` or ``"torch"``; by default the file's own (an
    ``.onnx`` runs on ONNX Runtime, a ``.pt`` on torch, ``"default"`` on ONNX Runtime when installed).
    A ``.pt`` is never exported on the fly: ``facemark export`` makes the ``.onnx``. ``spec`` is the
    model spec (:mod:`facemark.spec`) read from either file; ``meta`` adds its provenance.
    ``detector``: a detector's name (:func:`facemark.detectors.list_detectors`; default
    :data:`~facemark.detectors.DEFAULT_DETECTOR`, built on first use) or a detector object
    (``get_detector("blazeface", threads=1)``, your own :class:`~facemark.detectors.Detector`).
    ``refine``: in :meth:`detect`, predict once from the detector's calibrated box, then re-crop
    from the box of the predicted points and predict again, so the detector's box convention
    does not leak into the result. ``None`` (the default): only for faces the detector gave no
    keypoints for (a BlazeFace face is cut, box and roll, from its keypoints in one pass,
    :meth:`facemark.detectors.base.Detector.place`); ``True``: every face; ``False``: none. ``flip_test`` (on by default): also predict on the mirrored crop
    and average (test-time flip augmentation: the two crops go through the model as one batch; in
    :meth:`detect` only the final pass is flipped, the first one only places the crop). On the
    validation split it lowers the default model's NME by about 3 % for a second crop through the
    model (``docs/speed.md``).
    ``min_quality``: :meth:`detect` drops detected faces whose fit quality (:attr:`Face.quality`)
    is below it (:data:`MIN_QUALITY` by default; None keeps every face; faces of models without a
    quality calibration and faces of given boxes are always kept).
    """

    def __init__(self, model: str | Path = "default", backend: str | None = None, device: str = "cpu",
                 detector: str | Detector | None = None, refine: bool | None = None, flip_test: bool = True,
                 num_threads: int | None = None, scheme=None, min_quality: float | None = MIN_QUALITY):
        loaded = open_model(model, backend, device, num_threads)
        self.backend, self.model_path, self.spec, self.meta, self._run = (
            loaded.backend, loaded.path, loaded.spec, loaded.meta, loaded.runner)
        self.refine, self.flip_test, self.refine_iou = refine, flip_test, REFINE_IOU
        self.min_quality = check_min_quality(min_quality)
        self._detector_name, self._detector = detector, None
        self.num_points = int(self.meta["num_points"])
        self.input_size = int(self.meta["input_size"])
        self.crop_rule = CropRule(**self.meta["crop"])
        # the point scheme (flip test, pose, alignment): ``scheme`` (a YAML path or PointScheme) overrides
        # the one the model was trained with (its spec); classical models: the point count's
        if scheme is not None:
            self.scheme = resolve_scheme(scheme, self.num_points)
        elif self.spec is not None:
            self.scheme = self.spec.point_scheme
        else:
            self.scheme = get_scheme(self.num_points)
        self.name = loaded.name

    @property
    def detector(self):
        if self._detector is None:
            given = self._detector_name
            self._detector = given if isinstance(given, Detector) else get_detector(given or DEFAULT_DETECTOR)
        return self._detector

    # -- prediction
    def crop_box(self, image_size: tuple[int, int], box: Box) -> Box:
        """The crop box this model uses for a landmark-style ``box`` in an image of ``(w, h)``."""
        return crop_box_from_box(box, image_size, self.crop_rule)

    def crop(self, image, box: Box) -> np.ndarray:
        """The model's input crop, uint8 BGR ``(S, S, 3)``, for the face in the landmark-style ``box``
        (what :meth:`predict_batch` feeds the model; training's crops match it, tests/test_dataset.py)."""
        image = load_image(image)
        height, width = image.shape[:2]
        return crop_image(image, self.crop_box((width, height), tuple(map(float, box))), self.input_size)

    def predict_batch(self, images: Sequence, boxes: Sequence[Sequence[Box]], batch_size: int = 64,
                      flip: bool | None = None, rolls: Sequence[Sequence[float]] | None = None,
                      ) -> list[list[np.ndarray]]:
        """Points for many faces of many images: ``boxes[i]`` are landmark-style boxes in ``images[i]``.

        All crops go through the model together, ``batch_size`` at a time. ``flip``: flip-test
        averaging for this call (default: the Landmarker's ``flip_test``). ``rolls[i][j]``: face ``j``
        is tilted by this many degrees and its box is the face turned upright about the box's
        centre (:meth:`placement`); it is cut turned upright.
        """
        scored = self._predict_scored(images, boxes, batch_size, flip, rolls)
        return [[points for points, _ in image_faces] for image_faces in scored]

    def _predict_scored(self, images: Sequence, boxes: Sequence[Sequence[Box]], batch_size: int = 64,
                        flip: bool | None = None, rolls: Sequence[Sequence[float]] | None = None,
                        ) -> list[list[tuple[np.ndarray, np.ndarray | None]]]:
        """:meth:`predict_batch`'s points of each face with its raw point features ``(K, 3)``
        (:mod:`facemark.quality`; None for models without them); ``rolls`` as there."""
        flip = self.flip_test if flip is None else bool(flip)
        crops = self._cut([load_image(image) for image in images], boxes, rolls)
        if flip:
            normal, mirrored = self._run_crops(crops, batch_size, both=True)
        else:
            normal, mirrored = self._run_crops(crops, batch_size), [[None] * len(c) for c in crops]
        return [[self._finish(n, m) for n, m in zip(image_normal, image_mirrored)]
                for image_normal, image_mirrored in zip(normal, mirrored)]

    def _cut(self, images: list[np.ndarray], boxes, rolls) -> list[list[tuple[Box, np.ndarray | None, np.ndarray]]]:
        """Each face's crop as the model takes it: ``(crop box, turn, uint8 BGR (S, S, 3))``; a tilted
        face (``rolls``) is cut turned upright about its box's centre."""
        out = []
        for i, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
            height, width = image.shape[:2]
            image_rolls = rolls[i] if rolls is not None else [0.0] * len(image_boxes)
            faces = []
            for box, roll in zip(image_boxes, image_rolls, strict=True):
                crop_box = self.crop_box((width, height), tuple(map(float, box)))
                turn = upright_turn(box_centre(box), roll) if roll else None
                faces.append((crop_box, turn, crop_image(image, crop_box, self.input_size, turn)))
            out.append(faces)
        return out

    def _run_crops(self, crops: list[list], batch_size: int = 64, mirror: bool = False,
                   both: bool = False) -> list[list] | tuple[list[list], list[list]]:
        """The model's raw output for each face of :meth:`_cut` (or its mirror image), ``batch_size``
        crops at a time: ``(crop box, turn, normalised points (K, 2), raw features (K, 2) or None)``;
        ``both``: for the crops and their mirror images, in the same batches (one model call)."""
        run = getattr(self._run, "run_with_features", None) or (lambda batch: (self._run(batch), None))
        jobs = [(i, face) for i, faces in enumerate(crops) for face in faces]
        out: list[list] = [[] for _ in crops]
        other: list[list] = [[] for _ in crops]
        step = max(1, batch_size // 2) if both else batch_size
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            batch = np.stack([crop for _, (_, _, crop) in chunk])  # (B, S, S, 3)
            if both:
                batch = np.concatenate([batch, batch[:, :, ::-1]])
            elif mirror:
                batch = batch[:, :, ::-1]
            points, features = run(batch)
            for j, (i, (crop_box, turn, _)) in enumerate(chunk):
                out[i].append((crop_box, turn, points[j], None if features is None else features[j]))
                if both:
                    n = j + len(chunk)
                    other[i].append((crop_box, turn, points[n], None if features is None else features[n]))
        return (out, other) if both else out

    def _finish(self, normal, mirrored=None) -> tuple[np.ndarray, np.ndarray | None]:
        """A face's points in the image and its raw point features ``(K, 3)`` of :mod:`facemark.quality`
        (peak, neighbour spread, flip spread: NaN without flip test) from :meth:`_run_crops`' output
        for its crop and, with flip test, for the mirrored crop (averaged: test-time flip augmentation)."""
        crop_box, turn, points, features = normal
        if mirrored is None:
            spread = np.full(points.shape[0], np.nan)
        else:
            other = self.scheme.flip_normalised(mirrored[2][None])[0]
            spread = np.linalg.norm(points.astype(np.float64) - other, axis=-1)  # (K,) normal vs mirrored
            points = (points + other) / 2
            if features is not None:  # the mirrored crop's features, re-indexed
                features = (features + mirrored[3][list(self.scheme.flip_perm)]) / 2
        scored = None if features is None else raw_point_features(features[None], spread[None])[0]
        return from_crop(points, crop_box, turn), scored

    def predict(self, image, box: Box) -> np.ndarray:
        """``(K, 2)`` points for the face in the tight landmark-style ``box = (x0, y0, x1, y1)``."""
        return self.predict_batch([image], [[box]])[0][0]

    def predict_face(self, image, box: Box, score: float = 1.0) -> Face:
        """:meth:`predict` as a :class:`Face` with ``point_scores`` and ``quality`` (None when the model
        has no calibration); ``score`` is the detector score of ``box`` (1 for a given box)."""
        (points, features), = self._predict_scored([image], [[box]])[0]
        face = Face(tuple(float(v) for v in box), float(score), points)
        self._score_face(face, features)
        return face

    @property
    def quality_calibration(self):
        """The model's :class:`facemark.quality.QualityCalibration`, None when its file has none."""
        return QualityCalibration.from_dict(self.spec.quality if self.spec is not None else None)

    def _score_face(self, face: Face, features: np.ndarray | None) -> None:
        """Fill ``face.point_scores`` and ``face.quality`` from its raw point features ``(K, 3)``."""
        calibration = self.quality_calibration
        if features is None or calibration is None:
            return
        face.point_scores = calibration.point_scores(features[None])[0].astype(np.float32)
        face.quality = float(calibration.quality(features[None], [face.score])[0])

    def detect_batch(self, images: Sequence, max_faces: int | None = None, boxes: Sequence | None = None,
                     pose: bool = False, aligned: bool = False) -> list[list[Face]]:
        """:meth:`detect` for several images; ``boxes[i]`` (when given) are the boxes of ``images[i]``."""
        max_faces = check_max_faces(max_faces)
        images = [load_image(image) for image in images]
        if boxes is None:
            detectors = [self.detector] * len(images)
        else:  # user boxes take the detector path, as a "detector" that returns them
            detectors = [GivenBoxes(list(image_boxes)) for image_boxes in boxes]
            if len(detectors) != len(images):
                raise ValueError(f"got boxes for {len(detectors)} images and {len(images)} images")
        # with a quality floor, every detection is scored first, so a dropped one leaves room for the next
        early = max_faces if self.min_quality is None or boxes is not None else None
        detections = [detector.detect(image)[:early] for detector, image in zip(detectors, images)]
        placed = [[self._place(detector, d, refine=boxes is None) for d in found]
                  for detector, found in zip(detectors, detections)]
        scored = self._passes(images, placed)
        faces = [
            [Face(tuple(float(v) for v in d.box), float(d.score), p) for d, (p, _) in zip(found, image_points)]
            for found, image_points in zip(detections, scored)
        ]
        for image_faces, image_points in zip(faces, scored):
            for face, (_, features) in zip(image_faces, image_points):
                self._score_face(face, features)
        if boxes is None and self.min_quality is not None:  # given boxes are the caller's faces: all kept
            faces = [[f for f in image_faces if f.quality is None or f.quality >= self.min_quality][:max_faces]
                     for image_faces in faces]
        for image, image_faces in zip(images, faces):
            self._add_outputs(image, image_faces, pose, aligned)
        return faces

    def _place(self, detector, detection, refine: bool) -> tuple[Box, float, str]:
        """Where the model first crops a detected face: ``(box in the model's point scheme, of the face
        turned upright; roll; mode)``. Detector boxes and keypoint placements are 68-point landmark
        boxes; a 5-point model takes the five points' box (:data:`facemark.schemes.FIVE_FROM_68_BOX`).
        The mode (:meth:`_passes`): ``"once"`` for given boxes (landmark boxes already: ``refine=False``)
        and with ``Landmarker(refine=False)``; ``"refine"`` with ``refine=True`` and for a detector box
        (its box convention is undone by a second pass); ``"check"`` for a face placed from keypoints."""
        box, roll, from_keypoints = detector.place(detection)
        if self.spec is not None and self.spec.scheme == "5":
            box = five_from_68_box(box)
        if not refine or self.refine is False:
            return box, roll, "once"
        return box, roll, "check" if from_keypoints and self.refine is None else "refine"

    def _passes(self, images: list[np.ndarray], placed: list[list[tuple[Box, float, str]]]) -> list[list[tuple]]:
        """The landmark passes of :meth:`detect` for faces placed by :meth:`_place`: points and raw
        features of each. ``"once"``: one pass, with flip test, where placed. ``"refine"``: a pass
        without flip test only places the crop (:meth:`placement` of its points, the face cut
        upright), then the final pass runs there. ``"check"`` (a face placed from a detector's
        keypoints): the first pass is kept when the placement of its own points agrees with the
        keypoints' (IoU >= :attr:`refine_iou` and rolls within 5 degrees), its mirrored crop then
        completing the flip test, so such a face costs what one flip-tested pass costs; else as ``"refine"``."""
        first = [[k for k, (_, _, mode) in enumerate(p) if mode != "once"] for p in placed]
        out: list[list] = [[None] * len(p) for p in placed]
        kept = []  # (image, face, its crop, its first pass)
        if any(first):
            crops = self._cut(images, [[placed[i][k][0] for k in ks] for i, ks in enumerate(first)],
                              [[placed[i][k][1] for k in ks] for i, ks in enumerate(first)])
            raw = self._run_crops(crops)
            for i, ks in enumerate(first):
                for k, crop, normal in zip(ks, crops[i], raw[i]):
                    box, roll, mode = placed[i][k]
                    again_box, again_roll = self.placement(self._finish(normal)[0])
                    if mode == "check" and abs(again_roll - roll) <= 5.0 and iou(again_box, box) >= self.refine_iou:
                        kept.append((i, k, crop, normal))
                    else:
                        placed[i][k] = (again_box, again_roll, "once")
        if kept:  # their first pass stands: the mirror of the same crop completes the flip test
            mirrored = self._run_crops([[crop] for _, _, crop, _ in kept], mirror=True) if self.flip_test else None
            for n, (i, k, _, normal) in enumerate(kept):
                out[i][k] = self._finish(normal, None if mirrored is None else mirrored[n][0])
        once = [[k for k, (_, _, mode) in enumerate(p) if mode == "once"] for p in placed]
        if any(once):
            final = self._predict_scored(images, [[placed[i][k][0] for k in ks] for i, ks in enumerate(once)],
                                         rolls=[[placed[i][k][1] for k in ks] for i, ks in enumerate(once)])
            for i, ks in enumerate(once):
                for k, result in zip(ks, final[i]):
                    out[i][k] = result
        return out

    def roll(self, points: np.ndarray) -> float:
        """The in-plane tilt of the face of ``points``, degrees counter-clockwise on screen: the angle
        of the line from its image-left pupil to its image-right pupil."""
        right, left = self.scheme.pupils(points)
        return float(np.degrees(np.arctan2(-(left[1] - right[1]), left[0] - right[0])))

    def placement(self, points: np.ndarray) -> tuple[Box, float]:
        """Where to crop the face of ``points`` next: the box of the face turned upright and its
        roll (:func:`facemark.geometry.turned_box`), or its box and 0 when its eye line is tilted
        by :data:`ROLL_ALIGN` degrees or less (with the default 0, only an exactly level one)."""
        roll = self.roll(points)
        if abs(roll) <= ROLL_ALIGN:
            return box_from_points(points), 0.0
        return turned_box(points, roll), roll

    def detect(self, image, max_faces: int | None = None, boxes: Sequence | None = None, pose: bool = False,
               aligned: bool = False) -> list[Face]:
        """Find faces and their points: a list of :class:`Face`, highest detector score first.

        ``boxes``: tight landmark-style boxes ``[(x0, y0, x1, y1), ...]`` (or ``{"box": ..., "score": ...}``)
        to use instead of the detector; ``pose``: fill each face's ``pose`` (yaw, pitch, roll,
        :mod:`facemark.pose`; None with the reason in ``pose_reason`` when it cannot be estimated,
        e.g. a scheme with too few pose points); ``aligned``: fill ``aligned``
        with its 112 x 112 ArcFace-aligned chip (:mod:`facemark.align`).
        """
        return self.detect_batch([image], max_faces, None if boxes is None else [boxes], pose, aligned)[0]

    def track(self, frames: Iterable, every: int = 10, smoothing=True, fps: float = 30.0,
              max_faces: int | None = None, pose: bool = False, aligned: bool = False) -> Iterator[list[Face]]:
        """Faces of each video frame, with a stable :attr:`Face.track_id`: yields one list per frame.

        ``frames``: any iterable of BGR images (a video reader, a webcam, a list). The detector runs
        on the first frame, then every ``every`` frames, or at once when a track is lost (its points
        leave the frame, or its ``quality`` is low); in between each face's crop comes from its
        points in the previous frame, and new faces are picked up at the next detector frame.
        ``smoothing``: One-Euro smoothing of the points (``True``: :class:`facemark.track.Smoothing`
        defaults, a ``Smoothing``, or ``False``); ``fps`` sets the filter's clock. See :mod:`facemark.track`.
        """
        return VideoTracker(self, every, smoothing, fps, max_faces, pose, aligned).run(frames)

    def _add_outputs(self, image: np.ndarray, faces: list[Face], pose: bool, aligned: bool) -> None:
        if pose:
            height, width = image.shape[:2]
            for face in faces:
                try:
                    face.pose, face.pose_reason = head_pose(face.points, (width, height), self.scheme), None
                except PoseError as err:  # a scheme without the points pose needs, or no solution
                    face.pose, face.pose_reason = None, str(err)
        if aligned:
            for face in faces:
                face.aligned = align_face(image, face.points, self.scheme, size=ALIGNED_SIZE)

    def with_own_detector(self) -> "Landmarker":
        """A copy sharing this model but building its own detector (detectors keep scratch state,
        so each thread of a server uses its own copy; a detector object given to the constructor is shared)."""
        other = copy.copy(self)
        other._detector = self._detector_name if isinstance(self._detector_name, Detector) else None
        return other
