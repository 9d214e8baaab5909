"""Limits for crossfade's two small HTTP servers (the console, and /metrics /healthz /readyz).

Both are the standard library's thread-per-connection servers (``http.server`` and ``wsgiref``
through prometheus-client): a client that opens a connection and sends its request slowly, or
never finishes it, would hold a thread and a socket for as long as it likes. Two limits shed such
clients:

* **a connection cap** (:attr:`HttpLimits.max_connections`): a connection beyond it is answered
  ``503`` at once and closed, without a thread;
* **a deadline per connection** (:attr:`HttpLimits.request_timeout_s`): the whole request (line,
  headers, body) must arrive within it, however slowly it trickles in (a per-read timeout alone
  lets a client send a byte every few seconds forever); each write of the answer has
  :attr:`HttpLimits.write_timeout_s`. Both servers answer one request per connection (HTTP/1.0),
  so the deadline is the connection's lifetime.

Why not a server library: what these endpoints serve is tiny (a page, a JSON document, the
metrics text), they run inside capture and sync, and the two limits above are what the standard
servers lack; a dependency (waitress, for instance, which buffers requests in an event loop) would
change every process's footprint for that. The limits are tested with half-sent requests in
``tests/unit/test_http_limits.py``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
    b"Retry-After: 1\r\nConnection: close\r\n\r\nbusy\n"
)


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 64
    """Connections served at once; more are answered 503 and closed."""
    request_timeout_s: float = 10.0
    """Longest time a client may take to send its whole request."""
    write_timeout_s: float = 10.0
    """Longest time one write of the answer may block on a client that does not read."""


class _DeadlineReader(io.RawIOBase):
    """A socket's reading side that raises ``TimeoutError`` once ``deadline`` has passed."""

    def __init__(self, sock: socket.socket, deadline: float, write_timeout: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._write_timeout = write_timeout

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the client did not send its request in time")
        self._sock.settimeout(left)
        try:
            return self._sock.recv_into(b)
        finally:
            # writes (the answer) get their own timeout, not what is left of the read deadline
            with contextlib.suppress(OSError):
                self._sock.settimeout(self._write_timeout)


class DeadlineRequestMixin:
    """For a ``StreamRequestHandler``: the request must arrive within the server's limits."""

    connection: socket.socket
    server: Any
    rfile: Any

    def setup(self) -> None:
        super().setup()  # type: ignore[misc]
        limits: HttpLimits = getattr(self.server, "limits", HttpLimits())
        self.connection.settimeout(limits.write_timeout_s)
        self.rfile = io.BufferedReader(
            _DeadlineReader(
                self.connection,
                time.monotonic() + limits.request_timeout_s,
                limits.write_timeout_s,
            )
        )


class LimitedServerMixin:
    """For a ``ThreadingMixIn`` server: at most ``limits.max_connections`` at once; errors of a
    connection (timeouts, resets) are logged at debug level, not printed as traces."""

    limits: HttpLimits = HttpLimits()
    request_queue_size = 128  # listen backlog: a burst of connections is accepted, then shed
    _slots: threading.BoundedSemaphore | None = None

    def set_limits(self, limits: HttpLimits) -> None:
        """Change the limits (before serving)."""
        self.limits = limits
        self._slots = None

    def _slot(self) -> threading.BoundedSemaphore:
        if self._slots is None:
            self._slots = threading.BoundedSemaphore(self.limits.max_connections)
        return self._slots

    def process_request(self, request: Any, client_address: Any) -> None:
        slots = self._slot()
        if not slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.settimeout(0.5)
                request.sendall(_BUSY)
                # what the client already sent is read (without waiting), so closing does not
                # reset the connection and discard the 503 before the client reads it
                request.shutdown(socket.SHUT_WR)
                request.recv(65536, socket.MSG_DONTWAIT)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        slots = self._slot()
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        exc = sys.exc_info()[1]
        log.debug("http connection from %s ended: %r", client_address, exc)
