"""``crossfade console``: one page that says, in red and green, whether the cutover can go ahead.

What it shows (refreshed by a background collector every ``interval`` seconds, polled by the page
from ``/api/state``): the cutover gates, evaluated by :mod:`crossfade.cutover.gate_model` (the one
definition ``crossfade cutover`` and ``status`` use, from the same evidence: a fence or verify run
from the CLI counts here too; stale and unknown evidence is never green) with their evidence and
its age; the write-downtime forecast (the latest cutover dry run's, part by part); per table the legacy
and the new table names and rows as the ``row_counts`` gate compares them (mapped tables by their
accounting, their target tables against the rows expected), events applied, the applied rate and
the lag, with charts of the last 15 minutes (:mod:`crossfade.ops.console_history`: the console's
own samples, or Prometheus with ``--prometheus``); open dead letters by rule with example keys,
deferred and filtered rows (the ledger's one count); the latest verify per table; the
checkpoints; the replication slot and the stored offsets (:mod:`crossfade.ops.console_data`).
Gates, the open counts, the latest verify and the slot are published on the console's
``/metrics`` (``crossfade_cutover_gate_ok{gate}``, ``crossfade_dead_letters_open{table}``,
``crossfade_verify_passed``, ``crossfade_replication_slot_active{slot}``...).

Protection:

* read-only unless started with ``--allow-actions``; then the page may run ``fence`` (a write
  of one row to the legacy database's ``crossfade.fence``). The real cutover stays a CLI action.
* binds 127.0.0.1 by default. Bound anywhere else it refuses to start without a token
  (``--token`` or ``CROSSFADE_CONSOLE_TOKEN``, 16+ characters). With a token every request but
  ``/healthz`` must carry it: ``Authorization: Bearer``, or open ``/?token=...`` once and an
  HttpOnly, SameSite=Strict cookie carries it from then on.
* on loopback, requests whose ``Host`` is not a loopback name are refused (DNS rebinding).
* actions are POSTs that must carry ``X-Crossfade-Console: 1``: a cross-site form cannot set it
  (CSRF), and the server answers no CORS preflight.
* secrets never leave the server: DSNs are shown redacted, the token is never echoed or logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from crossfade import metrics
from crossfade.config import Settings, redact_dsn, redact_url, remember_secrets, url_secrets
from crossfade.cutover import gate_model
from crossfade.errors import ConfigError
from crossfade.ops import console_data
from crossfade.ops.console_history import PrometheusHistory, SampleHistory
from crossfade.ops.http_limits import DeadlineRequestMixin, HttpLimits, LimitedServerMixin
from crossfade.redact import escape_controls, redact

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("console_static")
_COOKIE = "crossfade_console"
COOKIE_MAX_AGE_S = (
    12 * 3600
)  # the token cookie expires: a shared or stolen browser keeps it a day at most
_EXACT_COUNT_BELOW = 1_000_000  # rows: above this the console shows PostgreSQL's estimate


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def _mismatched(t: dict[str, Any]) -> int:
    return int(t["missing"] or 0) + int(t["extra"] or 0) + int(t["different"] or 0)


class ConsoleState:
    """Collects the page's state in a background thread; ``snapshot`` returns the latest copy.

    A failed collection keeps the previous values and reports the error (one line, redacted) in
    ``errors``: the page shows it rather than going blank.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        allow_actions: bool,
        interval: float = 2.0,
        prometheus: str | None = None,
    ) -> None:
        self.settings = settings
        self.allow_actions = allow_actions
        self.interval = interval
        self.bk = settings.sync.bookkeeping_schema
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"collected_at": None, "tables": [], "errors": []}
        self.samples = SampleHistory()
        self.prometheus = PrometheusHistory(prometheus) if prometheus else None
        self._src: psycopg.Connection | None = None
        self._tgt: psycopg.Connection | None = None
        self.actions: dict[str, dict[str, Any]] = {"fence": {"state": "idle"}}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="console-collector", daemon=True)

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> ConsoleState:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(10)
        for c in (self._src, self._tgt):
            if c is not None:
                c.close()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            st = dict(self._state)
            st["actions"] = {k: dict(v) for k, v in self.actions.items()}
        st["allow_actions"] = self.allow_actions
        return st

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.collect()
            self._wake.wait(self.interval)
            self._wake.clear()

    # -- connections ------------------------------------------------------------------------------
    def _conn(self, which: str) -> psycopg.Connection:
        cur = self._src if which == "source" else self._tgt
        if cur is None or cur.closed or cur.broken:
            db = self.settings.source if which == "source" else self.settings.target
            cur = psycopg.connect(
                db.conninfo,
                autocommit=True,
                connect_timeout=db.connect_timeout_s,
                application_name="crossfade-console",
            )
            cur.execute("SET statement_timeout = '5s'")
            if which == "source":
                self._src = cur
            else:
                self._tgt = cur
        return cur

    # -- collection -------------------------------------------------------------------------------
    def collect(self) -> None:
        errors: list[str] = []
        state: dict[str, Any] = {}

        def attempt(what: str, fn: Callable[[], Any]) -> Any:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - shown on the page, collection goes on
                msg = str(exc).strip().splitlines()
                errors.append(redact(f"{what}: {msg[0] if msg else type(exc).__name__}"))
                if isinstance(exc, psycopg.Error):
                    for c in (self._src, self._tgt):
                        if c is not None and (c.broken or c.closed):
                            c.close()
                return None

        src = attempt("legacy database", lambda: self._conn("source"))
        tgt = attempt("new database", lambda: self._conn("target"))
        gates = [
            g.as_dict()
            for g in gate_model.unreadable(
                "the new database does not answer", settings=self.settings
            )
        ]
        counts: list[dict[str, Any]] = []
        ledger = slot = forecast = control = None
        lag: dict[str, int] = {}
        if tgt is not None:
            ctx = gate_model.Context(self.settings, src, tgt, estimate_above=_EXACT_COUNT_BELOW)
            evaluated = attempt("gates", lambda: gate_model.evaluate_in(ctx))
            if evaluated:
                gates = [g.as_dict() for g in evaluated]
            counts = attempt("row counts", ctx.counts) or []
            ledger = attempt("dead letters", lambda: ctx.ledger)
            slot = attempt("replication slot", lambda: ctx.slot)
            forecast = attempt("downtime forecast", lambda: console_data.forecast(ctx))
            lag = attempt("consumer lag", lambda: console_data.behind(ctx)) or {}
            control = attempt("pause state", lambda: console_data.control(ctx))
        bk = attempt("bookkeeping", self._bookkeeping) or {}
        now = time.time()
        tables = self._tables(counts, ledger, bk.get("stats", {}), lag, now)
        history = self._history(tables, now)
        self._publish(bk.get("verify"), slot)
        state.update(
            collected_at=datetime.fromtimestamp(now).astimezone().isoformat(timespec="seconds"),
            collected_at_epoch=now,
            tables=tables,
            history=history,
            partitions=bk.get("offsets", []),
            last_fence=bk.get("last_fence"),
            verify=bk.get("verify"),
            checkpoints=bk.get("checkpoints"),
            forecast=forecast,
            control=control,
            slot=slot,
            dlq={
                "by_rule": bk.get("dead_letters", []),
                **(ledger.as_dict() if ledger else {}),
                "error": None if ledger is not None else "the ledger could not be read",
                "topic": self.settings.kafka.dlq_topic,
                # the count was read: without it "0" is not "none" (the gate is unknown then)
                "readable": ledger is not None,
            },
            gates=gates,
            config={
                "source": redact_dsn(self.settings.source.dsn),
                "target": redact_dsn(self.settings.target.dsn),
                "kafka": self.settings.kafka.bootstrap_servers,
                "topic_prefix": self.settings.kafka.topic_prefix,
                "group": self.settings.sync.group_id,
                "slot": self.settings.capture.slot_name,
                "prometheus": redact_url(self.prometheus.url) if self.prometheus else None,
            },
            errors=errors,
        )
        with self._lock:
            self._state = state

    def _bookkeeping(self) -> dict[str, Any]:
        conn = self._conn("target")
        bk, group = self.bk, self.settings.sync.group_id
        return {
            "stats": console_data.table_stats(conn, bk),
            "offsets": console_data.offsets(conn, bk, group),
            "last_fence": console_data.last_fence(conn, bk),
            "verify": console_data.latest_verify(conn, bk),
            "checkpoints": console_data.checkpoints(conn, bk, group),
            "dead_letters": console_data.dead_letters(conn, bk),
        }

    def _publish(self, verify: dict[str, Any] | None, slot: dict[str, Any] | None) -> None:
        """The latest verify and the slot on the console's /metrics (CrossfadeVerifyFailing,
        CrossfadeReplicationSlotInactive; on Kafka Connect nothing else reads the slot)."""
        if verify is not None:
            metrics.set_verify_result(
                {t["name"]: 0 if t["match"] else max(1, _mismatched(t)) for t in verify["tables"]},
                finished_at=verify["finished_epoch"],
                passed=verify["ok"],
            )
        if slot is not None:
            metrics.SLOT_ACTIVE.labels(slot=slot["name"]).set(1 if slot["active"] else 0)
            if slot.get("retained_wal_bytes") is not None:
                metrics.SLOT_RETAINED_WAL.labels(slot=slot["name"]).set(slot["retained_wal_bytes"])

    def _history(self, tables: list[dict[str, Any]], now: float) -> dict[str, Any]:
        """Charts of the last 15 minutes per table: own samples, or Prometheus' when set."""
        prom = self.prometheus.series(now) if self.prometheus else None
        for t in tables:
            s = self.samples.series(t["table"])
            if prom is not None:
                s.update(prom.get(t["table"], {"rate": [], "lag": []}))
            t["series"] = s
        return {
            "window_s": self.samples.window_s,
            "source": "prometheus" if prom is not None else "samples",
            "error": self.prometheus.error if self.prometheus else None,
        }

    def _tables(
        self,
        counts: list[dict[str, Any]],
        ledger: Any,
        stats: dict[str, Any],
        lag: dict[str, int],
        now: float,
    ) -> list[dict[str, Any]]:
        """One row per configured table (mapped ones by their accounting) and per target table of
        the mapping, with the counts the ``row_counts`` gate compared."""
        by_name = {c["table"]: c for c in counts}
        out = []
        for t in self.settings.tables:
            st = stats.get(t, {})
            c = by_name.get(t, {"kind": "identity"})
            open_ = ledger.table(t) if ledger is not None else None
            new_rows = c.get("accounted") if c["kind"] == "source" else c.get("new_rows")
            self.samples.add(
                now,
                t,
                legacy=c.get("legacy_rows"),
                new=new_rows,
                applied=st.get("applied", 0),
                behind=lag.get(t),
            )
            rate = self.samples.rate_now(t)
            row = {
                "table": t,
                "kind": c["kind"],
                # the new system's table(s): the same name, or the mapping's targets
                "new_tables": c.get("targets", [t]) if c["kind"] == "source" else [t],
                "legacy_rows": c.get("legacy_rows"),
                "legacy_exact": c.get("exact", True),
                "new_rows": new_rows,
                "new_exact": c.get("exact", True),
                "match": c.get("match"),
                "applied": st.get("applied", 0),
                "skipped": st.get("skipped", 0),
                "dead_lettered": open_.dead_letters if open_ else 0,
                "deferred": open_.deferred if open_ else 0,
                "filtered": open_.filtered if open_ else 0,
                "applied_per_s": round(rate, 1) if rate is not None else None,
                # records in its topic after the running workers' positions (None: no report)
                "behind": lag.get(t),
                "last_source_ts": st.get("last_source_ts"),
            }
            if c["kind"] == "source":
                row["accounting"] = {
                    k: c.get(k) for k in ("mapped", "dead_lettered", "filtered", "deferred")
                }
                row["targets"] = c.get("targets", [])
            out.append(row)
        for c in counts:
            if c["kind"] == "target":
                self.samples.add(
                    now, c["table"], legacy=c["expected"], new=c["new_rows"], applied=0, behind=None
                )
                out.append(
                    {
                        "table": c["table"],
                        "kind": "target",
                        "sources": c["sources"],
                        "legacy_rows": None,
                        "expected": c["expected"],
                        "merged": c["merged"],
                        "new_rows": c["new_rows"],
                        "new_exact": c.get("exact", True),
                        "match": c.get("match"),
                    }
                )
        return out

    # -- actions ----------------------------------------------------------------------------------
    def run_fence(self, timeout: float = 120.0) -> bool:
        """Start a fence in a thread; False if one is already running."""
        with self._lock:
            if self.actions["fence"].get("state") == "running":
                return False
            self.actions["fence"] = {"state": "running", "started_at": time.time()}

        def work() -> None:
            from crossfade.verify.fence import fence

            try:
                r = fence(self.settings, timeout=timeout, via="console")
                result = {
                    "state": "ok",
                    "token": r.token[:8],
                    "partitions": r.partitions,
                    "seconds": r.seconds,
                    "finished_at": datetime.now().strftime("%H:%M:%S"),
                    "finished_epoch": time.time(),
                }
                log.info(
                    "console: fence %s applied on %d partitions in %.2f s",
                    r.token[:8],
                    r.partitions,
                    r.seconds,
                )
            except Exception as exc:  # noqa: BLE001 - reported on the page
                msg = str(exc).strip().splitlines()
                result = {"state": "failed", "error": redact(msg[0] if msg else type(exc).__name__)}
                log.warning("console: fence failed: %s", result["error"])
            with self._lock:
                self.actions["fence"] = result
            self._wake.set()  # refresh the page's state now

        threading.Thread(target=work, name="console-fence", daemon=True).start()
        self._wake.set()
        return True


_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class ConsoleHandler(DeadlineRequestMixin, BaseHTTPRequestHandler):
    """The console's routes; :func:`make_handler` binds it to one console (its state, token,
    and whether it listens on loopback only)."""

    server_version = "crossfade-console"
    sys_version = ""
    console_state: ConsoleState
    token: str | None = None
    token_b: bytes | None = None
    loopback: bool = True
    allowed_hosts: frozenset[str] = frozenset()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        # the access log: the token (a ?token= query, a header echoed in an error) masked,
        # control characters a client put in its request line escaped
        line = escape_controls(redact(format % args))
        log.debug("console %s %s", self.address_string(), line)

    def _behind_tls(self) -> bool:
        """Whether the browser reached us over HTTPS through a TLS-terminating proxy."""
        proto = self.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        fwd = self.headers.get("Forwarded", "").lower().replace(" ", "")
        return proto == "https" or "proto=https" in fwd

    # -- helpers
    def _send(
        self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, code: int, data: Any) -> None:
        self._send(code, json.dumps(_jsonable(data)).encode(), "application/json")

    def _authorized(self) -> bool:
        if self.token_b is None:
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(
            auth[7:].strip().encode(), self.token_b
        ):
            return True
        cookie = SimpleCookie(self.headers.get("Cookie", ""))
        c = cookie.get(_COOKIE)
        return c is not None and hmac.compare_digest(c.value.encode(), self.token_b)

    def _guard(self) -> bool:
        if self.loopback and self.headers.get("Host", "") not in self.allowed_hosts:
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"unexpected Host header\n", "text/plain")
            return False
        return True

    # -- routes
    def do_HEAD(self) -> None:  # noqa: N802 - stdlib naming
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        if not self._guard():
            return
        url = urlsplit(self.path)
        if url.path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
            return
        if url.path == "/" and self.token_b is not None and "token" in parse_qs(url.query):
            given = parse_qs(url.query)["token"][0].encode()
            if hmac.compare_digest(given, self.token_b):
                # the token leaves the address bar: from now on an HttpOnly cookie carries it
                self._send(
                    303,
                    b"",
                    "text/plain",
                    {
                        "Location": "/",
                        "Set-Cookie": f"{_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/; "
                        f"Max-Age={COOKIE_MAX_AGE_S}" + ("; Secure" if self._behind_tls() else ""),
                    },
                )
                return
        if not self._authorized():
            self._send(
                401,
                b"crossfade console: token required (open /?token=... or send Authorization: Bearer)\n",
                "text/plain",
                {"WWW-Authenticate": "Bearer"},
            )
            return
        if url.path == "/api/state":
            self._json(200, self.console_state.snapshot())
        elif url.path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            from crossfade.metrics import ComponentView

            # the console's own series only (inside `crossfade run` capture's and sync's
            # are on the metrics port)
            self._send(200, generate_latest(ComponentView(["console"])), CONTENT_TYPE_LATEST)
        elif url.path in ("/", "/index.html", "/app.js", "/app.css"):
            f = STATIC / ("index.html" if url.path == "/" else url.path.lstrip("/"))
            self._send(200, f.read_bytes(), _TYPES[f.suffix])
        else:
            self._send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:  # noqa: N802
        if not self._guard():
            return
        if not self._authorized():
            self._json(401, {"error": "token required"})
            return
        if self.headers.get("X-Crossfade-Console") != "1":
            self._json(403, {"error": "missing X-Crossfade-Console header"})
            return
        url = urlsplit(self.path)
        if url.path != "/api/actions/fence":
            self._json(404, {"error": "no such action"})
            return
        if not self.console_state.allow_actions:
            self._json(
                403,
                {
                    "error": "read-only console: start it with --allow-actions to run fence from the page"
                },
            )
            return
        if self.console_state.run_fence():
            self._json(202, {"started": "fence"})
        else:
            self._json(409, {"error": "a fence is already running"})


def make_handler(
    state: ConsoleState, token: str | None, loopback: bool, port: int
) -> type[BaseHTTPRequestHandler]:
    """A :class:`ConsoleHandler` bound to this console: its state, its token (None: none asked),
    and, on loopback, the Host headers it answers (a DNS-rebinding page sends another)."""
    return type(
        "Handler",
        (ConsoleHandler,),
        {
            "console_state": state,
            "token": token,
            "token_b": token.encode() if token else None,
            "loopback": loopback,
            "allowed_hosts": frozenset(f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")),
        },
    )


class _Server(LimitedServerMixin, ThreadingHTTPServer):
    """Sheds slow and surplus clients (crossfade.ops.http_limits)."""


class Console:
    """The console's HTTP server and state collector. ``limits``: connection cap and request
    deadline of the HTTP server (defaults: :class:`HttpLimits`); ``prometheus``: a Prometheus
    URL the charts read their history from (None: the console's own samples)."""

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int = 8421,
        allow_actions: bool = False,
        token: str | None = None,
        interval: float = 2.0,
        limits: HttpLimits | None = None,
        prometheus: str | None = None,
    ) -> None:
        token = token or None
        loopback = _is_loopback(host)
        if not loopback and not token:
            raise ConfigError(
                f"refusing to serve the console on {host} without a token",
                "set CROSSFADE_CONSOLE_TOKEN (or --token), or bind to 127.0.0.1 and use an SSH tunnel",
            )
        if token is not None and len(token) < 16:
            raise ConfigError("the console token is too short", "use at least 16 random characters")
        if token is not None:
            remember_secrets([token])  # masked in every log line from here on
        if prometheus:
            remember_secrets(url_secrets(prometheus))
        self.state = ConsoleState(
            settings, allow_actions=allow_actions, interval=interval, prometheus=prometheus
        )
        try:
            self.httpd = _Server((host, port), BaseHTTPRequestHandler)
        except (OSError, OverflowError) as exc:
            raise ConfigError(
                f"cannot serve the console on {host}:{port} "
                f"({getattr(exc, 'strerror', None) or exc})",
                "choose another --port (0-65535)",
            ) from None
        self.httpd.set_limits(limits or HttpLimits())
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.host = host
        self.httpd.RequestHandlerClass = make_handler(self.state, token, loopback, self.port)

    def start(self) -> Console:
        self.state.start()
        threading.Thread(target=self.httpd.serve_forever, name="console-http", daemon=True).start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.state.stop()


def run_console(
    settings: Settings,
    *,
    host: str,
    port: int,
    allow_actions: bool,
    token: str | None,
    interval: float,
    echo: Callable[[str], None],
    prometheus: str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM."""
    import signal

    c = Console(
        settings,
        host=host,
        port=port,
        allow_actions=allow_actions,
        token=token,
        interval=interval,
        prometheus=prometheus,
    ).start()
    shown = f"[{c.host}]" if ":" in c.host else c.host
    mode = "actions allowed (fence)" if allow_actions else "read-only"
    echo(
        f"crossfade console on http://{shown}:{c.port}/ ({mode}"
        + ("; open it once as /?token=<your token>)" if token else ")")
    )
    done = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()


__all__ = ["Console", "ConsoleState", "run_console"]
