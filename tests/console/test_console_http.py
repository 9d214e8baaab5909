"""The console's HTTP protections without databases: the collector is never started."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator

import pytest

from crossfade.config import Settings
from crossfade.errors import ConfigError
from crossfade.ops.console import Console

TOKEN = "0123456789abcdef-token"


def _settings() -> Settings:
    return Settings(
        source={"dsn": "postgresql://app:hunter2@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://app:hunter2@127.0.0.1:1/new"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.a"],
    )


def _serve(c: Console) -> Console:
    import threading

    threading.Thread(target=c.httpd.serve_forever, daemon=True).start()
    return c


@pytest.fixture
def console() -> Iterator[Console]:
    c = _serve(Console(_settings(), port=0, token=TOKEN))
    yield c
    c.httpd.shutdown()
    c.httpd.server_close()


def _call(
    c: Console, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=5)
    conn.request(method, path, body=b"" if method == "POST" else None, headers=headers or {})
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    conn.close()
    return out


def test_refuses_exposed_without_token_and_short_tokens() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        Console(_settings(), host="0.0.0.0", port=0)
    with pytest.raises(ConfigError, match="too short"):
        Console(_settings(), port=0, token="short")


def test_token_cookie_and_headers(console: Console) -> None:
    assert _call(console, "GET", "/healthz")[0] == 200
    assert _call(console, "GET", "/")[0] == 401
    assert (
        _call(console, "GET", "/api/state", {"Authorization": "Bearer wrong-token-000000000"})[0]
        == 401
    )
    code, headers, _ = _call(console, "GET", f"/?token={TOKEN}")
    assert code == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"].split(";")[0]
    code, headers, body = _call(console, "GET", "/", {"Cookie": cookie})
    assert code == 200 and "crossfade console" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    code, _, body = _call(console, "GET", "/api/state", {"Cookie": cookie})
    assert code == 200 and json.loads(body)["allow_actions"] is False
    assert "hunter2" not in body and TOKEN not in body


def test_actions_need_the_flag_and_the_csrf_header(console: Console) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _call(console, "POST", "/api/actions/fence")[0] == 401
    assert _call(console, "POST", "/api/actions/fence", auth)[0] == 403
    code, _, body = _call(
        console, "POST", "/api/actions/fence", {**auth, "X-Crossfade-Console": "1"}
    )
    assert code == 403 and "--allow-actions" in body
    assert (
        _call(console, "POST", "/api/actions/cutover", {**auth, "X-Crossfade-Console": "1"})[0]
        == 404
    )


def test_loopback_console_rejects_foreign_host_names(console: Console) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert _call(console, "GET", "/api/state", {**auth, "Host": "attacker.example"})[0] == 421
    assert (
        _call(console, "GET", "/api/state", {**auth, "Host": f"localhost:{console.port}"})[0] == 200
    )


def test_cookie_expires_and_is_secure_behind_tls(console: Console) -> None:
    """Issue 18: the token cookie had no expiry and no Secure flag."""
    _, headers, _ = _call(console, "GET", f"/?token={TOKEN}")
    attrs = [a.strip().lower() for a in headers["set-cookie"].split(";")]
    assert any(a.startswith("max-age=") and 0 < int(a[8:]) <= 86400 for a in attrs), attrs
    assert "secure" not in attrs  # plain http on loopback: a Secure cookie would never come back
    for proxy in ({"X-Forwarded-Proto": "https"}, {"Forwarded": "for=10.0.0.1;proto=https"}):
        _, headers, _ = _call(console, "GET", f"/?token={TOKEN}", proxy)
        attrs = [a.strip().lower() for a in headers["set-cookie"].split(";")]
        assert "secure" in attrs and "httponly" in attrs, attrs


def test_access_log_has_no_token_and_no_raw_control_bytes(
    console: Console, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 18: the token reached the access log from ``/?token=``; raw control bytes from a
    request line reached the log as they were."""
    import logging
    import socket

    with caplog.at_level(logging.DEBUG, logger="crossfade.ops.console"):
        _call(console, "GET", f"/?token={TOKEN}")
        _call(console, "GET", f"/api/state?token={TOKEN}&x=1")
        with socket.create_connection(("127.0.0.1", console.port), timeout=5) as s:
            s.sendall(b"GET /\x1b[2J\x1b]0;pwned\x07 HTTP/1.0\r\n\r\n")
            s.recv(4096)
        deadline = time.monotonic() + 5
        while "x1b" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    text = caplog.text
    assert "console" in text and "GET /" in text  # the access log was written
    assert TOKEN not in text, text
    assert "\x1b" not in text and "\x07" not in text and "\\x1b[2J" in text, text


def test_dead_letter_gate_is_unknown_when_nothing_can_be_read() -> None:
    """Issue 18: with the databases and the broker unreachable the "no dead letters" gate showed
    OK (zero counted from nothing). It is unknown until both sources were read."""
    from crossfade.ops.console import ConsoleState

    state = ConsoleState(_settings(), allow_actions=False, interval=60).start()
    try:
        deadline = time.monotonic() + 30
        while state.snapshot()["collected_at"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        snap = state.snapshot()
    finally:
        state.stop()
    gates = {g["gate"]: g for g in snap["gates"]}
    assert snap["errors"], "nothing failed to read?"
    assert gates["dead_letters"]["state"] == "unknown", gates["dead_letters"]
    assert "cannot read" in gates["dead_letters"]["detail"]
