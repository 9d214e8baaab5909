"""``sync.processes``: sync as child processes, so that capture's and sync's Python do not share
one interpreter lock (``crossfade run``) and one ``crossfade sync`` uses several cores.

The parent starts each child as the same program (``crossfade sync`` with the same config and
global options) with :data:`CHILD_ENV` naming it (``sync-1``, ``sync-2``...): a child runs one
process's worth of sync (its ``sync.workers`` threads, one consumer each in the same group) and
never starts children itself. A child:

* asks the kernel to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``), then checks the
  parent is still the one that started it (it may have died before the call): a parent's crash
  is a crash of the whole service, which crossfade survives (no loss, no double apply);
* serves its ops endpoints on 127.0.0.1, any free port, and writes the port to the file
  :data:`PORT_FILE_ENV` names; its log lines carry its name.

The parent runs each child as a :class:`~crossfade.ops.runner.Runner` service: SIGTERM/SIGINT
forward SIGTERM (each child finishes its batch in flight); a child that exits while the parent is
not stopping stops the rest, and the parent exits with that child's code (128 + the signal when
a signal killed it). Children are not restarted: the process exits and its supervisor
(Kubernetes, systemd) starts it again.

The parent's ``/metrics`` is its own series and the children's, merged per label set
(:func:`merge`): counters, histograms and summaries summed, each gauge by the rule in
:data:`GAUGE_RULES`; ``/readyz`` and ``/healthz`` need every child's answer too.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from crossfade.errors import CrossfadeError

if TYPE_CHECKING:
    from crossfade.config import Settings
    from crossfade.ops.runner import Runner

log = logging.getLogger(__name__)

CHILD_ENV = "CROSSFADE_SYNC_CHILD"
"""Set in a child: its name (``sync-2``). A process with it set never starts children."""
PARENT_ENV = "CROSSFADE_SYNC_PARENT_PID"
"""The pid of the parent that started the child (the check after ``PR_SET_PDEATHSIG``)."""
PORT_FILE_ENV = "CROSSFADE_SYNC_PORT_FILE"
"""Where the child writes the port of its ops endpoints."""

STOP_GRACE_S = 60.0
"""A child still running this long after its SIGTERM is killed (a batch in flight takes
seconds; the parent must not hang on a child that does not stop)."""
SCRAPE_TIMEOUT_S = 2.0

_PR_SET_PDEATHSIG = 1
_STOPPED = (0, -signal.SIGTERM, -signal.SIGINT, 130)
"""A child's exit codes that are a clean stop once the parent stops: 0, or the signal (the
parent's SIGTERM, a terminal's SIGINT to the group) ending a child that was still starting,
before it handled them (seen: ``crossfade run`` stopped at its start said a sync process was
"killed by SIGTERM ... out of memory?")."""

# -- how many -----------------------------------------------------------------------------


def resolve_processes(value: int | str, partitions: int, cpus: int | None = None) -> int:
    """``sync.processes`` as a number: ``auto`` is the usable CPUs, at most ``partitions``
    (a process beyond a topic's partition count would hold none), at least 1."""
    if value != "auto":
        return int(value)
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    return max(1, min(cpus, partitions))


def children_to_start(settings: Settings, with_capture: bool) -> int:
    """How many sync children this process starts; 0: sync runs in this process. A child never
    starts any; ``crossfade run`` (``with_capture``) always runs sync in children, even one
    (that alone takes sync off capture's interpreter lock); ``crossfade sync`` only for 2 or more."""
    if os.environ.get(CHILD_ENV):
        return 0
    n = resolve_processes(settings.sync.processes, settings.kafka.partitions)
    return n if with_capture or n > 1 else 0


def warn_beyond_partitions(key: str, what: str, n: int, partitions: int) -> None:
    """WARNING when ``key`` (``sync.processes``, ``sync.workers``) asks for more consumers than
    a change topic has partitions: the group leaves the extra ones without any."""
    if n > partitions:
        log.warning(
            "%s is %d but each change topic has %d partitions: %d %s will hold none; set %s at "
            "most kafka.partitions",
            key,
            n,
            partitions,
            n - partitions,
            what,
            key,
        )


def warn_processes(settings: Settings, n: int) -> None:
    """The start's warnings about ``n`` sync processes: some would hold no partition; more
    workers than the replication origins' pool write untagged."""
    from crossfade.sync.origin import POOL

    warn_beyond_partitions("sync.processes", "process(es)", n, settings.kafka.partitions)
    sessions = n * settings.sync.workers
    if settings.sync.workers > 1 and n <= settings.kafka.partitions:
        # each child runs sync.workers threads: the group's members are the product
        warn_beyond_partitions(
            "sync.processes x sync.workers", "worker(s)", sessions, settings.kafka.partitions
        )
    if settings.sync.tag_origin and sessions > POOL:
        log.warning(
            "sync.processes x sync.workers is %d but the cluster has a pool of %d replication "
            "origins: %d sync session(s) will write untagged (a fallback would send their writes "
            "back); lower sync.processes or sync.workers",
            sessions,
            POOL,
            sessions - POOL,
        )


# -- the child's side -----------------------------------------------------------------------


def child_name() -> str | None:
    return os.environ.get(CHILD_ENV) or None


def become_child(settings: Settings) -> Settings:
    """In a child: die with the parent, and the settings it runs with (ops endpoints on
    127.0.0.1, any port; no console: the parent serves it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("cannot ask to be stopped with the parent (prctl errno %d)", ctypes.get_errno())
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):  # the parent died before prctl: nobody to serve
        os._exit(1)
    ops = settings.ops.model_copy(
        update={"metrics_port": 0, "metrics_host": "127.0.0.1", "console_port": None}
    )
    return settings.model_copy(update={"ops": ops})


def report_port(port: int) -> None:
    """Tell the parent where this child's ops endpoints are (written whole, then renamed)."""
    path = os.environ.get(PORT_FILE_ENV)
    if not path:
        return
    tmp = f"{path}.tmp"
    Path(tmp).write_text(str(port))
    os.replace(tmp, path)


def error_file(port_file: str | Path) -> Path:
    return Path(f"{port_file}.error")


def report_error(line: str) -> bool:
    """In a child: hand the one line its failure would print to the parent, which prints it as
    its own (one line for the whole command); False when not a child or the hand-over failed
    (then the child prints it)."""
    path = os.environ.get(PORT_FILE_ENV)
    if not path:
        return False
    try:
        error_file(path).write_text(line)
    except OSError:
        return False
    return True


# -- the parent's side ----------------------------------------------------------------------


class ChildFailed(CrossfadeError):
    """A sync child exited while the parent was not stopping; the parent exits with its code."""

    def __init__(self, message: str, hint: str | None, code: int) -> None:
        super().__init__(message, hint)
        self.exit_code = code


class SyncChild:
    def __init__(self, name: str, argv: list[str], port_file: Path) -> None:
        self.name = name
        self.argv = argv
        self.port_file = port_file
        self.popen: subprocess.Popen[bytes] | None = None
        self.stopping = threading.Event()
        self.failed: ChildFailed | None = None
        self._port: int | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env[CHILD_ENV] = self.name
        env[PARENT_ENV] = str(os.getpid())
        env[PORT_FILE_ENV] = str(self.port_file)
        self.popen = subprocess.Popen(self.argv, env=env, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def run(self) -> None:
        assert self.popen is not None
        rc = self.popen.wait()
        if self.stopping.is_set() and rc in _STOPPED:
            return
        if rc < 0:
            what, code = f"was killed by {signal.Signals(-rc).name}", 128 - rc
        else:
            what, code = f"exited with code {rc}", rc or 1
        said = self._said()
        if said:  # the child's own line is the cause: the command's last line says it too
            self.failed = ChildFailed(f"{self.name}: {said}", None, code)
        else:
            self.failed = ChildFailed(
                f"sync process {self.name} (pid {self.popen.pid}) {what}",
                "the other processes were stopped: find why in its log lines above (out of "
                "memory?), then start the command again",
                code,
            )
        raise self.failed

    def _said(self) -> str | None:
        with contextlib.suppress(OSError):
            return error_file(self.port_file).read_text().strip() or None
        return None

    def stop(self) -> None:
        self.stopping.set()
        p = self.popen
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)

        def kill() -> None:
            if p.poll() is None:
                log.warning(
                    "%s did not stop %.0f s after SIGTERM: killing it", self.name, STOP_GRACE_S
                )
                with contextlib.suppress(ProcessLookupError):
                    p.kill()

        t = threading.Timer(STOP_GRACE_S, kill)
        t.daemon = True
        t.start()

    def port(self) -> int | None:
        if self._port is None:
            with contextlib.suppress(OSError, ValueError):
                self._port = int(self.port_file.read_text())
        return self._port

    def get(self, path: str) -> tuple[int, bytes] | None:
        """GET ``path`` from the child's ops endpoints: (status, body), None when it does not answer."""
        port = self.port()
        if port is None:
            return None
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{port}{path}", timeout=SCRAPE_TIMEOUT_S
            ) as r:
                return int(r.status), r.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except OSError:
            return None


class SyncChildren:
    """The sync children of one ``crossfade run`` / ``crossfade sync`` process."""

    def __init__(self, n: int, argv: Sequence[str]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="crossfade-sync-")
        self.children = [
            SyncChild(f"sync-{i}", list(argv), Path(self._dir.name) / f"sync-{i}.port")
            for i in range(1, n + 1)
        ]
        self._ready_at = 0.0
        self._ready: list[dict[str, Any] | None] = []
        self._lock = threading.Lock()

    def start(self, runner: Runner) -> None:
        """Start every child and add it to ``runner``. Call it from the main thread: the kernel
        sends PDEATHSIG when the *thread* that forked the child ends."""
        for c in self.children:
            c.start()
            runner.add(c.name, c.run, c.stop)
        # `kill -CONT <pid>` resumes the command: its children too (one that stopped itself, or
        # was stopped on its own, waits for it)
        signal.signal(signal.SIGCONT, self._resume)
        log.info(
            "sync runs as %d process(es): %s",
            len(self.children),
            ", ".join(f"{c.name} (pid {c.pid})" for c in self.children),
        )

    def _resume(self, _signum: int, _frame: Any) -> None:
        for c in self.children:
            if c.popen is not None and c.popen.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    c.popen.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self._dir.cleanup()

    def check_stopped(self) -> None:
        """After a stop: the first child that did not exit cleanly (the runner takes an error
        while stopping for shutdown noise; a child's exit code is the child's whole word)."""
        for c in self.children:
            if c.failed is not None:
                raise c.failed

    # -- /readyz, /healthz, /metrics

    def healthy(self) -> bool:
        return all((r := c.get("/healthz")) is not None and r[0] == 200 for c in self.children)

    def _readiness(self) -> list[dict[str, Any] | None]:
        """Each child's /readyz checks of sync (None: not answering), read at most once a second."""
        with self._lock:
            if time.monotonic() - self._ready_at > 1.0:
                out: list[dict[str, Any] | None] = []
                for c in self.children:
                    r = c.get("/readyz")
                    try:
                        out.append(json.loads(r[1])["checks"].get("sync", {}) if r else None)
                    except (ValueError, KeyError, TypeError):
                        out.append(None)
                self._ready, self._ready_at = out, time.monotonic()
            return self._ready

    def check(self, name: str, any_child: bool = False) -> Callable[[], bool]:
        """The readiness check ``name`` over the children: every child's (``any_child``: one
        child's, for what one process of several may lack without a fault, as partitions)."""

        def fn() -> bool:
            found = [bool(r.get(name)) for r in self._readiness() if r is not None]
            return any(found) if any_child else bool(found) and all(found)

        return fn

    def answering(self) -> bool:
        return all(r is not None for r in self._readiness())

    def view(self, own: Any) -> Any:
        """A registry-like view: ``own``'s families merged with every child's (:func:`merge`)."""
        children = self

        class _Merged:
            def collect(self) -> Iterator[Metric]:
                texts = [generate_latest(own).decode()]
                for c in children.children:
                    r = c.get("/metrics")
                    if r is not None and r[0] == 200:
                        texts.append(r[1].decode())
                return iter(merge(texts))

        return _Merged()


def child_argv(config: str | None, verbose: bool, log_format: str) -> list[str]:
    """The command a child runs: this program's ``sync`` with the same config and options."""
    argv = [sys.executable, "-c", "from crossfade.ops.cli import main; main()"]
    if verbose:
        argv.append("-v")
    argv += ["--log-format", log_format, "sync"]
    if config is not None:
        argv += ["-c", config]
    return argv


# -- merging the children's metrics -----------------------------------------------------------

GAUGE_RULES: dict[str, str] = {
    # sync: what the process-wide value means across processes, as across the workers of one
    "crossfade_sync_assigned_partitions": "sum",
    "crossfade_sync_end_to_end_lag_seconds": "max",
    "crossfade_sync_last_applied_source_timestamp_seconds": "max",
    "crossfade_sync_last_batch_timestamp_seconds": "max",
    "crossfade_sync_fence_lag_seconds": "max",
    "crossfade_sync_consumer_lag_records": "max",
    "crossfade_sync_table_held": "max",
    "crossfade_sync_table_stalled": "max",
    "crossfade_paused": "max",
    # the parent's own readiness already combines the children's (SyncChildren.check)
    "crossfade_ready": "first",
    # the process collector: the whole service's memory and files, its oldest start
    "process_resident_memory_bytes": "sum",
    "process_virtual_memory_bytes": "sum",
    "process_open_fds": "sum",
    "process_start_time_seconds": "min",
}
"""How a gauge reported by several processes combines per label set; a gauge not listed keeps
the first process's value (the parent's, then sync-1's...): capture's gauges, build info."""

_COMBINE: dict[str, Callable[[float, float], float]] = {
    "sum": lambda a, b: a + b,
    "max": max,
    "min": min,
    "first": lambda a, _b: a,
}


def merge(texts: Iterable[str]) -> list[Metric]:
    """The families of several processes' /metrics texts, one per name, each sample per label
    set combined: counters, histograms and summaries summed, gauges by :data:`GAUGE_RULES`."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            mine = families.get(fam.name)
            if mine is None:
                mine = families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
                values[fam.name] = {}
            elif mine.type != fam.type:
                continue
            rule = (
                GAUGE_RULES.get(fam.name, "first")
                if fam.type in ("gauge", "info", "unknown")
                else "sum"
            )
            combine = _COMBINE[rule]
            got = values[fam.name]
            for s in fam.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                got[key] = combine(got[key], s.value) if key in got else s.value
    for name, fam in families.items():
        for (sample, labels), value in values[name].items():
            fam.add_sample(sample, dict(labels), value)
    return list(families.values())
