"""Stacks whose every component can fail: FAULTS.md cases 33-36 and the random mode.

A :class:`FaultStack` puts the legacy and the new database on PostgreSQL servers of their own
(:class:`FaultServers`: two servers for the whole session, shared by the tests that crash or
restart them, one test at a time; the suite's main server is never touched), uses a broker of
its own (:class:`~crossfade.embedded.EmbeddedBroker`, so it can die and come back empty on the
same port; none when ``CROSSFADE_TEST_BOOTSTRAP`` names an external Kafka) and routes sync's and
capture's link to the new database through a :class:`TcpProxy`, so the network between them can
be cut while the test's own connections go straight to the server.

A :class:`Supervisor` keeps one capture and one sync running, as an orchestrator would: a process
that stops on purpose (exit != 0 with one ``crossfade:`` line, e.g. capture after the broker
lost its log: README, operations) is recorded in :attr:`Supervisor.stops` and started again; a
death without that line, or with a Python traceback, is recorded in :attr:`Supervisor.crashes`,
which a test asserts empty.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres
from crossfade.embedded._proc import free_port
from tests.conftest import Proc, Stack


@dataclass
class FaultServers:
    """The two PostgreSQL servers fault stacks put their databases on (one pair per session)."""

    legacy: EmbeddedPostgres
    target: EmbeddedPostgres

    def ensure_up(self) -> None:
        """Start a server a failed test left down (its data is kept)."""
        for pg in (self.legacy, self.target):
            if not pg.running:
                pg.start(timeout=60)


class TcpProxy:
    """A TCP forwarder on 127.0.0.1 to ``upstream_port`` whose link can be cut.

    :meth:`cut` makes it a black hole, as a network partition is: nothing is forwarded either
    way (bytes wait in the kernel's buffers, connections stay open, new ones are accepted and
    left unanswered). :meth:`heal` ends the cut: ``reset=False`` lets every connection resume
    where it stopped (a short partition TCP rides out); ``reset=True`` resets every connection
    open or accepted during the cut (the peers see the link die, as after TCP gave up).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._srv: socket.socket | None = None
        self.connections = 0

    def dsn_for(self, dsn: str) -> str:
        return dsn.replace(f":{self.upstream[1]}/", f":{self.port}/")

    def start(self) -> TcpProxy:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", self.port))
        srv.listen(128)
        self._srv = srv
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()
        return self

    def cut(self) -> None:
        self._cut.set()

    def heal(self, reset: bool) -> int:
        """End the cut; with ``reset`` reset the connections first. Returns how many were reset."""
        n = 0
        if reset:
            with self._lock:
                socks, self._socks = list(self._socks), set()
            for s in socks:
                _reset(s)
            n = len(socks) // 2
        self._cut.clear()
        return n

    def stop(self) -> None:
        self._stop.set()
        self._cut.clear()
        if self._srv is not None:
            self._srv.close()
        with self._lock:
            socks, self._socks = list(self._socks), set()
        for s in socks:
            _reset(s)

    def _accept(self) -> None:
        assert self._srv is not None
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._srv], [], [], 0.2)
                if ready:
                    client, _ = self._srv.accept()
                    threading.Thread(target=self._serve, args=(client,), daemon=True).start()
            except OSError:
                return

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._socks.add(client)
        while self._cut.is_set() and not self._stop.is_set():  # accepted during the cut: held
            time.sleep(0.05)
        with self._lock:
            held_then_reset = client not in self._socks
        if held_then_reset or self._stop.is_set():
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        with self._lock:
            self._socks.add(upstream)
            self.connections += 1
        peer = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                if self._cut.is_set():
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select(list(peer), [], [], 0.2)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except (OSError, ValueError):  # reset by heal() or stop(), or by a peer
            return
        finally:
            for s in (client, upstream):
                with self._lock:
                    self._socks.discard(s)
                with contextlib.suppress(OSError):
                    s.close()


def _reset(s: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a link that died does to its peers."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        s.close()


class FaultStack(Stack):
    """A :class:`tests.conftest.Stack` on :class:`FaultServers`, with its own broker (None on an
    external Kafka) and sync's and capture's link to the new database through a
    :class:`TcpProxy`."""

    def __init__(
        self,
        servers: FaultServers,
        root: Path,
        *,
        broker: EmbeddedBroker | None,
        bootstrap: str | None = None,
        **kw: Any,
    ) -> None:
        servers.ensure_up()
        boot = broker.bootstrap_servers if broker is not None else bootstrap
        assert boot, "a broker or a bootstrap address"
        super().__init__(servers.legacy, boot, root, **kw)
        self.servers = servers
        self.source_pg = servers.legacy
        self.target_pg = servers.target
        self.target_pg.create_database(self.target_db)
        self.broker = broker
        self.proxy = TcpProxy(self.target_pg.port).start()
        self.supervisor: Supervisor | None = None
        """Set by a :class:`Supervisor` of this stack; :meth:`close` ends it first."""
        self.extra: dict[str, dict[str, Any]] = {}
        """Per-section additions to the config (``{"sync": {...}, "kafka": {...}}``), merged in
        by :meth:`write_config`."""

    @property
    def target_dsn(self) -> str:
        return self.target_pg.dsn(self.target_db)

    def write_config(
        self,
        tables: list[str],
        ops: dict[str, Any] | None = None,
        mapping: dict[str, Any] | None = None,
    ) -> Any:
        """The stack's config, with the new database reached through the proxy and
        :attr:`extra` merged in."""
        super().write_config(tables, ops, mapping)
        cfg = yaml.safe_load(self.config_path.read_text())
        cfg["target"]["dsn"] = self.proxy.dsn_for(self.target_dsn)
        for section, values in self.extra.items():
            cfg.setdefault(section, {}).update(values)
        self.config_path.write_text(yaml.safe_dump(cfg))
        return self.settings

    def dead_procs(self) -> list[Proc]:
        """Unexpected deaths, after the supervisor (if any) judged the latest ones."""
        if self.supervisor is not None:
            self.supervisor.judge_deaths()
        return super().dead_procs()

    def close(self) -> None:
        if self.supervisor is not None:  # nothing restarts what is being stopped
            self.supervisor.close()
        self.proxy.heal(reset=False)
        self.servers.ensure_up()
        try:
            super().close()
        finally:
            self.proxy.stop()

    # -- the failures ------------------------------------------------------------------------
    def crash_target(self, down_s: float = 2.0) -> None:
        """``pg_ctl stop -m immediate`` on the new database's server, down ``down_s``, start."""
        self.target_pg.restart(timeout=60, mode="immediate", down_s=down_s)

    def restart_legacy(self, mode: str = "fast", down_s: float = 2.0) -> None:
        """Stop the legacy database's server (``immediate``: a crash), down ``down_s``, start.
        Debezium's replication connection is lost; the slot keeps its position."""
        self.source_pg.restart(timeout=60, mode=mode, down_s=down_s)

    def reset_broker(self) -> None:
        """SIGKILL the embedded broker and start it again, empty, on the same port."""
        assert self.broker is not None, "no embedded broker to reset (external Kafka)"
        self.broker.kill()
        self.broker.start(timeout=30)

    def cut_target_network(self, seconds: float, reset: bool) -> None:
        """Cut the link between sync (and capture) and the new database for ``seconds``."""
        self.proxy.cut()
        try:
            time.sleep(seconds)
        finally:
            self.proxy.heal(reset=reset)


class Supervisor:
    """Keeps one process of each of ``names`` running on ``stack`` (see the module docstring).

    Restarts back off (1 s doubling to 10 s) so a process that cannot start does not spin.
    Use :meth:`kill` and :meth:`restart_with` for deliberate faults: the supervisor then knows the
    death was the test's."""

    def __init__(
        self,
        stack: Stack,
        names: tuple[str, ...] = ("capture", "sync"),
        first: dict[str, Callable[[], Proc]] | None = None,
    ) -> None:
        """``first``: how to start a process the first time (e.g. with a fault point)."""
        self.stack = stack
        self.stops: list[str] = []
        self.crashes: list[str] = []
        self._lock = threading.RLock()
        self._offsets: dict[int, int] = {}
        self._judged: set[int] = set()  # ids of dead processes judged here
        self._delay: dict[str, float] = {n: 1.0 for n in names}
        self._next: dict[str, float] = {n: 0.0 for n in names}
        self.procs: dict[str, Proc] = {n: self._start(n, (first or {}).get(n)) for n in names}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        self._thread.start()
        if isinstance(stack, FaultStack):
            stack.supervisor = self

    def _start(self, name: str, how: Callable[[], Proc] | None = None) -> Proc:
        log = self.stack.dir / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        p = how() if how is not None else self.stack.start(name)
        self._offsets[id(p)] = offset
        return p

    def output(self, p: Proc) -> str:
        """What ``p`` itself wrote to its (shared) log."""
        try:
            with open(p.log, "rb") as fh:
                fh.seek(self._offsets.get(id(p), 0))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self, name: str) -> Proc:
        """SIGKILL ``name`` and start a new one (FAULTS 1, 3)."""
        with self._lock:
            self.procs[name].kill()
            self.procs[name] = self._start(name)
            return self.procs[name]

    def restart_with(self, name: str, how: Callable[[], Proc]) -> Proc:
        """Stop ``name`` (SIGTERM) and start it again the test's way (e.g. with a fault point)."""
        with self._lock:
            self.procs[name].stop(60)
            self.procs[name] = self._start(name, how)
            return self.procs[name]

    def judge_deaths(self) -> None:
        """Judge every process that died since the last look (a stop or a crash); the fence
        calls it before it looks for unexpected deaths, so no death reaches it unjudged (one
        between two of the loop's looks, 0.5 s apart, did)."""
        with self._lock:
            for name, p in list(self.procs.items()):
                if not p.alive() and not p.expected_dead:
                    self._judge(name, p)
                    self._judged.add(id(p))

    def _loop(self) -> None:
        while not self._done.wait(0.5):
            with self._lock:
                self.judge_deaths()  # at once; the restart waits for the back-off
                for name, p in list(self.procs.items()):
                    if p.alive():
                        continue
                    if id(p) not in self._judged or time.monotonic() < self._next[name]:
                        continue  # stopped by the test itself, or backing off
                    self._next[name] = time.monotonic() + self._delay[name]
                    self._delay[name] = min(self._delay[name] * 2, 10.0)
                    self.procs[name] = self._start(name)

    def _judge(self, name: str, p: Proc) -> None:
        p.expected_dead = True
        out = self.output(p)
        if "FAULT POINT" in out:  # a fault point of the test killed it
            return
        lines = [x for x in out.splitlines() if x.startswith("crossfade:")]
        traceback = any(x.startswith("Traceback") for x in out.splitlines())
        what = f"{name} exited {p.p.returncode}: {lines[-1] if lines else out[-600:]!r}"
        (self.crashes if traceback or not lines else self.stops).append(what)
        print(f"supervisor: {what}; starting it again", flush=True)

    def close(self) -> None:
        self._done.set()
        self._thread.join(10)


class PgbenchLoad:
    """pgbench's tables (``history`` given a ``bigserial`` key) and its TPC-B-like load."""

    TABLES = [
        "public.pgbench_accounts",
        "public.pgbench_branches",
        "public.pgbench_tellers",
        "public.pgbench_history",
    ]

    def __init__(
        self, stack: Stack, scale: int = 1, clients: int = 4, accounts: int | None = None
    ) -> None:
        """``accounts``: keep only that many of the ``100000 * scale`` accounts (each snapshot
        after a broker reset re-reads them all; updates of a removed account change nothing)."""
        self.stack = stack
        self.scale = scale
        self.clients = clients
        self.accounts = accounts
        self.bin = stack.pg.binaries.tool("pgbench") if stack.pg.binaries else "pgbench"
        self._p: subprocess.Popen[str] | None = None

    def init(self) -> PgbenchLoad:
        subprocess.run(
            [self.bin, "-i", "-s", str(self.scale), "-q", self.stack.source_dsn],
            check=True,
            capture_output=True,
        )
        self.stack.sql("ALTER TABLE pgbench_history ADD COLUMN hid bigserial PRIMARY KEY")
        if self.accounts is not None:
            self.stack.sql("DELETE FROM pgbench_accounts WHERE aid > %s", (self.accounts,))
            self.stack.sql("VACUUM pgbench_accounts")
        return self

    def start(self, seconds: int) -> PgbenchLoad:
        self._p = subprocess.Popen(
            [self.bin, "-c", str(self.clients), "-T", str(seconds), "-n", self.stack.source_dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def running(self) -> bool:
        return self._p is not None and self._p.poll() is None

    def wait(self) -> str:
        """pgbench's output once it ended; AssertionError if it failed."""
        assert self._p is not None
        out, _ = self._p.communicate(timeout=600)
        assert self._p.returncode == 0, out
        return out

    def stop(self) -> None:
        if self.running():
            assert self._p is not None
            self._p.terminate()
            self._p.wait(30)


def external_bootstrap() -> str | None:
    """The external Kafka the suite runs against (``CROSSFADE_TEST_BOOTSTRAP``), if any."""
    return os.environ.get("CROSSFADE_TEST_BOOTSTRAP") or None
