"""The HTTP service: ``POST /v1/landmarks``, live tracking sessions (opened by ``POST /v1/track``,
which answers the session's token; one video frame per ``POST /v1/track/{session}`` with that token,
a ``VideoTracker`` per session), a web page at ``/``, ``GET /healthz`` and docs at ``/docs``.

    facemark serve --port 8000                       # or, with any ASGI server:
    uvicorn --factory facemark.serve.app:create_app

Every request body is treated as hostile: its size is capped while it is read (the
``Content-Length`` header is checked but not trusted), a multipart form is parsed as it streams in
(its file spooled to disk past 1 MB), and nothing of it is parsed on the event loop: in the worker
pool, the one image loader (:func:`facemark.images.decode_image`) refuses headers too long to walk,
reads the width and height from the header before any pixel is decoded (a few-kB PNG can declare
a 30000 x 30000 image), sniffs the format from the bytes (never from a file name or a MIME type)
and refuses truncated files. Inference runs in a bounded thread pool behind a bounded queue, and
an upload joins that queue only once its header has passed the same checks in a small pool of
its own (a few ms each), so an image refused from its header (a scan bomb, a header too long to
walk, too many pixels, an unknown format) never holds a worker or queue place.

Memory stays bounded without letting slow clients lock others out: a body's bytes count against a
budget of ``(workers + queue) * max_upload_mb`` as they arrive, and a request takes one of the
``workers + queue`` places only once its body is in. A request that finds every place taken is
answered 503 before a byte of its body is read; an upload that falls below ``min_upload_rate``
after ``upload_grace_s`` (or is still arriving after ``upload_timeout_s``) is cut off with 408, so a
client trickling its body holds neither a place nor more than the bytes it sent. Slow or idle
connections (no complete request head) are the server's business: see :mod:`facemark.serve.server`.

Live-tracking sessions cannot be taken over or hoarded: a session belongs to the client that opened
it (its token, required for frames and ``DELETE``), a client address holds at most
``sessions_per_client`` of the ``max_sessions``, and a session expires on the server's clock
``session_idle_s`` after its last frame and ``session_max_age_s`` after it was opened, whatever it sends.

Status codes: 200; 400 empty or malformed body (a multipart part header over the parser's ~4 kB,
as a very long file name makes, is named as such), an image header too long to walk; 408 upload too
slow; 413 upload over ``max_upload_mb`` or image over ``max_pixels``; 415 not a decodable image
(garbage, truncated or an unsupported format); 422 bad query parameter or session name; 401, 403
a live-tracking frame or ``DELETE`` without its session's token, or with another; 404 no such
session (ended or expired); 409 a session name in use; 429 a client's share of sessions in use; 501
``aligned``/``pose`` asked for but not available in this installation; 503 busy, or every
live-tracking session in use (429 and 503 with ``Retry-After``); 500 anything else. Every error is
JSON ``{"error", "detail"}``. A client that hangs up mid-upload is one INFO line in the server log.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from http import HTTPStatus
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import parse_options_header
from starlette.requests import ClientDisconnect
from starlette.types import Message

import facemark
from facemark.api import ALIGNED_SIZE, MIN_QUALITY, Landmarker
from facemark.detectors import DEFAULT_DETECTOR
from facemark.images import MAX_PIXELS, ImageError, ImageHeaderTooLong, ImageTooLarge, decode_image, image_header
from facemark.runtime import model_digest
from facemark.track import VideoTracker

log = logging.getLogger("uvicorn.error")  # uvicorn's server log, which shows INFO lines


# -- response schemas ----------------------------------------------------------------------

class ImageInfo(BaseModel):
    width: int
    height: int


class Pose(BaseModel):
    yaw: float = Field(description="degrees; > 0: the face turns toward the image's right (the subject's left)")
    pitch: float = Field(description="degrees; > 0: the face looks up")
    roll: float = Field(description="degrees; > 0: the face is rotated counter-clockwise on screen")


class FaceOut(BaseModel):
    box: list[float] = Field(description="detector box (x0, y0, x1, y1), 0-based pixel-centre coordinates")
    score: float
    points: list[list[float]] = Field(description="(K, 2) points (x, y) in image pixels")
    pose: Pose | None = Field(None, description="with pose=true; null when it cannot be estimated, with pose_reason")
    pose_reason: str | None = Field(None, description="why pose is null (e.g. the model's point scheme has too few "
                                    "pose points)")
    quality: float | None = Field(None, description="0..1, estimated probability that the fit is good (NME <= 8 %); "
                                  "left out for models without a calibration")
    point_scores: list[float] | None = Field(None, description="(K,) 0..1 per point: probability that the point is "
                                             "within 8 % of the inter-ocular distance; left out likewise")
    aligned_png_base64: str | None = Field(None, description=f"{ALIGNED_SIZE}x{ALIGNED_SIZE} aligned crop, PNG, base64")
    track_id: int | None = Field(None, description="/v1/track only: the face's id, stable from frame to frame of a session")


class ModelInfo(BaseModel):
    name: str
    model_sha256: str = Field(description="the model file's SHA-256 (64 hex digits): the one model identity "
                                          "predict's JSON and bulk's settings record too")
    num_points: int
    backend: str
    detector: str
    facemark_version: str


class LandmarksOut(BaseModel):
    image: ImageInfo
    faces: list[FaceOut]
    model: ModelInfo


class TrackOut(LandmarksOut):
    session: str
    frame: int = Field(description="frames this session has seen, this one included")


class SessionOut(BaseModel):
    session: str = Field(description="the session's name: send its frames to POST /v1/track/{session}")
    token: str = Field(description="the session's secret: send it with each frame and with DELETE, as "
                                   "'Authorization: Bearer TOKEN' or 'X-Session-Token: TOKEN'")
    idle_s: float = Field(description="the session expires this many seconds after its last frame")
    max_age_s: float = Field(description="and in any case this many seconds after it was opened")


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

async def read_body(request: Request, limit: int, arrived=None) -> bytes:
    """The image bytes of a raw body or of the ``file`` field of a multipart form, at most ``limit`` bytes.

    Bytes are counted as they arrive (the ``Content-Length`` header may lie or be absent), and a
    multipart form is parsed while it streams in, so nothing over the limit is ever held.
    ``arrived(n)`` is called with the size of each piece of the body as it comes in.
    """
    def too_large() -> ServiceError:
        return ServiceError(413, "upload_too_large", f"the upload is over the {limit / 2**20:g} MB limit")

    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ServiceError(400, "bad_request", f"invalid Content-Length header {length!r}")
        if int(length) > limit:
            raise too_large()
    received = 0

    async def receive() -> Message:
        nonlocal received
        message = await request.receive()
        size = len(message.get("body", b""))
        received += size
        if received > limit:
            raise too_large()
        if arrived is not None and size:
            arrived(size)
        return message

    counted = Request(request.scope, receive)
    media_type, _ = parse_options_header(request.headers.get("content-type", ""))  # lower-cased, as Starlette reads it
    if media_type == b"multipart/form-data":
        body = await _multipart_file(counted)
    else:
        body = bytearray()
        async for chunk in counted.stream():
            body += chunk
    if not body:
        raise ServiceError(400, "empty_body", "no image: send the image as the raw body or as the multipart field 'file'")
    return bytes(body)


async def _multipart_file(request: Request) -> bytes:
    try:
        form = await request.form(max_files=1, max_fields=16)
    except (ServiceError, ClientDisconnect):
        raise
    except Exception as err:
        raise ServiceError(400, "bad_request", _multipart_problem(err)) from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise ServiceError(400, "bad_request", "the multipart body has no file field named 'file'")
        return await upload.read()
    finally:
        await form.close()


def _multipart_problem(err: BaseException) -> str:
    """What is wrong with a multipart body, from the deepest cause (Starlette says only "Invalid multipart data")."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    causes = " ".join(str(getattr(e, "detail", e)) for e in chain)
    if "header size" in causes.lower():
        return ("a multipart part header is too long (over the parser's limit of about 4 kB): "
                "is the file name thousands of characters long? Send a shorter file name")
    return f"malformed multipart body: {getattr(chain[-1], 'detail', chain[-1])}"


def _optional(module: str, name: str, flag: str):
    """``facemark.<module>.<name>`` for an optional output, or 501 when this installation lacks it."""
    try:
        return getattr(importlib.import_module(f"facemark.{module}"), name)
    except (ImportError, AttributeError) as err:
        raise ServiceError(501, "not_available",
                           f"{flag}=true needs facemark.{module}.{name}, not available in this installation ({err})") from None


# -- the service ---------------------------------------------------------------------------

class _Session:
    """One live-tracking client's session: its :class:`VideoTracker` (driven a frame at a time), a
    lock (two frames of one session never run at once), the owner's token and address, and when it
    was made and last sent a frame, on the server's clock."""

    def __init__(self, landmarker: Landmarker, every: int, client: str, now: float):
        self.tracker = VideoTracker(landmarker, every=every)
        self.lock = threading.Lock()
        self.token = secrets.token_urlsafe(24)  # 192 random bits: the session's only credential
        self.client = client
        self.started = self.used = now

    def expires(self, idle_s: float, max_age_s: float) -> float:
        """When this session is dropped unless it sends a frame (and in any case at ``max_age_s``)."""
        return min(self.used + idle_s, self.started + max_age_s)


class Service:
    """The loaded model, the bounded inference pool, the request limits and the tracking sessions of one app."""

    def __init__(self, landmarker: Landmarker, detector: str, max_upload_bytes: int, max_pixels: int,
                 workers: int, queue: int, max_sessions: int = 8, session_idle_s: float = 15.0,
                 upload_timeout_s: float = 30.0, min_upload_rate: float = 8192, upload_grace_s: float = 5.0,
                 sessions_per_client: int = 2, session_max_age_s: float = 600.0, refusal_delay_s: float = 1.0):
        self.landmarker, self.workers, self.queue = landmarker, workers, queue
        self.upload_timeout_s = upload_timeout_s  # an upload is cut off after this long, however fast
        self.min_upload_rate, self.upload_grace_s = min_upload_rate, upload_grace_s  # bytes/s after the grace
        self.max_sessions, self.session_idle_s = max_sessions, session_idle_s
        self.sessions_per_client, self.session_max_age_s = sessions_per_client, session_max_age_s
        self.refusal_delay_s = refusal_delay_s  # an image refused from its header is answered this much later
        self.sessions: OrderedDict[str, _Session] = OrderedDict()  # least recently used first
        self._sessions_lock = threading.Lock()
        self.clock = time.monotonic  # the server's clock: sessions expire on it, whatever clients send
        self.max_upload_bytes, self.max_pixels = max_upload_bytes, max_pixels
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="facemark-infer")
        # the header checks of uploads that are in, before they take a place: a refused image never
        # waits in the queue nor holds a place (each check is bounded: a few ms, see check_header)
        self.checks = ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="facemark-check")
        # `workers` running + `queue` waiting, taken once a body is in; a slot is freed when its job
        # ends, not when its request ends, so a client that hangs up cannot free a slot that its job
        # still occupies
        self.slots = threading.BoundedSemaphore(workers + queue)
        # the bytes of bodies held in memory, as they arrive: uploads in progress and jobs alike
        self.budget = _Budget((workers + queue) * max_upload_bytes)
        self._local = threading.local()
        digest = model_digest(landmarker.model_path)  # the one identity of a model: its file's sha256
        self.model_info = ModelInfo(name=landmarker.name, model_sha256=digest, num_points=landmarker.num_points,
                                    backend=landmarker.backend, detector=detector,
                                    facemark_version=facemark.__version__).model_dump()

    def admit(self) -> _Place:
        """A request's share of the service, before its body is read: 503 at once when every worker and
        queue place is taken (none is held yet: :meth:`_Place.take_slot` takes one once the body is in)."""
        if not self.slots.acquire(blocking=False):
            raise self._busy()
        self.slots.release()
        return _Place(self)

    def _busy(self) -> ServiceError:
        return ServiceError(503, "busy", f"all {self.workers} workers are busy and {self.queue} requests are "
                                         "queued; retry shortly", {"Retry-After": "1"})

    async def run(self, place: _Place, fn, *args):
        """``fn(*args)`` in the pool; ``place`` is given back when the job ends (not when the request does)."""
        try:
            future = self.pool.submit(fn, *args)
        except BaseException:
            place.release()
            raise
        future.add_done_callback(lambda _: place.release())
        return await asyncio.wrap_future(future)

    def _worker_landmarker(self) -> Landmarker:
        lm = getattr(self._local, "lm", None)
        if lm is None:
            # the model is shared (ONNX Runtime sessions and eval-mode torch modules may be called from
            # several threads); detectors keep scratch state (dlib's do), so each worker builds its own
            lm = self._local.lm = self.landmarker.with_own_detector()
        return lm

    def check_header(self, data: bytes) -> None:
        """Every check of the upload's header that comes before decoding (in the check pool, never on
        the event loop): :func:`facemark.images.image_header`'s bounded walk (at most 1,000 markers,
        the scan cap), format and declared size. It costs a few ms whatever the upload (a 215 kB
        scan bomb: ~3 ms), so it runs before the request takes a worker or queue place."""
        with _refusals():
            image_header(data, "upload", self.max_pixels)

    def decode(self, data: bytes):
        """The upload's pixels (in a worker thread, never on the event loop), by the one image loader:
        header length, declared size, format, truncation and EXIF orientation all handled there."""
        with _refusals():
            return decode_image(data, "upload", max_pixels=self.max_pixels)

    def infer(self, data: bytes, max_faces: int | None, aligned: bool = False, pose: bool = False) -> dict:
        """Decode and run one image (in a worker thread); the faces come whole from the Landmarker."""
        image = self.decode(data)
        height, width = image.shape[:2]
        faces = self._worker_landmarker().detect(image, max_faces, pose=pose, aligned=aligned)
        return {"image": {"width": width, "height": height}, "faces": [face.to_dict() for face in faces],
                "model": self.model_info}

    def open_session(self, name: str | None, client: str) -> tuple[str, _Session]:
        """A new tracking session for ``client`` (an address), named ``name`` or a random name; its
        token is the only way to send it frames or end it. Expired sessions are dropped first; then
        409 when the name is taken, 429 when ``client`` already holds ``sessions_per_client``, 503 when
        ``max_sessions`` are live (``Retry-After``: when the first one expires). No live session is
        ever dropped for a new one."""
        with self._sessions_lock:
            now = self._expire()
            name = name or f"s-{secrets.token_urlsafe(9)}"
            if name in self.sessions:
                raise ServiceError(409, "session_exists", f"a live-tracking session named {name!r} exists; "
                                                          "choose another name (or leave it to the server)")
            held = [s for s in self.sessions.values() if s.client == client]
            if len(held) >= self.sessions_per_client:
                raise ServiceError(429, "too_many_sessions",
                                   f"this client already holds {len(held)} live-tracking sessions (the limit per "
                                   "client); end one (DELETE with its token) or let it expire",
                                   {"Retry-After": self._retry_after(held, now)})
            if len(self.sessions) >= self.max_sessions:
                raise ServiceError(503, "sessions_full",
                                   f"all {self.max_sessions} live-tracking sessions are in use; one expires after "
                                   f"{self.session_idle_s:g} s without frames, or {self.session_max_age_s:g} s "
                                   "after it was opened", {"Retry-After": self._retry_after(self.sessions.values(), now)})
            session = self.sessions[name] = _Session(self.landmarker, TRACK_EVERY, client, now)
            return name, session

    def owned_session(self, name: str, token: str | None, touch: bool = False, end: bool = False) -> _Session:
        """The live session ``name`` if ``token`` is its token: 401 without a token, 404 when there is
        no such session (never opened, ended or expired), 403 for a wrong token. ``touch``: a frame
        arrived (the idle clock starts again); ``end``: the session ends."""
        if not token:
            raise ServiceError(401, "token_required", "send the session's token (from POST /v1/track) as "
                                                      "'Authorization: Bearer TOKEN' or 'X-Session-Token: TOKEN'",
                               {"WWW-Authenticate": "Bearer"})
        with self._sessions_lock:
            now = self._expire()
            session = self.sessions.get(name)
            if session is None:
                raise ServiceError(404, "no_such_session", f"no live-tracking session {name!r}: it ended or "
                                                           "expired (open a new one with POST /v1/track)")
            if not secrets.compare_digest(session.token.encode(), token.encode()):
                raise ServiceError(403, "wrong_token", f"that is not the token of session {name!r}")
            if touch:
                session.used = now
                self.sessions.move_to_end(name)
            if end:
                del self.sessions[name]
            return session

    def end_session(self, name: str, token: str | None) -> None:
        """End session ``name`` (its token required, as for :meth:`owned_session`)."""
        self.owned_session(name, token, end=True)

    def _expire(self) -> float:
        """Drop the sessions idle for ``session_idle_s`` or older than ``session_max_age_s`` (the server's
        clock; call with the lock held); the time now."""
        now = self.clock()
        for key in [k for k, s in self.sessions.items() if now >= s.expires(self.session_idle_s, self.session_max_age_s)]:
            del self.sessions[key]
        return now

    def _retry_after(self, sessions, now: float) -> str:
        first = min(s.expires(self.session_idle_s, self.session_max_age_s) for s in sessions)
        return str(max(1, math.ceil(first - now)))

    def track(self, name: str, token: str, data: bytes) -> dict:
        """One frame of a tracking session (in a worker thread): the same faces as :meth:`infer`, with
        ``track_id``; a frame that does not decode leaves the session as it was."""
        image = self.decode(data)
        height, width = image.shape[:2]
        session = self.owned_session(name, token, touch=True)  # it may have expired while the frame queued
        with session.lock:
            session.tracker.landmarker = self._worker_landmarker()  # this worker's detector
            faces = session.tracker.push(image, self.clock() - session.started)
            frame = session.tracker.frames
        return {"session": name, "frame": frame, "image": {"width": width, "height": height},
                "faces": [face.to_dict() for face in faces], "model": self.model_info}


@contextmanager
def _refusals():
    """The image loader's refusals as answers: 400 a header too long to walk, 413 over a cap, 415 the rest."""
    try:
        yield
    except ImageHeaderTooLong as err:
        raise ServiceError(400, "header_too_long", err.reason) from None
    except ImageTooLarge as err:
        raise ServiceError(413, "image_too_large", err.reason) from None
    except ImageError as err:
        raise ServiceError(415, "unsupported_media_type", err.reason) from None


CHECK_THREADS = 2  # threads of the header-check pool: a check is a few ms, so two keep a slow one from queueing others
TRACK_EVERY = 5  # detector period of a live session, in frames (a webcam page sends a few frames a second)
SESSION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _Budget:
    """Bytes of request bodies in memory, at most ``total``; thread-safe (jobs end in worker threads)."""

    def __init__(self, total: int):
        self.total, self.used = total, 0
        self._lock = threading.Lock()

    def take(self, size: int) -> bool:
        with self._lock:
            if self.used + size > self.total:
                return False
            self.used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self.used -= size


class _Place:
    """A request's share of its service: the bytes of its body (against the memory budget, as they
    arrive) and, once the body is in, one of the ``workers + queue`` slots; :meth:`release` gives
    back both (once)."""

    def __init__(self, service: Service):
        self._service, self._held = service, True
        self.bytes, self._slot = 0, False

    def take_bytes(self, size: int) -> None:
        """Count ``size`` more body bytes; 503 when the uploads in progress already hold the budget."""
        if not self._service.budget.take(size):
            raise ServiceError(503, "busy", f"uploads in progress already hold the server's "
                                            f"{self._service.budget.total / 2**20:g} MB for request bodies; retry shortly",
                               {"Retry-After": "1"})
        self.bytes += size

    def take_slot(self) -> None:
        """One of the workers + queue places, for a body that is in; 503 when none is free."""
        if not self._service.slots.acquire(blocking=False):
            raise self._service._busy()
        self._slot = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._service.budget.give(self.bytes)
            if self._slot:
                self._service.slots.release()


# -- routes --------------------------------------------------------------------------------

router = APIRouter()
_ERRORS = {code: {"model": ErrorOut} for code in (400, 408, 413, 415, 422, 501, 503)}
# answers are checked against the schemas above and keep exactly the keys they were given (exclude_unset):
# a face's keys are those of Face.to_dict, its one JSON form, "pose": null with its reason included
_BODY = {  # the body is read by hand (to cap its size), so describe it to OpenAPI here
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                           "properties": {"file": {"type": "string", "format": "binary"}}}},
        "image/*": {"schema": {"type": "string", "format": "binary"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    }},
}


async def _admit_and_read(request: Request, service: Service):
    """The body, its header checked, then a worker or queue place: 503 before a byte of the body is
    read when every place is taken (a full queue costs no memory); while the body arrives only its
    bytes are held (against the memory budget), and it must keep up ``min_upload_rate`` after
    ``upload_grace_s`` and be in within ``upload_timeout_s`` (408). Once it is in, its header is
    checked in the check pool (:meth:`Service.check_header`, a few ms): an image refused there (400,
    413, 415) never takes a place, so refusals cannot crowd good requests out of the queue. Everything
    is given back if the body is refused. Nothing is parsed here, on the event loop."""
    place = service.admit()
    loop = asyncio.get_running_loop()
    started = loop.time()
    cutoff = started + service.upload_timeout_s
    checked = None
    try:
        try:
            async with asyncio.timeout(min(cutoff, started + service.upload_grace_s)) as deadline:
                def arrived(size: int) -> None:
                    place.take_bytes(size)  # and the deadline moves on by the time those bytes buy
                    deadline.reschedule(min(cutoff, started + service.upload_grace_s + place.bytes / service.min_upload_rate))

                data = await read_body(request, service.max_upload_bytes, arrived)
        except TimeoutError:
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            if loop.time() >= cutoff:
                error, detail = "upload_timeout", (f"the upload took longer than {service.upload_timeout_s:g} s; "
                                                   "send it again on a faster connection")
            else:
                error, detail = "upload_too_slow", (f"the upload fell below {service.min_upload_rate:g} bytes/s after "
                                                    f"{service.upload_grace_s:g} s ({place.bytes} bytes in "
                                                    f"{loop.time() - started:.1f} s)")
            log.info("%s: upload to %s cut off: %s", client, request.url.path, error)
            raise ServiceError(408, error, detail) from None
        checked = service.checks.submit(service.check_header, data)
        try:
            await asyncio.wrap_future(checked)
            refused = None
        except ServiceError as err:  # a fresh one: this one's traceback holds the upload's bytes
            refused = ServiceError(err.status, err.error, err.detail, err.headers)
        if refused is not None:
            # refused from its header: given back at once, answered refusal_delay_s later (a wait that
            # holds nothing but the connection), so a client re-sending such images as fast as it is
            # answered costs the server a few ms per connection per delay, not its CPU
            place.release()
            data = checked = None
            if service.refusal_delay_s:
                await asyncio.sleep(service.refusal_delay_s)
            raise refused
        place.take_slot()
    except BaseException:
        if checked is not None and not checked.done():  # cancelled mid-check: its bytes count until it ends
            checked.add_done_callback(lambda _: place.release())
        else:
            place.release()
        raise
    return place, data


@router.post("/v1/landmarks", response_model=LandmarksOut, response_model_exclude_unset=True, responses=_ERRORS,
             openapi_extra=_BODY, summary="Faces and their landmarks in an image")
async def landmarks(
    request: Request,
    max_faces: int | None = Query(None, ge=1, le=100, description="at most this many faces, highest score first"),
    aligned: bool = Query(False, description=f"add each face's {ALIGNED_SIZE}x{ALIGNED_SIZE} aligned crop (PNG, base64)"),
    pose: bool = Query(False, description="add each face's head pose (yaw, pitch, roll in degrees)"),
) -> dict:
    """Send an image (JPEG, PNG, WebP, BMP, TIFF, PPM) as the raw body or as the multipart field ``file``."""
    service: Service = request.app.state.service
    if aligned:  # 501 before any work
        _optional("align", "align_face", "aligned")
    if pose:
        _optional("pose", "head_pose", "pose")
    place, data = await _admit_and_read(request, service)
    return await service.run(place, service.infer, data, max_faces, aligned, pose)


_SESSION_ERRORS = {**_ERRORS, **{code: {"model": ErrorOut} for code in (401, 403, 404, 409, 429)}}
_BEARER = HTTPBearer(auto_error=False, description="a live-tracking session's token (from POST /v1/track)")
_TOKEN_HEADER = APIKeyHeader(name="X-Session-Token", auto_error=False,
                             description="a live-tracking session's token (from POST /v1/track)")


def session_token(bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
                  header: Annotated[str | None, Security(_TOKEN_HEADER)]) -> str | None:
    """The token a request carries: ``Authorization: Bearer TOKEN`` or ``X-Session-Token: TOKEN``."""
    return bearer.credentials if bearer is not None else header


def _check_name(session: str) -> None:
    if not SESSION_NAME.fullmatch(session):
        raise ServiceError(422, "invalid_request", "session: 1-64 characters of A-Z a-z 0-9 _ -")


@router.post("/v1/track", status_code=201, response_model=SessionOut, responses=_SESSION_ERRORS,
             summary="Open a live tracking session")
async def open_track(
    request: Request, response: Response,
    session: str | None = Query(None, description="a name of your choosing "
                                "(1-64 of A-Z a-z 0-9 _ -); by default the server picks one"),
) -> dict:
    """Open a session (no body) for the frames of one video (a webcam): the answer's ``token`` must
    come with each of its frames and with its ``DELETE``, as ``Authorization: Bearer TOKEN`` (or
    ``X-Session-Token: TOKEN``). Sessions are few (8 by default, 2 per client address): 429
    ``too_many_sessions`` past a client's share, 503 ``sessions_full`` while all are in use (both
    with ``Retry-After``); no live session is ever dropped for a new one. A session expires, on the
    server's clock, ``idle_s`` after its last frame and in any case ``max_age_s`` after it was opened."""
    service: Service = request.app.state.service
    if session is not None:
        _check_name(session)
    client = request.client.host if request.client else ""
    name, opened = service.open_session(session, client)
    response.headers["Location"] = f"/v1/track/{name}"
    return {"session": name, "token": opened.token, "idle_s": service.session_idle_s,
            "max_age_s": service.session_max_age_s}


@router.post("/v1/track/{session}", response_model=TrackOut, response_model_exclude_unset=True,
             responses=_SESSION_ERRORS, openapi_extra=_BODY,
             summary="One frame of a live video: faces followed from frame to frame")
async def track(request: Request, session: str, token: str | None = Depends(session_token)) -> dict:
    """Send the frames of one video one at a time, each as in ``/v1/landmarks``, to a session opened
    with ``POST /v1/track``, with its token. The server keeps a tracker per session
    (``Landmarker.track``: the detector every few frames, points followed and smoothed in between, a
    stable ``track_id`` per face). 401 without a token, 403 with another session's, 404 once the
    session has ended or expired (open a new one)."""
    service: Service = request.app.state.service
    _check_name(session)
    service.owned_session(session, token)  # 401/403/404 before the body is read
    place, data = await _admit_and_read(request, service)
    return await service.run(place, service.track, session, token, data)


@router.delete("/v1/track/{session}", status_code=204, responses=_SESSION_ERRORS,
               summary="End a live tracking session")
async def end_track(request: Request, session: str, token: str | None = Depends(session_token)) -> Response:
    """End a session (its token required, as for its frames); its place is free at once."""
    _check_name(session)
    request.app.state.service.end_session(session, token)
    return Response(status_code=204)


@router.get("/healthz", response_model=HealthOut, summary="Liveness: the model is loaded")
async def healthz(request: Request) -> dict:
    service: Service | None = getattr(request.app.state, "service", None)
    return {"status": "ok" if service else "starting", "model_loaded": service is not None,
            "model": service.model_info["name"] if service else ""}


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse((files("facemark.serve") / "static" / "index.html").read_text(encoding="utf-8"))


# -- the app -------------------------------------------------------------------------------

def build_landmarker(model: str = "default", backend: str | None = None, detector: str | None = None,
                     workers: int = 2, min_quality: float | None = MIN_QUALITY) -> Landmarker:
    """The service's :class:`Landmarker`, model and detector loaded (a bad one fails here, not at the
    first request): ONNX Runtime threads per worker, so that the workers together use the cores once
    (torch's thread count is process-wide, so it is left to the caller)."""
    threads = None if backend == "torch" else max(1, (os.cpu_count() or 1) // workers)
    landmarker = Landmarker(model, backend=backend, detector=detector, num_threads=threads, min_quality=min_quality)
    landmarker.detector  # noqa: B018 - load now
    return landmarker


def create_app(model: str = "default", backend: str | None = None, detector: str | None = None,
               max_upload_mb: float = 10, max_pixels: int | None = None, workers: int = 2, queue: int = 8,
               max_sessions: int = 8, session_idle_s: float = 15.0, upload_timeout_s: float = 30.0,
               min_upload_rate: float = 8192, upload_grace_s: float = 5.0,
               min_quality: float | None = MIN_QUALITY, sessions_per_client: int = 2,
               session_max_age_s: float = 600.0, refusal_delay_s: float = 1.0,
               landmarker: Landmarker | None = None) -> FastAPI:
    """The ASGI app; the model loads once, when the server starts (the lifespan handler), unless a
    ``landmarker`` built by :func:`build_landmarker` is given (``facemark serve`` builds it first, so
    that a bad model is one line before the server starts; then ``model``, ``backend``, ``detector``
    and ``min_quality`` are its own and only name it).

    ``max_pixels``: the largest image accepted (default :data:`facemark.images.MAX_PIXELS`);
    ``min_quality``: detected faces below this fit quality are left out (:class:`facemark.Landmarker`);
    ``workers``: inference threads; ``queue``: requests allowed to wait for one before 503;
    ``max_sessions``, ``sessions_per_client``: live tracking sessions kept (``/v1/track``), in all and
    per client address; ``session_idle_s``, ``session_max_age_s``: a session expires that long after its
    last frame, and in any case that long after it was opened; ``refusal_delay_s``: an upload refused
    from its header (400, 413, 415 before it takes a place) is answered this much later, holding only
    its connection (0: at once);
    ``upload_timeout_s``: an upload still arriving after this long is answered 408; ``min_upload_rate``
    (bytes/s), ``upload_grace_s``: one that falls below that rate after the grace is answered 408 at once.
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if (workers < 1 or queue < 0 or max_upload_mb <= 0 or max_pixels < 1 or max_sessions < 1 or session_idle_s <= 0
            or not upload_timeout_s > 0 or not min_upload_rate > 0 or not upload_grace_s > 0
            or sessions_per_client < 1 or not session_max_age_s > 0 or not 0 <= refusal_delay_s <= 60):
        raise ValueError("need workers >= 1, queue >= 0, max_upload_mb > 0, max_pixels >= 1, max_sessions >= 1, "
                         "session_idle_s > 0, upload_timeout_s > 0, min_upload_rate > 0, upload_grace_s > 0, "
                         "sessions_per_client >= 1, session_max_age_s > 0 and refusal_delay_s in 0..60")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        lm = landmarker or build_landmarker(model, backend, detector, workers, min_quality)
        service = Service(lm, detector or DEFAULT_DETECTOR, int(max_upload_mb * 2**20), max_pixels,
                          workers, queue, max_sessions, session_idle_s, upload_timeout_s, min_upload_rate,
                          upload_grace_s, sessions_per_client, session_max_age_s, refusal_delay_s)
        app.state.service = service
        try:
            yield
        finally:
            app.state.service = None
            service.pool.shutdown(wait=False, cancel_futures=True)
            service.checks.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="facemark", version=facemark.__version__, lifespan=lifespan,
                  description="2D facial landmarks: POST an image to /v1/landmarks, "
                              "or a webcam's frames one at a time to a session opened with POST /v1/track.")
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

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, err: ClientDisconnect) -> Response:
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s hung up before its upload to %s was complete", client, request.url.path)
        return Response(status_code=400)  # nobody is left to read it

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        return _error_response(500, "internal_error", f"{type(err).__name__}: {err}")

    return app
