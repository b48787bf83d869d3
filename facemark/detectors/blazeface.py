"""BlazeFace (Bazarevsky et al. 2019), MediaPipe's face detectors, on ONNX Runtime.

Two networks ship in ``weights/blazeface/`` (Apache-2.0, see ``NOTICE.md``), converted once from the
``.tflite`` files of the ``mediapipe==0.10.21`` wheel by ``tools/convert_blazeface.py``:

* ``short``: 128 x 128 input, for faces that fill a good part of the photo (selfies, portraits,
  webcam, the 300-W photos); about a millisecond per photo;
* ``full``: 192 x 192 input, for smaller faces.

Each gives, per face, a box and six keypoints (:data:`KEYPOINTS`: the eyes, nose tip, mouth
centre and ear tragions). The photo is letterboxed into the square input as MediaPipe does
(aspect kept, the rest zero), the SSD anchors are decoded in numpy and overlapping detections are
merged by MediaPipe's weighted NMS. Small faces: the whole-photo pass finds faces whose eyes are
at least about 9 % of the photo's longer side apart; with ``tiles`` the photo is also searched in
overlapping tiles (:meth:`BlazeFaceDetector.tile_sides`), down to faces
``min_iod`` px between the eyes. ``tiles="auto"`` (the default) adds them only for photos of 960 px
and more, or when the whole photo held no face, so a one-face photo costs one pass.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np

from facemark.detectors.base import Calibration, Detection, Detector, detector_available, get_detector
from facemark.onnx_session import check_threads, cpu_session

#: the six keypoints of a BlazeFace detection, in its order ("right"/"left": the subject's, so the
#: right eye is on the image's left for a face looking at the camera)
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear_tragion", "left_ear_tragion")

#: per model: (file, input size, SSD strides (one anchor layer per entry), anchors per layer, min score)
MODELS = {
    "short": ("short_range.onnx", 128, (8, 16, 16, 16), 2, 0.5),
    "full": ("full_range.onnx", 192, (4,), 1, 0.6),
}


def weights_dir() -> Path:
    """The folder holding ``short_range.onnx`` and ``full_range.onnx`` (``$FACEMARK_BLAZEFACE_DIR`` first)."""
    candidates = [Path(os.environ["FACEMARK_BLAZEFACE_DIR"])] if os.environ.get("FACEMARK_BLAZEFACE_DIR") else []
    candidates.append(Path(__file__).with_name("weights") / "blazeface")
    for folder in candidates:
        if all((folder / spec[0]).is_file() for spec in MODELS.values()):
            return folder
    raise ImportError(f"the 'blazeface' detector needs short_range.onnx and full_range.onnx, not found in "
                      f"{', '.join(map(str, candidates))}: reinstall facemark, or run tools/convert_blazeface.py")


def anchors(size: int, strides: tuple[int, ...], per_layer: int) -> np.ndarray:
    """SSD anchor centres ``(N, 2)`` in 0..1, in the order of the network's outputs (MediaPipe's
    SsdAnchorsCalculator with fixed-size anchors: consecutive layers of one stride share a grid,
    ``per_layer`` anchors per cell each)."""
    out, layer = [], 0
    while layer < len(strides):
        stride, same = strides[layer], 0
        while layer + same < len(strides) and strides[layer + same] == stride:
            same += 1
        cells = -(-size // stride)
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        out.append(np.repeat(grid, same * per_layer, axis=0))
        layer += same
    return np.concatenate(out).astype(np.float32)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, threshold: float = 0.3):
    """MediaPipe's weighted NMS: the best remaining detection absorbs every one overlapping it by
    IoU > ``threshold``; box and keypoints become their score-weighted mean, the score the best one's.
    Returns ``(boxes, scores, keypoints)`` of the merged detections, best first."""
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    left = np.ones(len(boxes), bool)
    out_boxes, out_scores, out_points = [], [], []
    for i in range(len(boxes)):
        if not left[i]:
            continue
        ix0 = np.maximum(boxes[i, 0], boxes[:, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[:, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[:, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        iou = inter / np.maximum(area[i] + area - inter, 1e-12)
        group = left & (iou > threshold)
        group[i] = True
        weights = scores[group][:, None]
        out_boxes.append((boxes[group] * weights).sum(0) / weights.sum())
        out_points.append((keypoints[group] * weights[:, :, None]).sum(0) / weights.sum())
        out_scores.append(scores[i])
        left &= ~group
    if not out_boxes:
        return np.zeros((0, 4)), np.zeros(0), np.zeros((0, len(KEYPOINTS), 2))
    return np.array(out_boxes), np.array(out_scores), np.array(out_points)


class BlazeFaceDetector(Detector):
    """MediaPipe's BlazeFace: boxes and six keypoints (:data:`KEYPOINTS`) per face.

    ``model``: ``"short"`` (default; 128 px input) or ``"full"`` (192 px). ``min_score``: the
    detection threshold (default: MediaPipe's, 0.5 short / 0.6 full). The photo is first shrunk to
    ``max_side`` (1280) and searched whole, letterboxed into the network: that finds faces whose
    eyes are at least about 9 % of the photo's longer side apart. ``tiles``: ``"auto"`` (default)
    searches it again in overlapping tiles, two sizes of them, small enough to find faces down to
    ``min_iod`` pixels between the eyes, when the photo's longer side is at least 960 px (group
    photos) or the whole-photo pass found nothing (a lone small face); ``True`` always, ``False``
    never. ``threads``: ONNX Runtime intra-op threads (None: its default, one per core).
    ``fallback``: a detector name (``"mtcnn"``, default) searched when BlazeFace, tiles included,
    found nothing in the photo: small, blurred faces that BlazeFace misses (on the degraded
    validation photos it finds 375 of 391, MTCNN 10 more). Its boxes come back in BlazeFace's box
    convention (through both calibrations) and without keypoints, so the landmark model places
    them with a second pass. It costs MTCNN's time only on photos where BlazeFace sees no face;
    ``None``: no fallback.
    """

    name = "blazeface"

    def __init__(self, model: str = "short", min_score: float | None = None, tiles: bool | str = "auto",
                 min_iod: float = 20.0, threads: int | None = None, max_side: int | None = 1280,
                 calibration: Calibration | None = None, tilts: tuple[float, ...] = (),
                 fallback: str | None = "mtcnn"):
        super().__init__(max_side=max_side, calibration=calibration, tilts=tilts)
        if fallback is not None and (not isinstance(fallback, str) or fallback == self.name):
            raise ValueError(f"fallback must be another detector's name or None, got {fallback!r}")
        self.fallback, self._fallback, self._threads = fallback, None, threads
        if model not in MODELS:
            raise ValueError(f"model must be one of {sorted(MODELS)}, got {model!r}")
        if tiles not in (True, False, "auto"):
            raise ValueError(f"tiles must be True, False or 'auto', got {tiles!r}")
        if isinstance(min_iod, bool) or not isinstance(min_iod, (int, float)) or not 4 <= min_iod <= 200:
            raise ValueError(f"min_iod must be a number of pixels in 4..200, got {min_iod!r}")
        file, self.size, strides, per_layer, default_score = MODELS[model]
        self.model = model
        self.min_score = default_score if min_score is None else float(min_score)
        if not 0.0 < self.min_score < 1.0:
            raise ValueError(f"min_score must be in (0, 1), got {min_score!r}")
        self.tiles, self.min_iod = tiles, float(min_iod)
        self._session = cpu_session(weights_dir() / file, check_threads(threads, "threads"))
        self._anchors = anchors(self.size, strides, per_layer)
        self._logit = float(np.log(self.min_score / (1.0 - self.min_score)))

    @staticmethod
    def available() -> bool:
        if importlib.util.find_spec("onnxruntime") is None:
            return False
        try:
            weights_dir()
        except ImportError:
            return False
        return True

    @property
    def calibration_key(self) -> str:
        return self.name if self.model == "short" else f"{self.name}:{self.model}"

    def _letterboxed(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``image`` letterboxed into the input square (aspect kept, centred, the rest black) and the
        map back: input edge coordinate ``e`` is image pixel centre ``e * scale + offset``."""
        h, w = image.shape[:2]
        factor = max(h, w) / self.size
        nw, nh = max(1, round(w / factor)), max(1, round(h / factor))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        px, py = (self.size - nw) // 2, (self.size - nh) // 2
        square = np.zeros((self.size, self.size, 3), np.uint8)
        square[py : py + nh, px : px + nw] = resized
        scale = np.array([w / nw, h / nh])
        return square, scale, -np.array([px, py]) * scale - 0.5

    def _tiles(self, image: np.ndarray, side: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``image`` shrunk so that ``side`` px become the input size, cut into input-sized tiles
        overlapping by a quarter (edge tiles padded black), each with its map back (as :meth:`_letterboxed`)."""
        h, w = image.shape[:2]
        factor = side / self.size
        small = cv2.resize(image, (max(1, round(w / factor)), max(1, round(h / factor))), interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        scale = np.array([w / sw, h / sh])
        out = []
        for y in _starts(sh, self.size):
            for x in _starts(sw, self.size):
                tile = np.zeros((self.size, self.size, 3), np.uint8)
                part = small[y : y + self.size, x : x + self.size]
                tile[: part.shape[0], : part.shape[1]] = part
                out.append((tile, scale, np.array([x, y]) * scale - 0.5))
        return out

    def _search(self, inputs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(n, 4)``, scores ``(n,)`` and keypoints ``(n, 6, 2)`` in image pixels, before NMS,
        found in network inputs (:meth:`_letterboxed`, :meth:`_tiles`), 16 at a time."""
        boxes, scores, points = [np.zeros((0, 4))], [np.zeros(0)], [np.zeros((0, len(KEYPOINTS), 2))]
        for start in range(0, len(inputs), 16):
            chunk = inputs[start : start + 16]
            regressors, logits = self._session.run(None, {"image": np.stack([c[0] for c in chunk])})
            for (_, scale, offset), reg, logit in zip(chunk, regressors, logits[:, :, 0]):
                keep = np.nonzero(logit > self._logit)[0]
                if keep.size == 0:
                    continue
                raw = reg[keep].astype(np.float64)  # (n, 16) input pixels, relative to the anchor
                centre = self._anchors[keep].astype(np.float64) * self.size
                cxy, half = raw[:, 0:2] + centre, raw[:, 2:4] / 2
                kp = raw[:, 4:16].reshape(-1, len(KEYPOINTS), 2) + centre[:, None]
                boxes.append(np.concatenate([(cxy - half) * scale + offset, (cxy + half) * scale + offset], axis=1))
                scores.append(1.0 / (1.0 + np.exp(-np.clip(logit[keep].astype(np.float64), -100, 100))))
                points.append(kp * scale + offset)
        return np.concatenate(boxes), np.concatenate(scores), np.concatenate(points)

    def tile_sides(self, width: int, height: int) -> list[int]:
        """Tile sizes (photo pixels) searched in a ``width`` x ``height`` photo: one that shrinks a
        face with ``min_iod`` px between the eyes to about 12 px of the network's input (the smallest
        it finds reliably), and one twice that for faces too large for it; none that the
        whole-photo pass covers."""
        side = round(self.size * self.min_iod / 12.0)
        return [tile for tile in (side, 2 * side) if tile < 0.8 * max(width, height)]

    def _detect(self, image_bgr: np.ndarray) -> list[Detection]:
        height, width = image_bgr.shape[:2]
        boxes, scores, points = self._search([self._letterboxed(image_bgr)])
        if self.tiles is True or (self.tiles == "auto" and (max(width, height) >= 960 or len(boxes) == 0)):
            tiles = [t for side in self.tile_sides(width, height) for t in self._tiles(image_bgr, side)]
            more = self._search(tiles)
            boxes, scores, points = (np.concatenate([a, b]) for a, b in zip((boxes, scores, points), more))
        if len(boxes) == 0:
            return self._fall_back(image_bgr)
        boxes, scores, points = weighted_nms(boxes, scores, points)
        return [Detection(tuple(float(v) for v in b), float(s), keypoints=p.astype(np.float32))
                for b, s, p in zip(boxes, scores, points)]

    def _fall_back(self, image_bgr: np.ndarray) -> list[Detection]:
        """The :attr:`fallback` detector's faces in a photo where BlazeFace found none, each with the
        placement the fallback gave it (its box in its own convention, its landmark box by its own
        calibration)."""
        if self.fallback is None:
            return []
        if self._fallback is None:
            if not detector_available(self.fallback):  # e.g. dlib's without facemark[dlib]: no fallback
                self.fallback = None
                return []
            kwargs = {"threads": self._threads} if self.fallback == "mtcnn" and self._threads else {}
            self._fallback = get_detector(self.fallback, **kwargs)
        return self._fallback.detect(image_bgr)


def _starts(length: int, side: int) -> list[int]:
    """Tile origins covering ``0..length`` with tiles of ``side``, overlapping by at least a quarter."""
    if length <= side:
        return [0]
    count = int(np.ceil((length - side) / (0.75 * side))) + 1
    return [round(i * (length - side) / (count - 1)) for i in range(count)]
