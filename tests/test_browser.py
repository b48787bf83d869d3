"""The web page in a real browser: a real uvicorn server, headless Chromium (Playwright), a real photo.

Skipped when Playwright or a system Chromium is missing; it never downloads a browser.
``FACEMARK_SCREENSHOT=1`` writes the page's screenshot to ``docs/serve_screenshot.png`` (for the
README), otherwise to the test's temporary folder; ``FACEMARK_SCREENSHOT_MODEL=<model>`` shows that
model (with the package's default backend and detector) instead of the untrained test model.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from facemark.detectors import DEFAULT_DETECTOR

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "facemark" / "assets" / "astronaut.jpg"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DETECTOR = DEFAULT_DETECTOR  # MTCNN ships with facemark: the page is tested everywhere

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="no system Chromium (never downloaded by the tests)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server_url(tiny_checkpoint):
    import uvicorn

    from facemark.serve.app import create_app

    model = os.environ.get("FACEMARK_SCREENSHOT_MODEL")
    app = create_app(model, detector=None) if model else create_app(str(tiny_checkpoint), backend="torch", detector=DETECTOR)
    port = free_port()
    # uvicorn configures its loggers (levels, no propagation); put them back afterwards, or later
    # tests that read the service's log through pytest's caplog see nothing
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")]
    saved = [(lg.level, lg.propagate, list(lg.handlers), lg.disabled) for lg in loggers]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)  # uvicorn skips signal handlers off the main thread
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(15)
    for lg, (level, propagate, handlers, disabled) in zip(loggers, saved):
        lg.setLevel(level)
        lg.propagate, lg.handlers, lg.disabled = propagate, handlers, disabled


@pytest.fixture
def photo(request) -> Path:
    if SAMPLE.is_file():
        return SAMPLE
    return request.getfixturevalue("lite_root") / "afw" / "134212_1.jpg"


def test_page_draws_the_points_of_an_uploaded_photo(server_url, photo, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            errors, missing = [], []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("response", lambda response: response.status == 404 and missing.append(response.url))
            page.goto(server_url)
            page.wait_for_function("document.querySelector('#model').textContent.startsWith('model ')")
            page.fill("#max-faces", "1")  # the sample photo's background can give a weak second detection
            page.set_input_files("#file", str(photo))
            page.wait_for_function("['done', 'error'].includes(document.body.dataset.state)", timeout=60_000)
            assert page.evaluate("document.body.dataset.state") == "done", page.text_content("#status")

            result = page.evaluate("window.lastResult")
            assert len(result["faces"]) == 1
            num_points = len(result["faces"][0]["points"])
            assert num_points == result["model"]["num_points"] == 68
            assert page.get_attribute("#view", "data-points-drawn") == "68"
            assert page.get_attribute("#view", "data-faces") == "1"
            assert not page.is_disabled("#download")

            out = ROOT / "docs" / "serve_screenshot.png" if os.environ.get("FACEMARK_SCREENSHOT") == "1" else tmp_path / "page.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            assert out.stat().st_size > 10_000

            page.check("#show-indices")  # redraws from the last answer, without a new request
            assert page.get_attribute("#view", "data-points-drawn") == "68"
            assert not errors, errors
            assert not missing, missing  # no request that 404s (the favicon is inline)
        finally:
            browser.close()


def write_y4m(photo: Path, out: Path, frames: int = 10) -> Path:
    """A short Y4M clip (4:2:0) of ``photo``, for Chromium's fake camera (it loops the file)."""
    import cv2

    image = cv2.imread(str(photo))
    height, width = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    yuv = cv2.cvtColor(image[:height, :width], cv2.COLOR_BGR2YUV_I420).tobytes()
    with open(out, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + yuv)
    return out


def test_live_mode_tracks_a_fake_camera_on_the_server(server_url, photo, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = write_y4m(photo, tmp_path / "camera.y4m")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={clip}",
            "--use-fake-ui-for-media-stream"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 860})
            context.grant_permissions(["camera"], origin=server_url)
            page = context.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.add_init_script(  # the page's own record of the frames it sends: when each POST left
                "window.trackPosts = []; (() => { const send = window.fetch; window.fetch = (url, options) => { "
                "if (String(url).includes('/v1/track/') && (options || {}).method === 'POST') "
                "window.trackPosts.push(performance.now()); return send.call(window, url, options); }; })();")
            page.goto(server_url)
            page.wait_for_function("document.querySelector('#model').textContent.startsWith('model ')")
            page.click("#live")
            # several frames of one session: the tracker on the server has followed the face
            page.wait_for_function("Number(document.body.dataset.liveFrames || 0) >= 3 || document.body.dataset.state === 'error'",
                                   timeout=60_000)
            assert page.evaluate("document.body.dataset.state") == "live", page.text_content("#status")
            result = page.evaluate("window.lastResult")
            if os.environ.get("FACEMARK_LIVE_SCREENSHOT"):
                page.screenshot(path=os.environ["FACEMARK_LIVE_SCREENSHOT"], full_page=True)
            assert result["session"].startswith("live-") and result["frame"] >= 3
            assert len(result["faces"]) >= 1 and all("track_id" in face for face in result["faces"])
            drawn = int(page.get_attribute("#view", "data-points-drawn"))
            assert drawn == sum(len(face["points"]) for face in result["faces"]) >= 68
            assert int(page.get_attribute("#view", "data-faces")) == len(result["faces"])
            page.screenshot(path=str(tmp_path / "live.png"), full_page=True)

            # stops cleanly: the camera is released and no more frames go out. The click and the count of
            # frames sent so far happen in one turn of the page's event loop, so no frame can slip between
            # them; then the page gets three of its own frame intervals (at least 600 ms) to send another
            sent, times = page.evaluate("() => { document.querySelector('#live').click(); "
                                        "return [window.trackPosts.length, window.trackPosts]; }")
            page.wait_for_function("!('live' in document.body.dataset)")
            assert sent >= 3  # frames were going out before the stop
            pace = (times[-1] - times[0]) / max(len(times) - 1, 1)  # ms between frames while live
            page.wait_for_timeout(max(600, 3 * pace))
            assert page.evaluate("window.trackPosts.length") == sent
            assert page.evaluate("document.querySelector('#video').srcObject === null || "
                                 "document.querySelector('#video').srcObject.getTracks().every(t => t.readyState === 'ended')")
            assert page.text_content("#live") == "Live tracking"
            assert not errors, errors
        finally:
            browser.close()
