"""Face detectors that find the face and estimate its landmark box for the landmark models.

>>> from facemark.detectors import get_detector, DEFAULT_DETECTOR
>>> detector = get_detector(DEFAULT_DETECTOR)
>>> for det in detector.detect(image_bgr):            # sorted by score, highest first
...     det.landmark_box, det.roll    # where the landmark model cuts the face (facemark.placement)

Detectors (``list_detectors()``): ``blazeface`` (the default: MediaPipe's BlazeFace on
onnxruntime, its weights ship with facemark; six keypoints per face place the landmark crop, box
and roll), ``mtcnn`` (onnxruntime; 2 MB of weights ship with facemark), ``dlib-hog`` and
``dlib-cnn`` (``pip install facemark[dlib]``), ``haar`` (needs an OpenCV 4 build: OpenCV 5 dropped
the cascades) and ``given`` (boxes supplied by the user). Large images are downscaled to
``max_side`` before detection (640; BlazeFace 1280, with tiles for small faces); boxes come back
in the input image's pixels. Figures behind the default: ``bench/results/detectors.md`` and
``bench/results/small_faces.md``.
"""

from facemark.detectors.base import (
    CALIBRATION_FILE,
    DEFAULT_MAX_SIDE,
    IDENTITY,
    Box,
    Calibration,
    Detection,
    Detector,
    calibration_for,
    detector_available,
    get_detector,
    list_detectors,
    load_calibrations,
    register_detector,
)

register_detector("haar", "facemark.detectors.haar:HaarDetector")
register_detector("dlib-hog", "facemark.detectors.dlib_detectors:DlibHogDetector")
register_detector("dlib-cnn", "facemark.detectors.dlib_detectors:DlibCnnDetector")
register_detector("mtcnn", "facemark.detectors.mtcnn:MtcnnDetector")
register_detector("blazeface", "facemark.detectors.blazeface:BlazeFaceDetector")
register_detector("given", "facemark.detectors.given:GivenBoxes")

#: The detector used when none is named; chosen from bench/results/detectors.md.
DEFAULT_DETECTOR = "blazeface"

__all__ = [
    "CALIBRATION_FILE", "DEFAULT_DETECTOR", "DEFAULT_MAX_SIDE", "IDENTITY", "Box", "Calibration", "Detection",
    "Detector", "calibration_for", "detector_available", "get_detector", "list_detectors",
    "load_calibrations", "register_detector",
]
