"""Slow clients cannot hold crossfade's HTTP servers (issue 18, finding 3).

The review opened 200 half-sent requests against the console and the metrics server: each kept a
thread and a connection for a minute and more. Now a connection beyond the cap is answered 503 at
once (no thread), and a request that does not arrive whole within the deadline is cut, however
slowly it trickles in. Both servers, in process, no databases (the console's collector is never
started).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from crossfade import metrics
from crossfade.config import Settings
from crossfade.ops import probes
from crossfade.ops.console import Console
from crossfade.ops.http_limits import HttpLimits

HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slow"


def _settings() -> Settings:
    return Settings(
        source={"dsn": "postgresql://app@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://app@127.0.0.1:1/new"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.a"],
    )


def _console(limits: HttpLimits | None) -> tuple[int, Callable[[], None]]:
    c = Console(_settings(), port=0, limits=limits)
    threading.Thread(target=c.httpd.serve_forever, daemon=True).start()
    return c.port, lambda: (c.httpd.shutdown(), c.httpd.server_close())


def _ops(limits: HttpLimits | None) -> tuple[int, Callable[[], None]]:
    s = probes.OpsServer("127.0.0.1", 0, probes.ops_app(metrics.Readiness()), limits).start()
    return s.port, s.stop


SERVERS = {"console": _console, "metrics": _ops}


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    yield held
    for s in held:
        with contextlib.suppress(OSError):
            s.close()


def _half_open(port: int, n: int, held: list[socket.socket]) -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(HALF_SENT)
        held.append(s)
        out.append(s)
    return out


def _closed_by_server(s: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed ``s`` within ``within`` seconds, and what it sent first."""
    s.settimeout(within)
    got = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True, got
            got += chunk
    except TimeoutError:
        return False, got
    except OSError:  # reset
        return True, got


def _healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return r.status


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_two_hundred_half_sent_requests_hold_no_more_than_the_cap(
    server: str, sockets: list[socket.socket]
) -> None:
    """The review's probe against the default limits: threads stay within the cap, the rest are
    answered 503 at once."""
    port, stop = SERVERS[server](None)
    try:
        cap = HttpLimits().max_connections
        before = threading.active_count()
        conns = _half_open(port, 200, sockets)
        time.sleep(0.5)
        assert threading.active_count() - before <= cap, "a thread per slow client"
        # connections past the cap were answered and closed without waiting for their request
        shed = [_closed_by_server(s, 0.05) for s in conns[cap + 10 :]]
        assert all(closed and got.startswith(b"HTTP/1.0 503") for closed, got in shed), shed[:3]
    finally:
        for s in sockets:
            s.close()
        stop()


@pytest.mark.parametrize("server", sorted(SERVERS))
def test_a_request_trickling_in_is_cut_at_the_deadline(
    server: str, sockets: list[socket.socket]
) -> None:
    limits = HttpLimits(max_connections=8, request_timeout_s=1.0, write_timeout_s=1.0)
    port, stop = SERVERS[server](limits)
    try:
        silent = _half_open(port, 5, sockets)
        (drip,) = _half_open(port, 1, sockets)
        dripping = threading.Event()

        def keep_dripping() -> None:  # a byte every 0.2 s: no read ever waits long
            with contextlib.suppress(OSError):
                while not dripping.is_set():
                    drip.send(b"x")
                    time.sleep(0.2)

        t = threading.Thread(target=keep_dripping, daemon=True)
        t.start()
        started = time.monotonic()
        for s in [*silent, drip]:
            closed, _ = _closed_by_server(s, max(0.1, started + 3.0 - time.monotonic()))
            assert closed, "a slow client kept its connection past the deadline"
        dripping.set()
        assert time.monotonic() - started < 3.0
        assert _healthz(port) == 200  # the server itself is fine
    finally:
        stop()
