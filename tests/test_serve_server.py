"""How ``facemark serve`` runs the app: a real uvicorn server on 127.0.0.1 with the limits it is
given (header timeout, connection cap), and a log that says a repeated refusal once per interval.

The app here is a trivial ASGI app: these limits belong to the server, not to the model.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

import httpx
import pytest

from facemark.serve.server import OncePerInterval, native_stderr_to_log, quiet_repeats, server_config


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = bytes(BIG) if scope["path"] == "/big" else b"hello"  # /big: more than the socket buffers hold
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


BIG = 32 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, what: str, timeout: float = 60) -> None:
    """Poll ``condition`` (generous deadline: only a hang fails it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@contextlib.contextmanager
def running(interval_s: float = 3600, **limits):
    """A real server (``server_config``, as ``facemark serve`` builds it) in a thread; yields ``(server, port)``."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(server_config(hello, "127.0.0.1", port, log_config=None, **limits))
    with quiet_repeats(interval_s):
        thread = threading.Thread(target=server.run, daemon=True)  # no signal handlers off the main thread
        thread.start()
        try:
            wait_for(lambda: server.started, "the server to start")
            yield server, port
        finally:
            server.should_exit = True
            thread.join(30)


def closed_by_server(sock: socket.socket, timeout: float = 20) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` seconds (whatever it sends before)."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1024):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def closed_while_trickling(sock: socket.socket, timeout: float = 20) -> bool:
    """Whether the server closes ``sock`` within ``timeout`` seconds while it sends a byte every 0.1 s
    (each byte would cancel uvicorn's keep-alive timeout)."""
    sock.settimeout(0.1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            sock.sendall(b"x")
            if sock.recv(1024) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:  # reset, broken pipe
            return True
    return False


def test_a_connection_without_a_complete_request_head_is_closed():
    """Connections that send nothing, or only part of the request head (or, once answered, only the
    rest of a body), are closed after ``header_timeout_s``; a client that sends its request promptly
    (and keeps its connection) is served."""
    with running(header_timeout_s=0.3) as (server, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").text == "hello"
            silent = socket.create_connection(("127.0.0.1", port))
            partial = socket.create_connection(("127.0.0.1", port))
            partial.sendall(b"POST /v1/landmarks HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n")
            with silent, partial:
                assert closed_by_server(silent) and closed_by_server(partial)
            assert client.get("/").text == "hello"
        with socket.create_connection(("127.0.0.1", port)) as answered:  # answered before its body is in
            answered.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nab")
            answered.settimeout(20)
            assert answered.recv(12) == b"HTTP/1.1 200"
            assert closed_while_trickling(answered)  # the rest of a body nobody reads holds no connection either


def test_a_flood_of_idle_connections_cannot_lock_out_a_prompt_client(caplog):
    """At ``limit_concurrency`` open connections a new one makes room by closing the one that has waited
    longest for a request head, so idle connections use up neither the file descriptors nor the server
    (a client that sends its request at once is served), with one log line however many are closed."""
    with caplog.at_level(logging.INFO), running(limit_concurrency=4, header_timeout_s=3600) as (server, port):
        idle = []
        for _ in range(40):  # ten times the limit, none of them sending anything
            idle.append(socket.create_connection(("127.0.0.1", port)))
        assert all(closed_by_server(sock) for sock in idle[:-3])  # the oldest went, one per newcomer
        wait_for(lambda: len(server.server_state.connections) == 3, "the open connections to stay under the limit")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").text == "hello"  # makes room, sends its request at once, is served
        for sock in idle:
            sock.close()
    closed = [r for r in caplog.records if "limit_concurrency" in r.getMessage()]
    assert len(closed) == 1 and closed[0].levelno == logging.WARNING, [r.getMessage() for r in closed]


def test_repeated_refusals_are_logged_once_per_interval():
    now = [0.0]
    once = OncePerInterval(10, clock=lambda: now[0])
    records = []
    logger = logging.getLogger("facemark.test.refusals")
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.addFilter(once)
    logger.propagate = False
    try:
        for client in range(1000):
            logger.warning("refused %s: upload too slow", client)
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            for _ in range(1000):  # asyncio's accept error: a multi-line message with a traceback, per event
                logger.error("socket.accept() out of system resource\nsocket: <socket fd=8>", exc_info=True)
        now[0] = 10.5
        logger.warning("refused %s: upload too slow", 1000)
    finally:
        logger.removeHandler(handler)
        logger.removeFilter(once)
    assert [r.getMessage() for r in records] == [
        "refused 0: upload too slow",
        "socket.accept() out of system resource\nsocket: <socket fd=8>",
        "refused 1000: upload too slow (999 more like it in the last 10.5 s)",
    ]


def test_a_connection_that_reads_none_of_its_answers_is_closed():
    """An answer the client does not read fills the socket buffers, then uvicorn's transport buffer,
    and uvicorn waits for it to drain for ever (the connection counts as busy, so it is never closed to
    make room): it is cut off ``write_timeout_s`` after the buffers filled."""
    with running(write_timeout_s=0.3) as (server, port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
            wait_for(lambda: not server.server_state.connections, "the connection to be cut off", timeout=20)
            sock.settimeout(20)
            received = 0
            with pytest.raises(ConnectionResetError):  # what it left unread is dropped: it never gets all of it
                while chunk := sock.recv(1 << 20):
                    received += len(chunk)
            assert received < BIG
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/").text == "hello"


@pytest.mark.parametrize("limit", [{}, {"max_pipelined": 4}])
def test_a_connection_that_pipelines_past_the_limit_is_closed(limit):
    """Requests sent before the previous answer (HTTP pipelining): ``max_pipelined`` (0 by default)
    in a row are answered, then the answers given are sent and the stream ends (no reset that would
    throw them away), so the client can send the rest again; one request at a time is not limited."""
    with running(**limit) as (server, port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 100)
            sock.settimeout(20)
            answers = b""
            while chunk := sock.recv(65536):
                answers += chunk
            assert answers.count(b"HTTP/1.1 200") == limit.get("max_pipelined", 0) + 1  # the first, then the pipelined
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert all(client.get("/").text == "hello" for _ in range(20))  # one keep-alive connection


def test_what_native_libraries_print_is_logged_once_per_interval(capfd):
    """libjpeg prints its warnings ("Corrupt JPEG data: ...") straight to the process's stderr, once
    per crafted upload: under ``facemark serve`` they are log records, held back like any repeat."""
    import cv2
    import numpy as np

    from facemark.images import decode_image

    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    corrupt = [jpeg[:-2] + bytes(n) + jpeg[-2:] for n in (3, 4, 5)]  # extraneous bytes before the end marker
    records = []
    logger = logging.getLogger("facemark.test.native")
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    logger.propagate = False
    with quiet_repeats(3600, loggers=(logger.name,)), native_stderr_to_log(logger.name):
        for _ in range(100):
            for data in corrupt:
                assert decode_image(data, "upload").shape == (64, 64, 3)
        wait_for(lambda: records, "the first warning to be logged")
    logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == [
        "a native library printed: Corrupt JPEG data: 2 extraneous bytes before marker 0xd9"], records
    assert "Corrupt JPEG" not in capfd.readouterr().err
    decode_image(corrupt[0], "upload")  # and the process's stderr is as it was after
    assert "Corrupt JPEG data" in capfd.readouterr().err


@pytest.mark.parametrize("limits", [{"header_timeout_s": 0}, {"limit_concurrency": 0}, {"write_timeout_s": 0},
                                    {"max_pipelined": -1}])
def test_server_limits_are_checked(limits):
    with pytest.raises(ValueError):
        server_config(hello, "127.0.0.1", 8000, **limits)


# -- facemark serve: the command -------------------------------------------------------------

def test_serve_builds_its_landmarker_once(monkeypatch, tiny_checkpoint):
    """The command builds the Landmarker (so a bad model is one line before the server starts) and the
    app serves that one: the model is not loaded a second time at start-up."""
    from fastapi.testclient import TestClient

    import facemark.serve.server
    from facemark import cli
    from facemark.api import Landmarker

    built = []
    init = Landmarker.__init__

    def counting(self, *args, **kwargs):
        built.append(args[:1])
        init(self, *args, **kwargs)

    def serve(app, host, port, **limits):  # in place of uvicorn: start the app (its lifespan) and ask it once
        with TestClient(app) as client:
            answers.append(client.get("/healthz").json())

    answers = []
    monkeypatch.setattr(Landmarker, "__init__", counting)
    monkeypatch.setattr(facemark.serve.server, "serve", serve)
    assert cli.main(["serve", "--model", str(tiny_checkpoint), "--backend", "torch"]) == 0
    assert answers and answers[0]["model_loaded"]
    assert len(built) == 1, built


def test_serve_passes_its_session_and_connection_flags(monkeypatch, tiny_checkpoint):
    """Every live-session and connection setting is a ``facemark serve`` flag, passed to the app and the server."""
    from fastapi.testclient import TestClient

    import facemark.serve.server
    from facemark import cli

    got = {}

    def serve(app, host, port, **limits):  # in place of uvicorn: what the server and the app were given
        with TestClient(app):
            service = app.state.service
            got.update(limits, max_sessions=service.max_sessions, sessions_per_client=service.sessions_per_client,
                       session_idle_s=service.session_idle_s, session_max_age_s=service.session_max_age_s,
                       refusal_delay_s=service.refusal_delay_s)

    monkeypatch.setattr(facemark.serve.server, "serve", serve)
    assert cli.main(["serve", "--model", str(tiny_checkpoint), "--backend", "torch", "--write-timeout", "3",
                     "--max-pipelined", "2", "--max-sessions", "4", "--sessions-per-client", "1", "--session-idle",
                     "5", "--session-max-age", "60", "--refusal-delay", "0.25"]) == 0
    assert got == {"header_timeout_s": 10, "limit_concurrency": 500, "write_timeout_s": 3, "max_pipelined": 2,
                   "max_sessions": 4, "sessions_per_client": 1, "session_idle_s": 5, "session_max_age_s": 60,
                   "refusal_delay_s": 0.25}


@pytest.mark.parametrize("option, value", [("--write-timeout", "0"), ("--write-timeout", "nan"),
                                           ("--max-pipelined", "-1"), ("--max-pipelined", "1.5"),
                                           ("--max-sessions", "0"), ("--sessions-per-client", "0"),
                                           ("--session-idle", "inf"), ("--session-idle", "-5"),
                                           ("--session-max-age", "0"), ("--refusal-delay", "-1"),
                                           ("--refusal-delay", "nan"), ("--refusal-delay", "61")])
def test_bad_serve_flags_are_refused_by_the_parser(option, value, capsys):
    from facemark import cli

    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["serve", option, value])
    assert exit_.value.code == 2
    assert f"argument {option}:" in capsys.readouterr().err  # the flag's own check, not "unrecognized arguments"


def test_ctrl_c_stops_serve_in_one_line():
    """Ctrl-C (SIGINT) on a running ``facemark serve``: uvicorn shuts down, then one line, no
    ``KeyboardInterrupt`` traceback, exit status 130."""
    import signal
    import subprocess
    import sys

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "facemark.cli", "serve", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        def up() -> bool:
            assert server.poll() is None, server.stderr.read()
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, "the server to start", timeout=120)
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("facemark serve: ") and "Ctrl-C" in last, err
    assert server.returncode == 130
