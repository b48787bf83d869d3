"""Baseline predictors for :func:`facemark.evaluate.evaluate`: the floor and a well-known reference.

:class:`MeanShapePredictor` never looks at the pixels (the average training shape placed in the
box by the crop rule); :class:`DlibPredictor` is dlib's 68-point regression-tree model. Both have
``predict(image_bgr, box) -> (K, 2)`` like :class:`facemark.Landmarker`::

    from facemark.baselines import MeanShapePredictor
    from facemark.evaluate import evaluate
    evaluate(MeanShapePredictor.from_store("data/300w-lite/train"), "data/300w-lite/val", out="report/mean-shape")
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

from facemark.data.dataset import LandmarkDataset
from facemark.data.store import Store
from facemark.detectors import calibration_for
from facemark.geometry import SEED_CROP, Box, CropRule, crop_box_from_box, from_crop

DLIB_SHAPE_FILE = "shape_predictor_68_face_landmarks.dat"


class MeanShapePredictor:
    """The floor: the average normalised training shape, placed in the box by the crop rule.

    It never looks at the pixels, so any model must beat it; its error measures how much the box
    alone tells about the points.
    """

    name = "mean shape"

    def __init__(self, shape: np.ndarray, crop_rule: CropRule = SEED_CROP):
        self.shape = np.asarray(shape, dtype=np.float64)  # (K, 2) in 0..1 of the crop box
        self.crop_rule = crop_rule

    @classmethod
    def from_store(cls, store: Store | str | Path, crop_rule: CropRule = SEED_CROP) -> MeanShapePredictor:
        """Mean shape of a (training) store's faces, each cropped from its landmark box by ``crop_rule``."""
        store = store if isinstance(store, Store) else Store.open(store)
        return cls(LandmarkDataset(store, crop_rule=crop_rule).mean_shape(), crop_rule)

    def predict(self, image_bgr: np.ndarray, box: Box) -> np.ndarray:
        height, width = image_bgr.shape[:2]
        return from_crop(self.shape, crop_box_from_box(box, (width, height), self.crop_rule)).astype(np.float64)


def dlib_shape_model_path() -> Path:
    """``shape_predictor_68_face_landmarks.dat`` of the installed face-recognition-models package.

    Found without importing the package: its ``__init__`` needs ``pkg_resources``, which recent
    setuptools no longer ship.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("DlibPredictor needs the face-recognition-models package: `pip install facemark[dlib]`")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / DLIB_SHAPE_FILE
    if not path.is_file():
        raise ImportError(f"{path} not found: reinstall face-recognition-models (`pip install facemark[dlib]`)")
    return path


class DlibPredictor:
    """dlib's 68-point ensemble of regression trees (``shape_predictor_68_face_landmarks.dat``,
    Kazemi & Sullivan 2014, trained by dlib on the 300-W training images: afw, helen, lfpw, ibug).

    Box conversion: the model was trained on boxes from dlib's HOG face detector, which sit
    differently from the tight landmark box the evaluation hands out. :meth:`dlib_box` maps one to
    the other with the inverse of the ``dlib-hog`` detector calibration (``facemark/detectors/
    calibration.json``, fitted on the 300w-lite TRAINING split by ``python -m
    bench.fit_detector_calibration``): the one conversion between the two boxes, used both ways.
    Pass ``box_map`` (a :class:`~facemark.detectors.Calibration` of dlib box -> landmark box) to
    override it.

    Needs ``pip install facemark[dlib]`` (``dlib-bin`` and ``face-recognition-models``).
    """

    name = "dlib ERT"

    def __init__(self, model_path: str | Path | None = None, box_map=None):
        try:
            import dlib
        except ImportError:
            raise ImportError("DlibPredictor needs dlib: install it with `pip install facemark[dlib]`") from None
        self.model_path = Path(model_path) if model_path is not None else dlib_shape_model_path()
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(self.model_path))
        if box_map is None:
            box_map = calibration_for("dlib-hog")
            if box_map is None:
                raise FileNotFoundError("no dlib-hog entry in facemark/detectors/calibration.json: "
                                        "run python -m bench.fit_detector_calibration --detectors dlib-hog")
        self.box_map = box_map

    def dlib_box(self, box: Box) -> Box:
        """The dlib-detector-style rectangle for a tight landmark ``box``."""
        return self.box_map.invert(box)

    def predict(self, image_bgr: np.ndarray, box: Box) -> np.ndarray:
        rgb = np.ascontiguousarray(cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB))
        # dlib rectangles are inclusive integer pixel indices, i.e. pixel centres like ours
        rect = self._dlib.rectangle(*(int(round(v)) for v in self.dlib_box(box)))
        shape = self._predictor(rgb, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
