"""The HTTP service: answers, every input-safety rule, backpressure, and the page and docs being served.

Runs the untrained ``tiny_checkpoint`` on the torch backend, so nothing here depends on the
shipped default model; faces are found by the default detector (MTCNN, shipped with facemark).
"""

from __future__ import annotations

import importlib.util
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from facemark.detectors import DEFAULT_DETECTOR
from facemark.serve.app import ServiceError, create_app

DETECTOR = DEFAULT_DETECTOR
FACES = ("afw/134212_1", "afw/1051618982_1")  # 300w-lite photos with one frontal face each
URL = "/v1/landmarks"


def make_app(tiny_checkpoint, **kw):
    kw.setdefault("refusal_delay_s", 0)  # refusals answered at once, unless a test is about the delay
    return create_app(model=str(tiny_checkpoint), backend="torch", detector=DETECTOR, **kw)


@pytest.fixture(scope="module")
def client(tiny_checkpoint):
    with TestClient(make_app(tiny_checkpoint)) as client:
        yield client


@pytest.fixture(scope="module")
def face_jpeg(lite_root) -> bytes:
    return (lite_root / f"{FACES[0]}.jpg").read_bytes()


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    return cv2.imencode(ext, image)[1].tobytes()


def png_declaring(width: int, height: int) -> bytes:
    """A few-hundred-byte PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")


def open_session(client, name: str | None = None, **headers) -> tuple[str, dict]:
    """A live-tracking session: ``(name, headers carrying its token)``."""
    response = client.post("/v1/track", params={"session": name} if name else None, headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    return body["session"], {"authorization": f"Bearer {body['token']}"}


def assert_error(response, status: int, error: str | None = None):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    if error:
        assert body["error"] == error, body


# -- answers -------------------------------------------------------------------------------

def test_real_face_multipart_upload(client, face_jpeg):
    response = client.post(URL, files={"file": ("face.jpg", face_jpeg, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"width": 370, "height": 401}
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    assert np.isfinite(np.array(face["points"])).all() and np.array(face["points"]).shape == (68, 2)
    assert len(face["box"]) == 4 and face["score"] > 0
    assert "pose" not in face and "aligned_png_base64" not in face  # only when asked for
    model = body["model"]
    assert model["name"].startswith("seed_senet@") and model["num_points"] == 68 and len(model["model_sha256"]) == 64


def test_raw_body_gives_the_same_answer(client, face_jpeg):
    raw = client.post(URL, content=face_jpeg, headers={"content-type": "image/jpeg"})
    form = client.post(URL, files={"file": ("x.bin", face_jpeg, "application/octet-stream")})
    assert raw.status_code == form.status_code == 200
    assert raw.json() == form.json()


def test_no_face_in_a_flat_grey_image(client):
    response = client.post(URL, content=encode(np.full((240, 320, 3), 128, np.uint8)))
    assert response.status_code == 200, response.text
    assert response.json()["faces"] == [] and response.json()["image"] == {"width": 320, "height": 240}


def test_two_faces_side_by_side_and_max_faces(client, lite_root):
    images = [cv2.imread(str(lite_root / f"{name}.jpg")) for name in FACES]
    height = min(image.shape[0] for image in images)
    both = np.hstack([cv2.resize(image, (round(image.shape[1] * height / image.shape[0]), height)) for image in images])
    response = client.post(URL, content=encode(both, ".jpg"))
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 2
    assert sorted(f["box"][0] < both.shape[1] / 2 for f in faces) == [False, True]  # one face in each half
    assert len(client.post(URL, params={"max_faces": 1}, content=encode(both, ".jpg")).json()["faces"]) == 1


@pytest.mark.parametrize(("flag", "module", "field"), [("aligned", "align", "aligned_png_base64"), ("pose", "pose", "pose")])
def test_optional_outputs_or_501(client, face_jpeg, flag, module, field):
    response = client.post(URL, params={flag: "true"}, content=face_jpeg)
    if importlib.util.find_spec(f"facemark.{module}") is None:
        assert_error(response, 501, "not_available")
        return
    assert response.status_code == 200, response.text
    face = response.json()["faces"][0]
    if field == "pose":
        assert set(face["pose"]) == {"yaw", "pitch", "roll"}
    else:
        import base64

        crop = cv2.imdecode(np.frombuffer(base64.b64decode(face[field]), np.uint8), cv2.IMREAD_COLOR)
        assert crop.shape == (112, 112, 3)


def test_answers_are_face_to_dict_and_a_pose_that_cannot_be_had_is_null_with_why(tiny_checkpoint, face_jpeg):
    """The HTTP faces are Face.to_dict's (the one JSON form): a scheme with no pose points answers
    ``"pose": null`` and ``"pose_reason"``, not a silently missing pose."""
    import dataclasses

    from facemark.api import Landmarker
    from facemark.schemes import get_scheme

    bare = dataclasses.replace(get_scheme(68), pose_points=())
    with TestClient(make_app(tiny_checkpoint)) as client:
        lm = client.app.state.service.landmarker  # before any worker copies it: its points and the model's
        lm.scheme = lm.model_scheme = bare
        response = client.post(URL, params={"pose": "true", "aligned": "true"}, content=face_jpeg)
    assert response.status_code == 200, response.text
    face = response.json()["faces"][0]
    assert face["pose"] is None and "has no pose points" in face["pose_reason"]
    lm = Landmarker(str(tiny_checkpoint), backend="torch", detector=DETECTOR, scheme=bare)
    image = cv2.imdecode(np.frombuffer(face_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert face == lm.detect(image, pose=True, aligned=True)[0].to_dict()
    assert all(v == round(v, 2) for v in face["box"])


# -- bad input: a JSON error, and the server stays up -----------------------------------------

def test_garbage_bytes_are_415(client):
    assert_error(client.post(URL, content=b"this is not an image" * 50), 415, "unsupported_media_type")
    # an image extension and MIME type do not make it one: the bytes are sniffed
    assert_error(client.post(URL, files={"file": ("face.jpg", b"\xff\xd8 not really", "image/jpeg")}), 415)


def test_empty_bodies_are_400(client):
    assert_error(client.post(URL, content=b""), 400, "empty_body")
    assert_error(client.post(URL, files={"file": ("empty.jpg", b"", "image/jpeg")}), 400, "empty_body")
    assert_error(client.post(URL, files={"other": ("a.jpg", b"123", "image/jpeg")}), 400, "bad_request")


def test_truncated_jpeg_is_415(client, face_jpeg):
    """Documented choice: a truncated file is not a decodable image -> 415 (not 400)."""
    for cut in (len(face_jpeg) // 2, len(face_jpeg) - 100, 300):
        assert_error(client.post(URL, content=face_jpeg[:cut]), 415, "unsupported_media_type")
    assert client.get("/healthz").status_code == 200


def test_huge_declared_dimensions_are_413_before_decoding(client, tiny_checkpoint):
    bomb = png_declaring(30000, 30000)
    assert len(bomb) < 1000
    assert_error(client.post(URL, content=bomb), 413, "image_too_large")
    response = client.post(URL, content=png_declaring(8000, 8000))  # 64 Mpx: over our 40 Mpx limit, under PIL's
    assert_error(response, 413, "image_too_large")
    assert "8000x8000" in response.json()["detail"]
    with TestClient(make_app(tiny_checkpoint, max_pixels=10_000)) as small:
        assert_error(small.post(URL, content=encode(np.zeros((200, 200, 3), np.uint8))), 413, "image_too_large")


def test_upload_over_the_limit_is_413(tiny_checkpoint):
    big = bytes(1_600_000)
    with TestClient(make_app(tiny_checkpoint, max_upload_mb=1)) as client:
        assert_error(client.post(URL, content=big), 413, "upload_too_large")
        assert_error(client.post(URL, files={"file": ("big.jpg", big, "image/jpeg")}), 413, "upload_too_large")
        # no Content-Length (chunked): the bytes are counted as they arrive
        assert_error(client.post(URL, content=(big[i : i + 65536] for i in range(0, len(big), 65536))), 413)
        # a lying Content-Length is not trusted either
        assert_error(client.post(URL, content=big, headers={"content-length": "100"}), 413, "upload_too_large")
        assert client.get("/healthz").json()["model_loaded"]


def test_bad_query_and_unknown_route_are_json(client):
    assert_error(client.post(URL, params={"max_faces": 0}, content=b"x"), 422, "invalid_request")
    assert_error(client.post(URL, params={"max_faces": -1}, content=b"x"), 422, "invalid_request")
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get(URL), 405, "method_not_allowed")


def block_inference(service) -> tuple[threading.Event, threading.Event]:
    """Make ``service``'s inference wait until ``gate`` is set; ``running`` is set once a job waits."""
    infer, gate, running = service.infer, threading.Event(), threading.Event()

    def blocked(*args):
        running.set()
        assert gate.wait(300)
        return infer(*args)

    service.infer = blocked
    return gate, running


def test_full_queue_is_503_with_retry_after(tiny_checkpoint, face_jpeg):
    app = make_app(tiny_checkpoint, workers=1, queue=0)
    with TestClient(app) as client:
        service = app.state.service
        gate, running = block_inference(service)  # generous timeouts: they only guard against a hang, and CI machines can be slow
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, URL, content=face_jpeg)
            assert running.wait(300)
            response = client.post(URL, content=face_jpeg)
            assert_error(response, 503, "busy")
            assert response.headers["retry-after"] == "1"
            gate.set()
            assert first.result(300).status_code == 200
        assert client.post(URL, content=face_jpeg).status_code == 200  # the slot came back


# -- the rest --------------------------------------------------------------------------------

def test_healthz_page_and_docs(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["model_loaded"] and health["model"].startswith("seed_senet@")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "window.lastResult" in page.text and "getUserMedia" in page.text
    # no request of the page answers 404: its icon is inline (no /favicon.ico), its links exist
    import re

    icons = re.findall(r'<link rel="icon" href="([^"]*)"', page.text)
    assert len(icons) == 1 and icons[0].startswith("data:image/svg+xml,"), icons
    for url in re.findall(r'(?:href|src)="(/[^"]*)"', page.text):
        assert client.get(url).status_code == 200, url
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "multipart/form-data" in spec["paths"][URL]["post"]["requestBody"]["content"]


# -- hardening: memory bounded by the queue, what goes wrong said plainly ----------------------

def _scope(app, path: str = URL, content_type: str = "image/jpeg") -> dict:
    headers = [(b"content-type", content_type.encode()), (b"host", b"testserver")]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "root_path": "", "app": app}


async def _asgi_call(app, receive, path: str = URL, content_type: str = "image/jpeg"):
    """One request straight to the ASGI app with the given ``receive``; ``(status, JSON body or None)``."""
    import json

    sent = []

    async def send(message):
        sent.append(message)

    await app(_scope(app, path, content_type), receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body) if body.startswith(b"{") else None


async def _asgi_post(app, chunks: list[bytes], content_type: str = "image/jpeg", disconnect: bool = False,
                     delay: float = 0.0):
    """POST ``chunks`` straight to the ASGI app, ``delay`` seconds before each; ``(status, JSON body or
    None, chunks the app read)``."""
    import asyncio

    pending = list(chunks)
    read = 0

    async def receive():
        nonlocal read
        await asyncio.sleep(delay)
        if pending:
            read += 1
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or disconnect}
        return {"type": "http.disconnect"}

    status, body = await _asgi_call(app, receive, content_type=content_type)
    return status, body, read


def _stalled_upload(first: bytes):
    """``(receive, reading, release)``: a client that sends ``first`` and then nothing until ``release`` is set
    (then it hangs up); ``reading`` is set once the app has started to read its body."""
    import asyncio

    reading, release = asyncio.Event(), asyncio.Event()
    sent = False

    async def receive():
        nonlocal sent
        reading.set()
        if not sent:
            sent = True
            return {"type": "http.request", "body": first, "more_body": True}
        await release.wait()
        return {"type": "http.disconnect"}

    return receive, reading, release


def test_a_full_queue_is_503_before_the_body_is_read(tiny_checkpoint, face_jpeg):
    import asyncio

    app = make_app(tiny_checkpoint, workers=1, queue=1)
    with TestClient(app) as client:
        slots = app.state.service.slots
        assert slots.acquire(blocking=False) and slots.acquire(blocking=False)  # both places taken
        try:
            status, body, read = asyncio.run(_asgi_post(app, [face_jpeg[i : i + 4096] for i in range(0, len(face_jpeg), 4096)]))
        finally:
            slots.release()
            slots.release()
        assert (status, body["error"], read) == (503, "busy", 0)  # not one byte of the upload was taken in
        assert client.post(URL, content=face_jpeg).status_code == 200  # and the places all came back
        assert slots.acquire(blocking=False) and slots.acquire(blocking=False)
        slots.release()
        slots.release()


def test_a_multipart_upload_is_cut_off_at_the_limit_while_it_streams(tiny_checkpoint):
    import asyncio

    import httpx

    request = httpx.Request("POST", "http://x" + URL, files={"file": ("big.jpg", bytes(4 * 2**20), "image/jpeg")})
    body = request.read()
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    app = make_app(tiny_checkpoint, max_upload_mb=1)
    with TestClient(app):
        status, answer, read = asyncio.run(_asgi_post(app, chunks, request.headers["content-type"]))
    assert (status, answer["error"]) == (413, "upload_too_large")
    assert read <= 2**20 // 65536 + 1 < len(chunks)  # stopped at the limit, not after the whole 4 MB


def test_a_slow_upload_is_408_and_gives_its_place_back(tiny_checkpoint, face_jpeg):
    """An upload still arriving after ``upload_timeout_s`` is cut off: 408, and all it held is free again.
    The client sends a first part and then nothing, so only the timeout can end the request (no race
    between the client's pace and the clock); the rate rule is set out of the way (1 byte/s after an hour)."""
    import asyncio

    app = make_app(tiny_checkpoint, workers=1, queue=0, upload_timeout_s=0.3, min_upload_rate=1, upload_grace_s=3600)

    async def run():
        receive, _, release = _stalled_upload(face_jpeg[:1024])
        try:  # without the timeout the request never ends: wait_for turns that into a failure, not a hang
            return await asyncio.wait_for(_asgi_call(app, receive), 60)
        finally:
            release.set()

    with TestClient(app) as client:
        status, body = asyncio.run(run())
        assert (status, body["error"]) == (408, "upload_timeout") and "0.3 s" in body["detail"], body
        assert client.post(URL, content=face_jpeg).status_code == 200  # the only place came back


def test_a_client_that_hangs_up_is_one_info_line(tiny_checkpoint, face_jpeg, caplog):
    import asyncio
    import logging

    app = make_app(tiny_checkpoint)
    with TestClient(app), caplog.at_level(logging.INFO):
        asyncio.run(_asgi_post(app, [face_jpeg[:1000]], disconnect=True))  # then the client goes away
    records = [r for r in caplog.records if "hung up" in r.getMessage()]
    assert len(records) == 1 and records[0].levelno == logging.INFO and records[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_very_long_upload_file_name_is_named_as_the_problem(client, face_jpeg):
    response = client.post(URL, files={"file": ("a" * 10_000 + ".jpg", face_jpeg, "image/jpeg")})
    assert_error(response, 400, "bad_request")
    assert "file name" in response.json()["detail"] and "Invalid multipart data" not in response.json()["detail"]
    assert client.post(URL, files={"file": ("a" * 200 + ".jpg", face_jpeg, "image/jpeg")}).status_code == 200


# -- live tracking sessions (/v1/track/{session}) -------------------------------------------

def test_track_session_keeps_ids_across_frames(client, face_jpeg):
    name, auth = open_session(client, "cam-1")
    ids = []
    for frame in (1, 2, 3):
        response = client.post(f"/v1/track/{name}", content=face_jpeg, headers={"content-type": "image/jpeg", **auth})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["session"], body["frame"], len(body["faces"])) == ("cam-1", frame, 1)
        face = body["faces"][0]
        assert np.array(face["points"]).shape == (68, 2) and body["model"]["num_points"] == 68
        ids.append(face["track_id"])
    assert ids == [ids[0]] * 3
    # another session is its own tracker (the token also goes as X-Session-Token); ending one frees its name
    other, other_auth = open_session(client)
    token = other_auth["authorization"].removeprefix("Bearer ")
    answer = client.post(f"/v1/track/{other}", files={"file": ("f.jpg", face_jpeg, "image/jpeg")},
                         headers={"x-session-token": token}).json()
    assert answer["frame"] == 1 and answer["faces"][0]["track_id"] == 0
    assert client.delete(f"/v1/track/{name}", headers=auth).status_code == 204
    assert_error(client.post(f"/v1/track/{name}", content=face_jpeg, headers=auth), 404, "no_such_session")
    name, auth = open_session(client, "cam-1")
    assert client.post(f"/v1/track/{name}", content=face_jpeg, headers=auth).json()["frame"] == 1
    assert client.delete(f"/v1/track/{name}", headers=auth).status_code == 204
    assert client.delete(f"/v1/track/{other}", headers=other_auth).status_code == 204


def test_a_session_belongs_to_the_client_that_opened_it(client, face_jpeg):
    """Frames and DELETE need the session's token: none is 401, another session's (or a made-up one)
    403, and neither touches the session; a name that is taken cannot be opened again."""
    name, auth = open_session(client, "mine")
    other, theirs = open_session(client)
    for headers, status, error in [({}, 401, "token_required"), ({"authorization": "Basic eDp5"}, 401, "token_required"),
                                   (theirs, 403, "wrong_token"), ({"x-session-token": "guess"}, 403, "wrong_token")]:
        response = client.post(f"/v1/track/{name}", content=face_jpeg, headers=headers)
        assert_error(response, status, error)
        if status == 401:
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(client.delete(f"/v1/track/{name}", headers=headers), status, error)
    assert_error(client.post("/v1/track", params={"session": "mine"}), 409, "session_exists")
    assert client.post(f"/v1/track/{name}", content=face_jpeg, headers=auth).json()["frame"] == 1  # untouched
    assert client.delete(f"/v1/track/{name}", headers=auth).status_code == 204
    assert client.delete(f"/v1/track/{other}", headers=theirs).status_code == 204
    assert not client.app.state.service.sessions


def test_a_client_holds_at_most_its_share_of_sessions(tiny_checkpoint):
    """One client (address) opening session after session and keeping each alive gets 429 past
    ``sessions_per_client``, so the other places stay free for other clients (TestClient always comes
    from "testclient": the others open theirs through the service, as the route does)."""
    speck = encode(np.zeros((1, 1, 3), np.uint8))
    with TestClient(make_app(tiny_checkpoint, max_sessions=4, sessions_per_client=2)) as greedy:
        service = greedy.app.state.service
        held = [open_session(greedy) for _ in range(2)]
        for _ in range(10):
            response = greedy.post("/v1/track")
            assert_error(response, 429, "too_many_sessions")
            assert 1 <= int(response.headers["retry-after"]) <= 15
        for name, auth in held:  # kept active, a frame each
            assert greedy.post(f"/v1/track/{name}", content=speck, headers=auth).status_code == 200
        service.open_session(None, "10.0.0.1")
        service.open_session(None, "10.0.0.2")
        with pytest.raises(ServiceError) as full:  # all 4 in use: a third client waits for one to expire
            service.open_session(None, "10.0.0.3")
        assert (full.value.status, full.value.error) == (503, "sessions_full")
        assert sorted(s.client for s in service.sessions.values()) == ["10.0.0.1", "10.0.0.2", "testclient", "testclient"]


def test_sessions_expire_on_the_server_clock(tiny_checkpoint, face_jpeg):
    """A session is dropped ``session_idle_s`` after its last frame, and ``session_max_age_s`` after it
    was opened however often it sends frames (one frame every 14 s cannot hold a place for ever); an
    active session is never dropped for a new one (503 ``sessions_full`` with ``Retry-After``)."""
    speck = encode(np.zeros((1, 1, 3), np.uint8))
    now = [1000.0]
    with TestClient(make_app(tiny_checkpoint, max_sessions=2, session_idle_s=15, session_max_age_s=60)) as client:
        service = client.app.state.service
        service.clock = lambda: now[0]
        a, auth_a = open_session(client)
        b, auth_b = open_session(client)
        with pytest.raises(ServiceError) as full:
            service.open_session(None, "10.0.0.9")
        assert full.value.status == 503 and full.value.headers["Retry-After"] == "15"
        for _ in range(3):  # a frame every 14 s keeps a alive; b sends none
            now[0] += 14
            assert client.post(f"/v1/track/{a}", content=speck, headers=auth_a).status_code == 200
        assert_error(client.post(f"/v1/track/{b}", content=speck, headers=auth_b), 404, "no_such_session")
        assert list(service.sessions) == [a]
        now[0] += 14  # 56 s after it was opened, still active
        assert client.post(f"/v1/track/{a}", content=speck, headers=auth_a).status_code == 200
        now[0] += 5  # 61 s: past its maximum age, whatever frames it sends
        assert_error(client.post(f"/v1/track/{a}", content=speck, headers=auth_a), 404, "no_such_session")
        assert not service.sessions


def test_track_bad_session_name_and_garbage(client):
    name, auth = open_session(client)
    assert_error(client.post("/v1/track/no.dots", content=b"x", headers=auth), 422, "invalid_request")
    assert_error(client.post("/v1/track/" + "x" * 65, content=b"x", headers=auth), 422, "invalid_request")
    assert_error(client.post("/v1/track", params={"session": "no.dots"}), 422, "invalid_request")
    assert_error(client.post(f"/v1/track/{name}", content=b"not an image", headers=auth), 415)
    assert_error(client.post(f"/v1/track/{name}", headers=auth), 400, "empty_body")
    assert client.delete(f"/v1/track/{name}", headers=auth).status_code == 204


def test_track_full_queue_is_503_and_leaves_the_session_as_it_was(tiny_checkpoint, face_jpeg):
    with TestClient(make_app(tiny_checkpoint, workers=1, queue=0)) as client:
        service = client.app.state.service
        name, auth = open_session(client, "busy")
        assert service.slots.acquire(blocking=False)  # the one place taken
        try:
            response = client.post(f"/v1/track/{name}", content=face_jpeg, headers=auth)
        finally:
            service.slots.release()
        assert_error(response, 503, "busy")
        assert response.headers["retry-after"] == "1" and service.sessions["busy"].tracker.frames == 0
        assert client.post(f"/v1/track/{name}", content=face_jpeg, headers=auth).json()["frame"] == 1


# -- hardening II: crafted headers, slow clients, fair sessions, media types -------------------

def test_image_checks_and_decoding_run_in_the_worker_pool(client, face_jpeg, monkeypatch):
    """No header parse, segment walk or decode on the event loop: one crafted image must not stall every client."""
    import PIL.Image

    import facemark.images

    threads = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            threads.append(threading.current_thread().name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(PIL.Image, "open", spy(PIL.Image.open))
    monkeypatch.setattr(cv2, "imdecode", spy(cv2.imdecode))
    if hasattr(facemark.images, "check_structure"):
        monkeypatch.setattr(facemark.images, "check_structure", spy(facemark.images.check_structure))
    name, auth = open_session(client)
    assert client.post(URL, content=face_jpeg).status_code == 200
    assert client.post(f"/v1/track/{name}", content=face_jpeg, headers=auth).status_code == 200
    assert client.post(URL, content=b"not an image").status_code == 415
    # the header checks in the check pool (before a place is taken), the rest in the inference pool
    assert threads and all(name.startswith(("facemark-infer", "facemark-check")) for name in threads), threads
    assert any(name.startswith("facemark-check") for name in threads), threads
    client.delete(f"/v1/track/{name}", headers=auth)


def test_an_image_header_too_long_to_walk_is_400(client, face_jpeg):
    from facemark.images import MAX_SEGMENTS

    png = encode(np.zeros((8, 8, 3), np.uint8))
    empty_chunk = struct.pack(">I", 0) + b"prVt" + struct.pack(">I", zlib.crc32(b"prVt"))
    crafted = [b"\xff\xd8" + b"\xff" * 1_000_000 + face_jpeg[2:],  # a million fill bytes, then a valid JPEG
               b"\xff\xd8" + b"\xff\xfe\x00\x02" * (MAX_SEGMENTS + 1) + face_jpeg[2:],  # empty comments
               png[:33] + empty_chunk * (MAX_SEGMENTS + 1) + png[33:]]  # empty PNG chunks
    name, auth = open_session(client, "crafted")
    for data in crafted:
        for url in (URL, f"/v1/track/{name}"):
            response = client.post(url, content=data, headers=auth)
            assert_error(response, 400, "header_too_long")
            assert str(MAX_SEGMENTS) in response.json()["detail"]
    assert client.app.state.service.sessions["crafted"].tracker.frames == 0
    assert client.delete(f"/v1/track/{name}", headers=auth).status_code == 204
    assert client.post(URL, content=face_jpeg).status_code == 200


def test_a_truncated_jpeg_with_an_end_marker_is_415(client, face_jpeg):
    cut = face_jpeg[: len(face_jpeg) // 2] + b"\xff\xd9"  # decodes with grey rows where the data is missing
    name, auth = open_session(client)
    for url in (URL, f"/v1/track/{name}"):
        response = client.post(url, content=cut, headers=auth)
        assert_error(response, 415, "unsupported_media_type")
        assert "truncated" in response.json()["detail"]
    assert client.delete(f"/v1/track/{name}", headers=auth).status_code == 204


def test_media_types_are_case_insensitive(client, face_jpeg):
    import httpx

    request = httpx.Request("POST", "http://x" + URL, files={"file": ("face.jpg", face_jpeg, "image/jpeg")})
    body, content_type = request.read(), request.headers["content-type"]
    expected = client.post(URL, content=face_jpeg).json()
    for media_type in ("MULTIPART/FORM-DATA", "Multipart/Form-Data"):
        response = client.post(URL, content=body, headers={"content-type": content_type.replace("multipart/form-data", media_type)})
        assert response.status_code == 200, response.text
        assert response.json() == expected


def test_a_stalled_upload_holds_no_queue_place(tiny_checkpoint, face_jpeg):
    """A client trickling its body holds no worker or queue place (only the bytes it sent count
    against the memory bound), so others are served meanwhile."""
    import asyncio

    app = make_app(tiny_checkpoint, workers=1, queue=0)

    async def run():
        receive, reading, release = _stalled_upload(face_jpeg[:1])
        stalled = asyncio.ensure_future(_asgi_call(app, receive))
        await asyncio.wait_for(reading.wait(), 60)
        good = await asyncio.wait_for(_asgi_post(app, [face_jpeg]), 300)
        release.set()
        await asyncio.wait_for(stalled, 60)
        return good

    with TestClient(app):
        status, body, _ = asyncio.run(run())
    assert status == 200, body


def test_an_upload_below_the_minimum_rate_is_408_long_before_the_timeout(tiny_checkpoint, face_jpeg):
    """An upload must keep up ``min_upload_rate`` after ``upload_grace_s``; one that stalls is cut off
    then (408), not after ``upload_timeout_s``."""
    import asyncio

    app = make_app(tiny_checkpoint, min_upload_rate=1_000_000, upload_grace_s=0.2, upload_timeout_s=3600)

    async def run():
        receive, _, release = _stalled_upload(face_jpeg[:100])
        try:
            return await asyncio.wait_for(_asgi_call(app, receive), 60)  # generous: the cut comes at about 0.2 s
        finally:
            release.set()

    with TestClient(app) as client:
        status, body = asyncio.run(run())
        assert (status, body["error"]) == (408, "upload_too_slow"), body
        assert "bytes/s" in body["detail"]
        assert client.post(URL, content=face_jpeg).status_code == 200


# -- hardening III: a refused image never holds an inference place ----------------------------

def scan_bomb(size: int = 64, scans: int = 100) -> bytes:
    """A small progressive JPEG with one small scan repeated to ``scans`` scans (over the scan cap):
    the shape of bench_service's 6300 x 6300 scan bomb, cheap to build."""
    from bench.bench_service import scan_bomb_jpeg

    return scan_bomb_jpeg(size, scans)


def refused_uploads(face_jpeg: bytes) -> list[tuple[bytes, int, str]]:
    """Uploads refused from their header alone: ``(bytes, status, error)``."""
    return [(scan_bomb(), 413, "image_too_large"),
            (png_declaring(30000, 30000), 413, "image_too_large"),
            (b"\xff\xd8" + b"\xff" * 100_000 + face_jpeg[2:], 400, "header_too_long"),
            (b"this is not an image" * 50, 415, "unsupported_media_type")]


def test_an_image_refused_from_its_header_never_takes_a_worker_or_queue_place(tiny_checkpoint, face_jpeg):
    """With the one worker busy, uploads refused from their header (a scan bomb, a declared size over
    the cap, a header too long to walk, garbage) are answered at once, and the one queue place stays
    free for a good request. Before, each took the queue place and waited for the worker (bench:
    three scan-bomb clients left good clients 503 for most requests)."""
    app = make_app(tiny_checkpoint, workers=1, queue=1)
    with TestClient(app) as client:
        service = app.state.service
        gate, running = block_inference(service)
        with ThreadPoolExecutor(4) as pool:
            first = pool.submit(client.post, URL, content=face_jpeg)
            assert running.wait(300)  # the worker is busy until the gate opens
            try:
                for data, status, error in refused_uploads(face_jpeg):
                    # answered while the worker is still busy (before: it waited for the worker)
                    assert_error(pool.submit(client.post, URL, content=data).result(60), status, error)
                    assert service.slots.acquire(blocking=False)  # the queue place is free...
                    service.slots.release()
                    assert service.budget.used == len(face_jpeg)  # ...and only the running job's bytes are held
                queued = pool.submit(client.post, URL, content=face_jpeg)  # takes the queue place
            finally:
                gate.set()
            assert first.result(300).status_code == 200 and queued.result(300).status_code == 200
        assert service.budget.used == 0


def test_a_refused_track_frame_takes_no_place_and_leaves_the_session_as_it_was(tiny_checkpoint, face_jpeg,
                                                                               monkeypatch):
    from facemark.serve import app as app_module

    taken = []
    take_slot = app_module._Place.take_slot
    monkeypatch.setattr(app_module._Place, "take_slot", lambda place: taken.append(1) or take_slot(place))
    with TestClient(make_app(tiny_checkpoint, workers=1, queue=0)) as client:
        name, auth = open_session(client, "cam")
        for data, status, error in refused_uploads(face_jpeg):
            assert_error(client.post(f"/v1/track/{name}", content=data, headers=auth), status, error)
        assert taken == [] and client.app.state.service.sessions["cam"].tracker.frames == 0
        assert client.post(f"/v1/track/{name}", content=face_jpeg, headers=auth).json()["frame"] == 1
        assert taken == [1]


def test_a_refused_image_is_answered_after_the_refusal_delay_holding_nothing(tiny_checkpoint, face_jpeg):
    """``refusal_delay_s``: a client that re-sends refused images as fast as it is answered gets one answer
    per delay per connection, so its uploads cost the server little; meanwhile it holds no place and none
    of its bytes, so a good request on the one worker (no queue) is served."""
    import time

    app = make_app(tiny_checkpoint, workers=1, queue=0, refusal_delay_s=2)
    with TestClient(app) as client:
        service = app.state.service
        check, checked = service.check_header, threading.Event()

        def spy(data):
            try:
                return check(data)
            finally:
                checked.set()

        service.check_header = spy
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            bomb = pool.submit(client.post, URL, content=scan_bomb())
            assert checked.wait(60)
            time.sleep(0.1)  # the refusal is on its way into its delay
            assert not bomb.done() and service.budget.used == 0  # waiting, holding none of its bytes...
            assert client.post(URL, content=face_jpeg).status_code == 200  # ...and not the only place
            assert_error(bomb.result(60), 413, "image_too_large")
            assert time.monotonic() - started >= 2
        assert service.budget.used == 0


@pytest.mark.parametrize("delay", [-1, float("nan"), 61])
def test_the_refusal_delay_is_checked(tiny_checkpoint, delay):
    with pytest.raises(ValueError, match="refusal_delay_s"):
        make_app(tiny_checkpoint, refusal_delay_s=delay)
