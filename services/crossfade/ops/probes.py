"""The ops HTTP endpoints every long-running command serves, and the readiness checks of capture
and sync.

On ``ops.metrics_host:ops.metrics_port``:

``/metrics``  the Prometheus text format (only the series of the components the process runs:
              :class:`crossfade.metrics.ComponentView`);
``/healthz``  200 while the process runs (liveness);
``/readyz``   200 when every readiness check registered by the services passes, 503 otherwise,
              with a JSON body naming each check (connected to the broker and the databases,
              partitions assigned for sync and each configured table assigned and
              progressing, the Debezium engine running for capture).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client import REGISTRY

from crossfade.metrics import (
    COMPONENTS,
    READINESS,
    STALLED_TABLES,
    ComponentView,
    Readiness,
    init_labels,
)
from crossfade.ops.http_limits import DeadlineRequestMixin, HttpLimits, LimitedServerMixin

if TYPE_CHECKING:
    from crossfade.capture.service import CaptureService
    from crossfade.config import Settings
    from crossfade.ops.children import SyncChildren
    from crossfade.sync.worker import SyncWorker

log = logging.getLogger(__name__)


class BrokerProbe:
    """Is the Kafka cluster answering? One metadata request, cached a few seconds (probes and
    scrapes must stay cheap and never hang)."""

    def __init__(self, client_conf: dict[str, Any], ttl: float = 5.0, timeout: float = 2.0) -> None:
        self._conf = {k: v for k, v in client_conf.items() if k != "logger"}
        self._ttl = ttl
        self._timeout = timeout
        self._admin: Any = None
        self._at = 0.0
        self._ok = False
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._at < self._ttl:
                return self._ok
            try:
                from confluent_kafka.admin import AdminClient

                if self._admin is None:
                    self._admin = AdminClient(self._conf)
                md = self._admin.list_topics(timeout=self._timeout)
                self._ok = bool(md.brokers)
            except Exception:  # noqa: BLE001 - unreachable broker: not ready
                self._ok = False
            self._at = time.monotonic()
            return self._ok


def watch_capture(service: CaptureService, settings: Settings) -> None:
    """Register capture's readiness: the Debezium engine runs and the broker answers (the slot
    poller adds "source database" when capture starts)."""
    READINESS.register(
        "capture",
        "engine running",
        lambda: (
            service.ready.is_set() and service.engine is not None and not service.stopping.is_set()
        ),
    )
    READINESS.register("capture", "broker", BrokerProbe(settings.kafka.client_config()))


ASSIGNED = "partitions assigned"
SYNC_CHECKS = ("target database", ASSIGNED, "consume loop", "broker")
"""The checks :func:`watch_sync` registers, besides one per table (:data:`TABLE_CHECK`)."""
TABLE_CHECK = "{} assigned and progressing"


def watch_sync(workers: Sequence[SyncWorker], settings: Settings) -> None:
    """Register sync's readiness, for all the process's ``workers`` (``sync.workers``, threads)
    at once: each worker's target session connected and consume loop turning, partitions
    assigned to the process (a worker beyond a topic's partition count holds none: not a fault),
    broker answering, and per configured table: stalled for no worker
    (``worker.stalled_tables``)."""
    limit = max(60.0, settings.sync.max_poll_interval_ms / 1000)
    workers = list(workers)

    def target_ok(w: SyncWorker) -> bool:
        c = w.conn
        return c is not None and not c.closed and not c.broken

    def loop_ok(w: SyncWorker) -> bool:
        return w.consumer is not None and time.monotonic() - w.meter.last_loop < limit

    def stalled() -> dict[str, str]:
        out: dict[str, str] = {}
        for w in workers:
            out |= w.stalled_tables
        return out

    READINESS.register("sync", "target database", lambda: all(target_ok(w) for w in workers))
    READINESS.register("sync", ASSIGNED, lambda: any(w.owner for w in workers))
    READINESS.register("sync", "consume loop", lambda: all(loop_ok(w) for w in workers))
    READINESS.register("sync", "broker", BrokerProbe(settings.kafka.client_config()))
    for table in settings.tables:  # the body names the stalled table (sync/watchdog.py)
        READINESS.register(
            "sync",
            TABLE_CHECK.format(table),
            lambda t=table: t not in stalled(),  # type: ignore[misc]
        )
    STALLED_TABLES.watch(list(settings.tables), stalled)


def watch_children(children: SyncChildren, settings: Settings) -> None:
    """Register sync's readiness when sync runs in child processes (``sync.processes``): each
    check of :func:`watch_sync` over every child's /readyz (partitions: one child's suffice, as
    one worker's do), and every child answering."""
    READINESS.register("sync", "processes answering", children.answering)
    for name in SYNC_CHECKS:
        READINESS.register("sync", name, children.check(name, any_child=name == ASSIGNED))
    for table in settings.tables:
        name = TABLE_CHECK.format(table)
        READINESS.register("sync", name, children.check(name))


# -- HTTP -------------------------------------------------------------------------------------


class _QuietHandler(DeadlineRequestMixin, WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


class _ThreadingWSGIServer(LimitedServerMixin, prometheus_client.exposition.ThreadingWSGIServer):
    """Sheds slow and surplus clients (crossfade.ops.http_limits): it listens on 0.0.0.0 in
    Kubernetes, inside capture and sync."""

    daemon_threads = True


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def ops_app(
    readiness: Readiness = READINESS,
    registry: Any = REGISTRY,
    components: Iterable[str] | None = None,
    children: SyncChildren | None = None,
) -> WsgiApp:
    """The WSGI app behind /metrics, /healthz and /readyz. ``components``: /metrics serves only
    their series (:class:`ComponentView`); None: the whole registry. ``children``: the sync child
    processes, whose series /metrics merges in and whose health /healthz needs too."""
    view = registry if components is None else ComponentView(components, registry)
    if children is not None:
        view = children.view(view)
    metrics_app = prometheus_client.make_wsgi_app(view)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path == "/healthz":
            if children is not None and not children.healthy():
                start_response(
                    "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")]
                )
                return [b"a sync process does not answer\n"]
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == "/readyz":
            checks = readiness.evaluate()
            ready = all(all(c.values()) for c in checks.values())
            body = json.dumps({"ready": ready, "checks": checks}, indent=1).encode()
            start_response(
                "200 OK" if ready else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


class OpsServer:
    """Serves :func:`ops_app` from a daemon thread (the process's exit ends it), with a
    connection cap and a request deadline (``limits``, :class:`HttpLimits` by default)."""

    def __init__(
        self, host: str, port: int, app: WsgiApp | None = None, limits: HttpLimits | None = None
    ) -> None:
        server = make_server(
            host,
            port,
            app or ops_app(),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        assert isinstance(server, _ThreadingWSGIServer)
        server.set_limits(limits or HttpLimits())
        self._server: WSGIServer = server
        self.host = host
        self.port = int(self._server.server_port)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ops-http", daemon=True
        )

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics (also /healthz, /readyz)", self.host, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_ops(
    settings: Settings,
    components: Iterable[str] = COMPONENTS,
    children: SyncChildren | None = None,
) -> OpsServer | None:
    """Start the ops endpoints if ``ops.metrics_port`` is set (0: any free port); None otherwise.
    ``components``: what the process runs (capture, sync); /metrics exports only their series,
    and ``children``'s (sync child processes, :mod:`crossfade.ops.children`) merged in."""
    components = tuple(components)
    init_labels(settings, components)
    if settings.ops.metrics_port is None:
        return None
    from crossfade.errors import ConfigError

    try:
        return OpsServer(
            settings.ops.metrics_host,
            settings.ops.metrics_port,
            ops_app(components=components, children=children),
        ).start()
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on {settings.ops.metrics_host}:{settings.ops.metrics_port} ({exc.strerror})",
            "choose a free ops.metrics_port or stop the process holding it",
        ) from None
