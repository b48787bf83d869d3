"""How ``facemark serve`` runs the app: uvicorn, with limits against slow and idle clients, and a log
that says each kind of refusal once per interval, not once per event.

- ``header_timeout_s`` (10 s): a connection that has not sent a complete request head this long
  after it opened, or after its last answer, is closed. uvicorn has no such limit: its
  ``timeout_keep_alive`` covers only a connection that sends nothing at all after an answer (the
  first byte cancels it), so connections that sent nothing, or part of a head, stayed open for ever.
  This is :class:`GuardedH11Protocol`, uvicorn's h11 protocol with one timer added.
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

Slow request *bodies* are the app's business (``min_upload_rate``, :mod:`facemark.serve.app`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that send no complete request head within
    ``header_timeout_s``, and the one waiting longest for a head when a new connection would reach
    ``limit_concurrency``. ``waiting``: the server's connections waiting for a request head (one per
    server, shared by its connections)."""

    def __init__(self, *args, header_timeout_s: float, waiting: "HeadWaits", **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout_s, self.waiting = header_timeout_s, waiting
        self._head_timer: object | None = None
        self._timed_cycle = None  # the request cycle current when the timer was set: a new one cancels it

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

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self._timed_cycle:  # a new request head arrived
            self._stop_waiting()

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()  # may start a pipelined request (a new cycle)
        if self.cycle is answered and not self.transport.is_closing():
            self._await_head()  # waiting for the next request head (or for the rest of a body nobody reads)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._stop_waiting()

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
        loop turn later, and answer 503 meanwhile to requests on the connections that remain)."""
        self._stop_waiting()
        self.connections.discard(self)
        self.transport.close()


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
        key = (record.name, record.levelno, str(record.msg).partition("\n")[0])
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


@contextmanager
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


def server_config(app, host: str, port: int, *, header_timeout_s: float = 10.0, limit_concurrency: int = 500,
                  timeout_keep_alive: int = 5, **uvicorn_kwargs) -> uvicorn.Config:
    """uvicorn's config for ``app`` with the limits above (any other ``uvicorn.Config`` argument passes through)."""
    if not header_timeout_s > 0 or limit_concurrency < 1:
        raise ValueError(f"need header_timeout_s > 0 and limit_concurrency >= 1, got {header_timeout_s} and "
                         f"{limit_concurrency}")
    protocol = functools.partial(GuardedH11Protocol, header_timeout_s=header_timeout_s, waiting=HeadWaits())
    return uvicorn.Config(app, host=host, port=port, http=protocol, limit_concurrency=limit_concurrency,
                          timeout_keep_alive=timeout_keep_alive, **uvicorn_kwargs)


def serve(app, host: str, port: int, *, log_interval_s: float = 10.0, **limits) -> None:
    """Run ``app`` until interrupted (``facemark serve``), with :func:`server_config`'s limits."""
    config = server_config(app, host, port, **limits)  # configures uvicorn's logging; the filters go on after
    with quiet_repeats(log_interval_s):
        uvicorn.Server(config).run()
