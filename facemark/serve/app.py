"""The HTTP service: ``POST /v1/landmarks``, a web page at ``/``, ``GET /healthz`` and docs at ``/docs``.

    facemark serve --port 8000                       # or, with any ASGI server:
    uvicorn --factory facemark.serve.app:create_app

Every request body is treated as hostile: its size is capped while it is read (the
``Content-Length`` header is checked but not trusted), the image's width and height are read from
its header before any pixel is decoded (a few-kB PNG can declare a 30000 x 30000 image), and the
format is sniffed from the bytes, never from a file name or a MIME type. Inference runs in a
bounded thread pool behind a bounded queue, so overload is answered with 503 instead of piling up.

Status codes: 200; 400 empty or malformed body; 413 upload over ``max_upload_mb`` or image over
``max_pixels``; 415 not a decodable image (garbage, truncated or an unsupported format); 422 bad
query parameter; 501 ``aligned``/``pose`` asked for but not available in this installation; 503
busy (with ``Retry-After``); 500 anything else. Every error is JSON ``{"error", "detail"}``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import importlib
import io
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from http import HTTPStatus
from importlib.resources import files

import cv2
import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import facemark
from facemark.api import Landmarker

#: formats whose header PIL reads and whose pixels OpenCV decodes; anything else is answered 415
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "PPM")
ALIGNED_SIZE = 112


# -- response schemas ----------------------------------------------------------------------

class ImageInfo(BaseModel):
    width: int
    height: int


class Pose(BaseModel):
    yaw: float = Field(description="degrees; > 0: the face turns toward the image's right (the subject's left)")
    pitch: float = Field(description="degrees; > 0: the face looks up")
    roll: float = Field(description="degrees; > 0: the face is rotated clockwise in the image")


class FaceOut(BaseModel):
    box: list[float] = Field(description="detector box (x0, y0, x1, y1), 0-based pixel-centre coordinates")
    score: float
    points: list[list[float]] = Field(description="(K, 2) points (x, y) in image pixels")
    pose: Pose | None = Field(None, description="with pose=true; left out when it cannot be estimated")
    aligned_png_base64: str | None = Field(None, description=f"{ALIGNED_SIZE}x{ALIGNED_SIZE} aligned crop, PNG, base64")


class ModelInfo(BaseModel):
    name: str
    version: str = Field(description="first 12 hex digits of the model file's SHA-256")
    num_points: int
    backend: str
    detector: str
    facemark_version: str


class LandmarksOut(BaseModel):
    image: ImageInfo
    faces: list[FaceOut]
    model: ModelInfo


class HealthOut(BaseModel):
    status: str
    model_loaded: bool
    model: str


class ErrorOut(BaseModel):
    error: str
    detail: str


class ServiceError(Exception):
    """An error answered as JSON ``{"error", "detail"}`` with ``status``."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


def _error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


# -- input checks --------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    """The image bytes of a raw body or of the ``file`` field of a multipart form, at most ``limit`` bytes."""
    too_large = ServiceError(413, "upload_too_large", f"the upload is over the {limit / 2**20:g} MB limit")
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ServiceError(400, "bad_request", f"invalid Content-Length header {length!r}")
        if int(length) > limit:
            raise too_large
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: the header may lie or be absent (chunked)
        body += chunk
        if len(body) > limit:
            raise too_large
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        body = await _multipart_file(request, bytes(body))
    if not body:
        raise ServiceError(400, "empty_body", "no image: send the image as the raw body or as the multipart field 'file'")
    return bytes(body)


async def _multipart_file(request: Request, body: bytes) -> bytes:
    async def replay():  # hand the already size-checked body to Starlette's form parser
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except Exception as err:
        raise ServiceError(400, "bad_request", f"malformed multipart body: {getattr(err, 'detail', err)}") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ServiceError(400, "bad_request", "the multipart body has no file field named 'file'")
        return await upload.read()
    finally:
        await form.close()


def image_header(data: bytes, max_pixels: int) -> tuple[int, int, str]:
    """``(width, height, format)`` from the image header alone, before any pixel is decoded."""
    from PIL import Image

    try:
        with warnings.catch_warnings():  # PIL warns about large images; the limit below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as im:
                (width, height), fmt = im.size, im.format
    except Image.DecompressionBombError as err:  # PIL's own hard limit, above any sensible max_pixels
        raise ServiceError(413, "image_too_large", str(err)) from None
    except Exception:
        raise ServiceError(415, "unsupported_media_type",
                           f"the body is not an image in a supported format ({', '.join(ACCEPTED_FORMATS)})") from None
    if width * height > max_pixels:
        raise ServiceError(413, "image_too_large", f"the image is {width}x{height} ({width * height / 1e6:.1f} Mpx); "
                                                   f"the limit is {max_pixels / 1e6:g} Mpx")
    if fmt == "JPEG" and not jpeg_complete(data):
        raise ServiceError(415, "unsupported_media_type", "the JPEG is truncated (it ends before its end-of-image marker)")
    return width, height, fmt


# a marker after entropy-coded data: 0xFF not followed by stuffing (00), a restart marker (D0-D7) or fill (FF)
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG's segments run through to its end-of-image marker.

    Some libjpeg builds behind ``cv2.imdecode`` decode a truncated JPEG to a partly grey image
    instead of failing; walking the segments catches that for the cost of a regex scan.
    """
    pos = 2  # after SOI
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xD9:  # EOI
            return True
        if marker == 0xFF or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # fill byte, RSTn, TEM: no length
            pos += 1 if marker == 0xFF else 2
            continue
        if pos + 4 > len(data):
            return False
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next real marker
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return False
            pos = found.start()
    return False


def _optional(module: str, name: str, flag: str):
    """``facemark.<module>.<name>`` for an optional output, or 501 when this installation lacks it."""
    try:
        return getattr(importlib.import_module(f"facemark.{module}"), name)
    except (ImportError, AttributeError) as err:
        raise ServiceError(501, "not_available",
                           f"{flag}=true needs facemark.{module}.{name}, not available in this installation ({err})") from None


# -- the service ---------------------------------------------------------------------------

class Service:
    """The loaded model, the bounded inference pool and the request limits of one app."""

    def __init__(self, landmarker: Landmarker, detector: str, max_upload_bytes: int, max_pixels: int,
                 workers: int, queue: int):
        self.landmarker, self.workers, self.queue = landmarker, workers, queue
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="facemark-infer")
        # `workers` running + `queue` waiting; a slot is freed when its job ends, not when its request
        # ends, so a client that hangs up cannot free a slot that its job still occupies
        self.slots = threading.BoundedSemaphore(workers + queue)
        self._local = threading.local()
        digest = hashlib.sha256(landmarker.model_path.read_bytes()).hexdigest()[:12]
        self.model_info = ModelInfo(name=landmarker.name, version=digest, num_points=landmarker.num_points,
                                    backend=landmarker.backend, detector=detector,
                                    facemark_version=facemark.__version__).model_dump()

    async def run(self, fn, *args):
        """``fn(*args)`` in the pool, or 503 at once when the workers and the queue are full."""
        if not self.slots.acquire(blocking=False):
            raise ServiceError(503, "busy", f"all {self.workers} workers are busy and {self.queue} requests are "
                                            "queued; retry shortly", {"Retry-After": "1"})
        try:
            future = self.pool.submit(fn, *args)
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self.slots.release())
        return await asyncio.wrap_future(future)

    def _worker_landmarker(self) -> Landmarker:
        lm = getattr(self._local, "lm", None)
        if lm is None:
            # the model is shared (ONNX Runtime sessions and eval-mode torch modules may be called from
            # several threads); detectors keep scratch state (dlib's do), so each worker builds its own
            lm = copy.copy(self.landmarker)
            lm._detector = None
            self._local.lm = lm
        return lm

    def infer(self, data: bytes, max_faces: int | None, align_face=None, head_pose=None) -> dict:
        """Decode and run one image (in a worker thread)."""
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation, like browsers
        if image is None:
            raise ServiceError(415, "unsupported_media_type", "the image could not be decoded (corrupt or truncated)")
        height, width = image.shape[:2]
        faces = []
        for face in self._worker_landmarker().detect(image, max_faces):
            item = face.to_dict()
            if head_pose is not None:
                try:
                    item["pose"] = dict(zip(("yaw", "pitch", "roll"), map(float, head_pose(face.points, (width, height)))))
                except ValueError:  # no solution for these points: this face goes without a pose
                    pass
            if align_face is not None:
                crop = align_face(image, face.points, size=ALIGNED_SIZE)
                item["aligned_png_base64"] = base64.b64encode(cv2.imencode(".png", crop)[1].tobytes()).decode()
            faces.append(item)
        return {"image": {"width": width, "height": height}, "faces": faces, "model": self.model_info}


# -- routes --------------------------------------------------------------------------------

router = APIRouter()
_ERRORS = {code: {"model": ErrorOut} for code in (400, 413, 415, 422, 501, 503)}
_BODY = {  # the body is read by hand (to cap its size), so describe it to OpenAPI here
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }},
}


@router.post("/v1/landmarks", response_model=LandmarksOut, response_model_exclude_none=True, responses=_ERRORS,
             openapi_extra=_BODY, summary="Faces and their landmarks in an image")
async def landmarks(
    request: Request,
    max_faces: int | None = Query(None, ge=1, le=100, description="at most this many faces, highest score first"),
    aligned: bool = Query(False, description=f"add each face's {ALIGNED_SIZE}x{ALIGNED_SIZE} aligned crop (PNG, base64)"),
    pose: bool = Query(False, description="add each face's head pose (yaw, pitch, roll in degrees)"),
) -> dict:
    """Send an image (JPEG, PNG, WebP, BMP, TIFF, PPM) as the raw body or as the multipart field ``file``."""
    service: Service = request.app.state.service
    align_face = _optional("align", "align_face", "aligned") if aligned else None  # 501 before any work
    head_pose = _optional("pose", "head_pose", "pose") if pose else None
    data = await read_body(request, service.max_upload_bytes)
    image_header(data, service.max_pixels)
    return await service.run(service.infer, data, max_faces, align_face, head_pose)


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the model is loaded")
async def healthz(request: Request) -> dict:
    service: Service | None = getattr(request.app.state, "service", None)
    return {"status": "ok" if service else "starting", "model_loaded": service is not None,
            "model": service.model_info["name"] if service else ""}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse((files("facemark.serve") / "static" / "index.html").read_text(encoding="utf-8"))


# -- the app -------------------------------------------------------------------------------

def create_app(model: str = "default", backend: str | None = None, detector: str | None = None,
               max_upload_mb: float = 10, max_pixels: int = 40_000_000, workers: int = 2, queue: int = 8) -> FastAPI:
    """The ASGI app; the model loads once, when the server starts (the lifespan handler).

    ``workers``: inference threads; ``queue``: requests allowed to wait for one before 503.
    """
    if workers < 1 or queue < 0 or max_upload_mb <= 0 or max_pixels < 1:
        raise ValueError("need workers >= 1, queue >= 0, max_upload_mb > 0 and max_pixels >= 1")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from facemark.detectors import DEFAULT_DETECTOR

        # ONNX Runtime threads per worker, so that the workers together use the cores once; torch's
        # thread count is process-wide, so it is left to the caller
        threads = None if backend == "torch" else max(1, (os.cpu_count() or 1) // workers)
        landmarker = Landmarker(model, backend=backend, detector=detector, num_threads=threads)
        landmarker.detector  # noqa: B018 - load now: a bad detector fails the start, not the first request
        service = Service(landmarker, detector or DEFAULT_DETECTOR, int(max_upload_mb * 2**20), max_pixels,
                          workers, queue)
        app.state.service = service
        try:
            yield
        finally:
            app.state.service = None
            service.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="facemark", version=facemark.__version__, lifespan=lifespan,
                  description="2D facial landmarks: POST an image to /v1/landmarks.")
    app.include_router(router)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, err: ServiceError) -> JSONResponse:
        return _error_response(err.status, err.error, err.detail, err.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        error = HTTPStatus(err.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        return _error_response(err.status_code, error, str(err.detail), getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        return _error_response(422, "invalid_request", detail)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        return _error_response(500, "internal_error", f"{type(err).__name__}: {err}")

    return app
