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
one JSON form): ``facemark predict`` only writes files and the HTTP service only speaks HTTP.
Points are in original-image pixels, 0-based pixel centres (see :mod:`facemark.geometry`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from facemark.align import align_face
from facemark.detectors import DEFAULT_DETECTOR, Detector, get_detector
from facemark.detectors.given import GivenBoxes
from facemark.face import Face
from facemark.geometry import Box, CropRule, box_centre, crop_box_from_box, crop_image, from_crop, upright_turn
from facemark.images import MAX_PIXELS, load_image
from facemark.placement import from_points, points_roll
from facemark.pose import PoseError, head_pose
from facemark.quality import QualityCalibration, raw_point_features
from facemark.runtime import open_model
from facemark.schemes import box_68_from_five, five_from_68_box, get_scheme, resolve_scheme, to_five
from facemark.spec import FIVE_POINT_VIEWS
from facemark.track import VideoTracker

ALIGNED_SIZE = 112  # the ArcFace template's size
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
    :mod:`facemark.placement`); ``True``: every face; ``False``: none. ``flip_test``: also predict
    on the mirrored crop and average (test-time flip augmentation: the two crops go through the model
    as one batch; in :meth:`detect` only the final pass is flipped, the first one only places the
    crop); ``None`` (the default): the model's own setting (its spec's ``flip_test``: off for a model
    distilled from a flip-tested teacher, whose one pass already gives the averaged points; on for
    the others, where it costs a second crop through the model: ``docs/speed.md``).
    ``min_quality``: :meth:`detect` drops detected faces whose fit quality (:attr:`Face.quality`)
    is below it (:data:`MIN_QUALITY` by default; None keeps every face; faces of models without a
    quality calibration and faces of given boxes are always kept).
    ``max_pixels``, ``max_bytes``: the caps an image given as a path is read within
    (:func:`facemark.images.read_image`; ``facemark --max-mpx`` / ``--max-mb``).
    """

    def __init__(self, model: str | Path = "default", backend: str | None = None, device: str = "cpu",
                 detector: str | Detector | None = None, refine: bool | None = None, flip_test: bool | None = None,
                 num_threads: int | None = None, scheme=None, min_quality: float | None = MIN_QUALITY,
                 max_pixels: int = MAX_PIXELS, max_bytes: int | None = None):
        # a five-point view (``default-5``): the 68-point model runs, and every box in and point out
        # is the five points' (facemark.spec.FIVE_POINT_VIEWS)
        self.five_view = isinstance(model, str) and model in FIVE_POINT_VIEWS
        loaded = open_model(model, backend, device, num_threads)
        self.backend, self.model_path, self.spec, self.meta, self._run = (
            loaded.backend, loaded.path, loaded.spec, loaded.meta, loaded.runner)
        self.refine = refine
        # None: the model's own (its spec; a model distilled from a flip-tested teacher runs one pass)
        self.flip_test = bool(self.spec.flip_test if self.spec is not None else True) if flip_test is None \
            else bool(flip_test)
        self.min_quality = check_min_quality(min_quality)
        self.max_pixels, self.max_bytes = int(max_pixels), max_bytes  # the image caps
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
        self.model_scheme = self.scheme  # the model's own points (flip test, placement, pose)
        self.name = loaded.name
        if self.five_view:
            self.scheme, self.num_points, self.name = get_scheme(5), 5, f"{loaded.name}/{model}"

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
        image = load_image(image, self.max_pixels, self.max_bytes)
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
        scored = self._predict_scored(images, self._model_boxes(boxes), batch_size, flip, rolls)
        return [[self._public_points(points) for points, _ in image_faces] for image_faces in scored]

    def _model_boxes(self, boxes: Sequence[Sequence[Box]]) -> Sequence[Sequence[Box]]:
        """Boxes given in the public scheme as the model's (a five-point view: the 68-point box)."""
        if not self.five_view:
            return boxes
        return [[box_68_from_five(box) for box in image_boxes] for image_boxes in boxes]

    def _public_points(self, points: np.ndarray) -> np.ndarray:
        """The model's points as the caller gets them (a five-point view: :func:`facemark.schemes.to_five`)."""
        return to_five(points) if self.five_view else points

    def _public_face(self, face: Face) -> Face:
        """``face`` in the public scheme: a five-point view's points and point scores (an eye centre's
        score: the mean of its eye points'; quality, pose and the aligned chip come from all 68)."""
        if self.five_view:
            face.points = to_five(face.points)
            if face.point_scores is not None:
                face.point_scores = to_five(np.repeat(face.point_scores[:, None], 2, axis=1))[:, 0]
        return face

    def _predict_scored(self, images: Sequence, boxes: Sequence[Sequence[Box]], batch_size: int = 64,
                        flip: bool | None = None, rolls: Sequence[Sequence[float]] | None = None,
                        ) -> list[list[tuple[np.ndarray, np.ndarray | None]]]:
        """:meth:`predict_batch`'s points of each face with its raw point features ``(K, 3)``
        (:mod:`facemark.quality`; None for models without them); ``rolls`` as there."""
        flip = self.flip_test if flip is None else bool(flip)
        crops = self._cut([load_image(image, self.max_pixels, self.max_bytes) for image in images], boxes, rolls)
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

    def _run_crops(self, crops: list[list], batch_size: int = 64,
                   both: bool = False) -> list[list] | tuple[list[list], list[list]]:
        """The model's raw output for each face of :meth:`_cut`, ``batch_size`` crops at a time:
        ``(crop box, turn, normalised points (K, 2), raw features (K, 2) or None)``; ``both``: for
        the crops and their mirror images, in the same batches (one model call)."""
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
            other = self.model_scheme.flip_normalised(mirrored[2][None])[0]
            spread = np.linalg.norm(points.astype(np.float64) - other, axis=-1)  # (K,) normal vs mirrored
            points = (points + other) / 2
            if features is not None:  # the mirrored crop's features, re-indexed
                features = (features + mirrored[3][list(self.model_scheme.flip_perm)]) / 2
        scored = None if features is None else raw_point_features(features[None], spread[None])[0]
        return from_crop(points, crop_box, turn), scored

    def predict(self, image, box: Box) -> np.ndarray:
        """``(K, 2)`` points for the face in the tight landmark-style ``box = (x0, y0, x1, y1)``."""
        return self.predict_batch([image], [[box]])[0][0]

    def predict_face(self, image, box: Box, score: float = 1.0) -> Face:
        """:meth:`predict` as a :class:`Face` with ``point_scores`` and ``quality`` (None when the model
        has no calibration); ``score`` is the detector score of ``box`` (1 for a given box)."""
        (points, features), = self._predict_scored([image], self._model_boxes([[box]]))[0]
        face = Face(tuple(float(v) for v in box), float(score), points)
        self._score_face(face, features)
        return self._public_face(face)

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
                     pose: bool = False, aligned: bool = False, flip: bool | None = None) -> list[list[Face]]:
        """:meth:`detect` for several images; ``boxes[i]`` (when given) are the boxes of ``images[i]``."""
        max_faces = check_max_faces(max_faces)
        images = [load_image(image, self.max_pixels, self.max_bytes) for image in images]
        if boxes is None:
            detectors = [self.detector] * len(images)
        else:  # user boxes take the detector path, as a "detector" that returns them
            detectors = [GivenBoxes(list(image_boxes)) for image_boxes in boxes]
            if len(detectors) != len(images):
                raise ValueError(f"got boxes for {len(detectors)} images and {len(images)} images")
        # with a quality floor, every detection is scored first, so a dropped one leaves room for the next
        early = max_faces if self.min_quality is None or boxes is not None else None
        detections = [detector.detect(image)[:early] for detector, image in zip(detectors, images)]
        placed = [[self._place(detector, d, given=boxes is not None) for d in found]
                  for detector, found in zip(detectors, detections)]
        scored = self._passes(images, placed, self.flip_test if flip is None else bool(flip))
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
        return [[self._public_face(face) for face in image_faces] for image_faces in faces]

    def _place(self, detector, detection, given: bool) -> tuple[Box, float, bool]:
        """Where the model first cuts a face: ``(box in the model's point scheme, of the face turned
        upright; roll; whether a placing pass comes first)``, from the detection's placement
        (:mod:`facemark.placement`, computed once by its detector). A 5-point model file takes the
        five points' box (:data:`facemark.schemes.FIVE_FROM_68_BOX`); boxes given to a five-point
        view are the five points' and become the 68-point model's. A placing pass (:meth:`_passes`)
        comes first with ``refine=True``, and with ``refine=None`` for a face its detector gave no
        keypoints for (its box convention is undone by the second pass); given boxes, faces placed
        from keypoints and ``refine=False`` take one pass."""
        detection = detector.placed(detection)  # a detector that overrides detect() may leave it to us
        box, roll = detection.landmark_box, detection.roll
        if given and self.five_view:
            box = box_68_from_five(box)
        elif self.spec is not None and self.spec.scheme == "5":
            box = five_from_68_box(box)
        refine = not given and (self.refine is True or (self.refine is None and not detection.from_keypoints))
        return box, roll, refine

    def _passes(self, images: list[np.ndarray], placed: list[list[tuple[Box, float, bool]]],
                flip: bool) -> list[list[tuple]]:
        """The landmark passes of :meth:`detect` for faces placed by :meth:`_place`: points and raw
        features of each. A face to refine first takes a pass without flip test that only places
        its crop (:meth:`placement` of its points, the face cut upright); then every face takes
        the final pass where it is placed, with the flip test (``flip``)."""
        first = [[k for k, (_, _, refine) in enumerate(p) if refine] for p in placed]
        if any(first):
            crops = self._cut(images, [[placed[i][k][0] for k in ks] for i, ks in enumerate(first)],
                              [[placed[i][k][1] for k in ks] for i, ks in enumerate(first)])
            raw = self._run_crops(crops)
            for i, ks in enumerate(first):
                for k, normal in zip(ks, raw[i]):
                    placed[i][k] = (*from_points(self._finish(normal)[0], self.model_scheme), False)
        return self._predict_scored(images, [[box for box, _, _ in p] for p in placed], flip=flip,
                                    rolls=[[roll for _, roll, _ in p] for p in placed])

    def roll(self, points: np.ndarray) -> float:
        """The in-plane tilt of the face of ``points``, degrees counter-clockwise on screen: the angle
        of the line from its image-left pupil to its image-right pupil (:func:`facemark.placement.points_roll`)."""
        return points_roll(points, self.scheme)

    def placement(self, points: np.ndarray) -> tuple[Box, float]:
        """Where to crop the face of ``points`` next: the box of the face turned upright and its roll
        (:func:`facemark.placement.from_points`); :meth:`detect` takes it as ``{"box": ..., "roll": ...}``."""
        return from_points(points, self.scheme)

    def detect(self, image, max_faces: int | None = None, boxes: Sequence | None = None, pose: bool = False,
               aligned: bool = False, flip: bool | None = None) -> list[Face]:
        """Find faces and their points: a list of :class:`Face`, highest detector score first.

        ``boxes``: tight landmark-style boxes ``[(x0, y0, x1, y1), ...]`` (or ``{"box": ..., "score": ...}``)
        to use instead of the detector; ``pose``: fill each face's ``pose`` (yaw, pitch, roll,
        :mod:`facemark.pose`; None with the reason in ``pose_reason`` when it cannot be estimated,
        e.g. a scheme with too few pose points); ``aligned``: fill ``aligned``
        with its 112 x 112 ArcFace-aligned chip (:mod:`facemark.align`); ``flip``: the flip test for
        this call (default: the Landmarker's ``flip_test``).
        """
        return self.detect_batch([image], max_faces, None if boxes is None else [boxes], pose, aligned, flip)[0]

    def track(self, frames: Iterable, every: int = 10, smoothing=True, fps: float = 30.0,
              max_faces: int | None = None, pose: bool = False, aligned: bool = False,
              flip: bool | None = False, steady=True) -> Iterator[list[Face]]:
        """Faces of each video frame, with a stable :attr:`Face.track_id`: yields one list per frame.

        ``frames``: any iterable of BGR images (a video reader, a webcam, a list). The detector runs
        on the first frame to find the faces, and then every ``every`` frames only to check them (a
        face it finds where a track is continues the track) and pick up new ones; a track whose
        points leave the frame or whose ``quality`` drops goes back to a full :meth:`detect`. Each
        frame cuts each face once where its points in the previous frame place it, held steady
        while the face is still (``steady``: ``True``, a :class:`facemark.placement.Steadiness`, or
        ``False`` for exactly there): one pass of the model per face, about half the time of
        :meth:`detect` on every frame (``flip=True``: with its mirror, the flip test, on tracked
        frames too; None: the Landmarker's ``flip_test``). Without the mirror a face's ``quality`` and
        ``point_scores`` take a flip-tested model's flip-spread feature at its fitted mean.
        ``smoothing``: One-Euro smoothing of the points (``True``: :class:`facemark.track.Smoothing`
        defaults, a ``Smoothing``, or ``False``); ``fps`` sets the filter's clock. See :mod:`facemark.track`.
        """
        return VideoTracker(self, every, smoothing, fps, max_faces, pose, aligned, flip, steady).run(frames)

    def _add_outputs(self, image: np.ndarray, faces: list[Face], pose: bool, aligned: bool) -> None:
        if pose:
            height, width = image.shape[:2]
            for face in faces:
                try:
                    face.pose, face.pose_reason = head_pose(face.points, (width, height), self.model_scheme), None
                except PoseError as err:  # a scheme without the points pose needs, or no solution
                    face.pose, face.pose_reason = None, str(err)
        if aligned:
            for face in faces:
                face.aligned = align_face(image, face.points, self.model_scheme, size=ALIGNED_SIZE)

    def with_own_detector(self) -> Landmarker:
        """A copy sharing this model but building its own detector (detectors keep scratch state,
        so each thread of a server uses its own copy; a detector object given to the constructor is shared)."""
        other = copy.copy(self)
        other._detector = self._detector_name if isinstance(self._detector_name, Detector) else None
        return other
