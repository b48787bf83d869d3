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

from facemark.serve.server import OncePerInterval, quiet_repeats, server_config


async def hello(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


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


@pytest.mark.parametrize("limits", [{"header_timeout_s": 0}, {"limit_concurrency": 0}])
def test_server_limits_are_checked(limits):
    with pytest.raises(ValueError):
        server_config(hello, "127.0.0.1", 8000, **limits)
