"""How ``facemark serve`` runs the app: uvicorn, with limits against slow and idle clients, and a log
that says each kind of refusal once per interval, not once per event.

- ``header_timeout_s`` (10 s): a connection that has not sent a complete request head this long
  after it opened, or after its last answer, is closed. uvicorn has no such limit: its
  ``timeout_keep_alive`` covers only a connection that sends nothing at all after an answer (the
  first byte cancels it), so connections that sent nothing, or part of a head, stayed open for ever.
  This is :class:`GuardedH11Protocol`, uvicorn's h11 protocol with the timers and limits below added.
- ``write_timeout_s`` (10 s): a connection whose answers are not read (the kernel's buffers and then
  the transport's are full) is reset once its writing has been paused that long. uvicorn waits for
  the buffer to drain for ever, and such a connection counts as busy, so none was ever closed to
  make room: 505 of them held the server.
- ``max_pipelined`` (0): answers given in a row while the client's next request was already in
  (HTTP pipelining: requests sent without waiting for answers, which no browser or common client
  does) before the connection is closed: its answers are sent, then the end of the stream, so a
  client that reads them sends the rest again on a new connection. Without it a connection is
  answered a stream of pipelined requests as fast as the server can, never waiting for its client.
- ``limit_concurrency`` (500): uvicorn's own: requests are answered 503 while that many are
  running. Open connections are kept below it: when a new one would reach it, the connection that
  has waited longest for a request head is closed to make room (one that never sent a request
  before a kept-alive one; the new one itself when every other is in the middle of a request). So
  idle connections can use up neither the file descriptors (keep the limit below ``ulimit -n``) nor
  the server: a flood of them churns among itself while a client that sends its request at once is
  served.
- ``timeout_keep_alive`` (5 s) and the request head's size (h11's 16 kB) are uvicorn's and h11's.
- :class:`OncePerInterval` on uvicorn's and asyncio's loggers: a message repeated within the
  interval (a refused connection, an accept error and its traceback, a concurrency-limit warning)
  is logged once, and the next one that passes says how many were held back.
- :func:`native_stderr_to_log`: what C libraries print to stderr (libjpeg's "Corrupt JPEG data"
  warnings, once per crafted upload) becomes log records too, held back the same way.

Slow request *bodies* are the app's business (``min_upload_rate``, :mod:`facemark.serve.app`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that send no complete request head within
    ``header_timeout_s``, and the one waiting longest for a head when a new connection would reach
    ``limit_concurrency``. ``waiting``: the server's connections waiting for a request head (one per
    server, shared by its connections)."""

    def __init__(self, *args, header_timeout_s: float, waiting: HeadWaits, write_timeout_s: float = 10.0,
                 max_pipelined: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout_s, self.waiting = header_timeout_s, waiting
        self.write_timeout_s, self.max_pipelined = write_timeout_s, max_pipelined
        self._head_timer: object | None = None
        self._timed_cycle = None  # the request cycle current when the timer was set: a new one cancels it
        self._write_timer: object | None = None
        self._pipelined = 0  # answers in a row given while the client's next request was already in
        self._lingering = False  # answers sent and FIN queued: what the client still sends is dropped

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.limit_concurrency
        if limit is not None and len(self.connections) >= limit:
            oldest = self.waiting.oldest()
            if oldest is None:  # every other connection is in the middle of a request
                self.logger.warning("refused a connection: %d are open, all busy (limit_concurrency %d)",
                                    len(self.connections) - 1, limit)
                self._drop()
                return
            self.logger.warning("closed the connection waiting longest for a request head to make room: %d are open "
                                "(limit_concurrency %d)", len(self.connections) - 1, limit)
            oldest._drop()
        self._await_head()

    def data_received(self, data: bytes) -> None:
        if not self._lingering:
            super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._timed_cycle:  # a new request head arrived
            self._stop_waiting()

    def on_response_complete(self) -> None:
        answered = self.cycle
        # a client that reads its answers sends its next request after one; bytes of the next request
        # already here mean it did not wait (HTTP pipelining, legal but rare): max_pipelined in a row are let be
        self._pipelined = self._pipelined + 1 if self.conn.trailing_data[0] else 0
        if self._pipelined > self.max_pipelined and not self.transport.is_closing():
            self.logger.warning("closed a connection that sent requests without waiting for the answers (HTTP "
                                "pipelining; %d in a row allowed)", self.max_pipelined)
            self.server_state.total_requests += 1
            self._close_after_answers()
            return
        super().on_response_complete()  # may start a pipelined request (a new cycle)
        if self.cycle is answered and not self.transport.is_closing():
            self._await_head()  # waiting for the next request head (or for the rest of a body nobody reads)

    def pause_writing(self) -> None:
        """The transport's write buffer is over its high-water mark (the kernel's buffers are full: the
        client is not reading): unless it drains within ``write_timeout_s``, the connection is dropped."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout_s, self._write_timeout)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._stop_write_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_waiting()
        self._stop_write_timer()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _close_after_answers(self) -> None:
        """Stop here: the answers given are sent, then the end of the stream (so a client that reads them
        knows to send the rest again on a new connection); what it still sends is read and dropped (a
        close with unread data would reset the connection, and the client's kernel would throw away
        answers it has not read yet), and after ``linger`` (at most 2 s) it is reset."""
        self._stop_waiting()
        self.connections.discard(self)
        self._lingering = True
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(min(2.0, self.write_timeout_s), self._reset)

    def _write_timeout(self) -> None:
        self._write_timer = None
        self.logger.warning("closed a connection that read none of its answers for %g s", self.write_timeout_s)
        self._stop_waiting()
        self.connections.discard(self)
        self._reset()

    def _reset(self) -> None:
        """Reset the connection (a no-op once it is closed): what the client did not read is dropped, by
        the kernel too (``transport.close`` would wait for it to be read, and a plain close linger)."""
        with contextlib.suppress(OSError, AttributeError):  # a closed socket: OSError
            self.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
        self.transport.abort()

    def _await_head(self) -> None:
        self._stop_waiting()
        self._timed_cycle = self.cycle
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)
        self.waiting.add(self, kept_alive=self.cycle is not None)

    def _stop_waiting(self) -> None:
        self.waiting.remove(self)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.logger.warning("closed a connection that sent no complete request head within %g s",
                                self.header_timeout_s)
            self._drop()

    def _drop(self) -> None:
        """Close this connection, and stop counting it at once (uvicorn would until ``connection_lost``, a
        loop turn later, and answer 503 meanwhile to requests on the connections that remain). Answers
        still buffered are sent first, within ``write_timeout_s``: a client that does not read them is
        cut off then (``transport.close`` alone would wait for it for ever)."""
        self._stop_waiting()
        self.connections.discard(self)
        self.transport.close()
        if self.transport.get_write_buffer_size():
            self.loop.call_later(self.write_timeout_s, self._reset)


class HeadWaits:
    """A server's connections waiting for a request head, longest first: those that never sent one, then
    kept-alive ones (a client between two requests)."""

    def __init__(self):
        self.fresh: dict = {}  # dicts keep insertion order
        self.kept: dict = {}

    def add(self, connection, kept_alive: bool) -> None:
        (self.kept if kept_alive else self.fresh)[connection] = None

    def remove(self, connection) -> None:
        self.fresh.pop(connection, None)
        self.kept.pop(connection, None)

    def oldest(self):
        return next(iter(self.fresh or self.kept), None)


class OncePerInterval(logging.Filter):
    """Let a message through at most once per ``interval_s`` (per logger, level and message template,
    first line only: asyncio's accept errors differ below it); the next one that passes says how many
    were held back. Repeats are what an attack makes: a connection refused, an accept error."""

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._seen: dict[tuple, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        # records may name their kind (``extra={"repeat_key": ...}``) where the template does not
        kind = getattr(record, "repeat_key", None) or str(record.msg).partition("\n")[0]
        key = (record.name, record.levelno, kind)
        now = self.clock()
        with self._lock:
            last, held = self._seen.get(key, (None, 0))
            if last is not None and now - last < self.interval_s:
                self._seen[key] = (last, held + 1)
                return False
            if len(self._seen) >= 1000:  # templates are few; this only bounds the table
                self._seen.clear()
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like it in the last {now - last:g} s)"
        return True


@contextlib.contextmanager
def quiet_repeats(interval_s: float = 10.0, loggers: tuple[str, ...] = ("uvicorn.error", "asyncio")) -> Iterator[OncePerInterval]:
    """:class:`OncePerInterval` on ``loggers`` while the block runs (the server's log: uvicorn's and the
    app's lines, and asyncio's accept errors)."""
    once = OncePerInterval(interval_s)
    targets = [logging.getLogger(name) for name in loggers]
    for logger in targets:
        logger.addFilter(once)
    try:
        yield once
    finally:
        for logger in targets:
            logger.removeFilter(once)


_NUMBERS = re.compile(r"\d+|0x[0-9a-fA-F]+")


@contextlib.contextmanager
def native_stderr_to_log(logger: str = "uvicorn.error") -> Iterator[None]:
    """What C libraries print to the process's stderr (libjpeg's "Corrupt JPEG data: 3 extraneous
    bytes before marker 0xd9" for a crafted upload, libpng's warnings, OpenCV's own), as WARNING
    records of ``logger`` while the block runs, so :class:`OncePerInterval` holds back their repeats
    like any refusal; one kind per line with its numbers left out, so that varying them is no way
    round it. Python's own stderr (``sys.stderr`` and the log handlers writing to it) still goes to
    the real stderr. File descriptor 2 is a pipe meanwhile, read by a thread; both are undone after."""
    target = logging.getLogger(logger)
    sys.stderr.flush()
    saved, (read_end, write_end) = os.dup(2), os.pipe()
    python_stderr = open(saved, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)
    swapped = []  # (holder, attribute, original): sys.stderr and stream handlers that wrote to fd 2
    try:
        on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced (pytest's capture, an IDE): leave it be
        on_fd2 = False
    if on_fd2:
        handlers = [h for name in [None, *logging.Logger.manager.loggerDict] for h in getattr(
            logging.getLogger(name), "handlers", [])]
        swapped = [(h, "stream", h.stream) for h in handlers
                   if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr]
        swapped.append((sys, "stderr", sys.stderr))
        for holder, attribute, _ in swapped:
            setattr(holder, attribute, python_stderr)

    def pump() -> None:  # never stops before the pipe's end: a full pipe would block every C write to stderr
        pending = b""
        while chunk := os.read(read_end, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            if len(pending) > 65536:  # no line end in sight: what there is, as a line
                lines, pending = [*lines, pending], b""
            for line in lines:
                with contextlib.suppress(Exception):
                    _log_native(target, line)
        with contextlib.suppress(Exception):
            _log_native(target, pending)

    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=pump, name="facemark-stderr", daemon=True)
    reader.start()
    try:
        yield
    finally:
        os.dup2(saved, 2)  # closes the pipe's last write end: the reader sees its end
        reader.join(5)
        for holder, attribute, original in swapped:
            setattr(holder, attribute, original)
        python_stderr.close()
        os.close(saved)
        if not reader.is_alive():
            os.close(read_end)


def _log_native(logger: logging.Logger, line: bytes) -> None:
    text = line.decode("utf-8", "backslashreplace").strip()
    if text:
        logger.warning("a native library printed: %s", text[:500],
                       extra={"repeat_key": "native: " + _NUMBERS.sub("#", text[:200])})


def server_config(app, host: str, port: int, *, header_timeout_s: float = 10.0, limit_concurrency: int = 500,
                  timeout_keep_alive: int = 5, write_timeout_s: float = 10.0, max_pipelined: int = 0,
                  **uvicorn_kwargs) -> uvicorn.Config:
    """uvicorn's config for ``app`` with the limits above (any other ``uvicorn.Config`` argument passes through)."""
    if not header_timeout_s > 0 or limit_concurrency < 1 or not write_timeout_s > 0 or max_pipelined < 0:
        raise ValueError(f"need header_timeout_s > 0, limit_concurrency >= 1, write_timeout_s > 0 and "
                         f"max_pipelined >= 0, got {header_timeout_s}, {limit_concurrency}, {write_timeout_s} and "
                         f"{max_pipelined}")
    protocol = functools.partial(GuardedH11Protocol, header_timeout_s=header_timeout_s, waiting=HeadWaits(),
                                 write_timeout_s=write_timeout_s, max_pipelined=max_pipelined)
    return uvicorn.Config(app, host=host, port=port, http=protocol, limit_concurrency=limit_concurrency,
                          timeout_keep_alive=timeout_keep_alive, **uvicorn_kwargs)


def serve(app, host: str, port: int, *, log_interval_s: float = 10.0, **limits) -> None:
    """Run ``app`` until interrupted (``facemark serve``), with :func:`server_config`'s limits."""
    config = server_config(app, host, port, **limits)  # configures uvicorn's logging; the filters go on after
    with quiet_repeats(log_interval_s), native_stderr_to_log():
        uvicorn.Server(config).run()
