"""An embedded PostgreSQL server for the demo and the integration tests.

It is a plain ``initdb`` cluster on 127.0.0.1, configured for logical decoding
(``wal_level=logical``) so Debezium can stream from it. Binaries are found in this order:

1. ``$CROSSFADE_PG_BINDIR`` (an explicit override is never silently ignored),
2. ``pg_config --bindir``, if that directory holds ``initdb``,
3. ``initdb`` on ``PATH``,
4. the binaries bundled in the ``pgserver`` wheel (``pgserver/pginstall/bin``).

``initdb`` refuses to run as root, so when this process runs as root every server command runs
as an unprivileged user: the owner of an existing data directory, else ``postgres``, else
``nobody``. The data directory is owned by that user and every parent must be searchable by it.

The postmaster is started directly as a child of this process (not through ``pg_ctl``, which
orphans it): in containers whose PID 1 does not reap orphans, a dead orphan postmaster stays a
zombie whose PID in ``postmaster.pid`` makes the next start refuse ("lock file already exists").
As our child it is reaped, so start-after-:meth:`EmbeddedPostgres.kill` recovers cleanly.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crossfade.embedded._proc import (
    children_of,
    first_untraversable,
    free_port,
    pid_alive,
    port_is_free,
    tail,
    wait_dead,
)
from crossfade.errors import DatabaseUnavailable, PreflightError

BINDIR_ENV = "CROSSFADE_PG_BINDIR"
SUPERUSER = "postgres"
_TOOLS = ("initdb", "postgres")
# pg_ctl's shutdown modes and the postmaster signals they send.
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}
_CONF_NAME = "crossfade.conf"
_INCLUDE_LINE = f"include_if_exists = '{_CONF_NAME}'"
_LOG_NAME = "postgres.log"
# Unix socket paths are limited to ~107 bytes; leave room for "/.s.PGSQL.65535.lock".
_MAX_SOCKET_DIR = 80

_PG_HBA = """\
# Written by crossfade.embedded: trust on loopback only. For the embedded/test server only.
local   all             all                             trust
host    all             all             127.0.0.1/32    trust
host    all             all             ::1/128         trust
local   replication     all                             trust
host    replication     all             127.0.0.1/32    trust
host    replication     all             ::1/128         trust
"""


@dataclass(frozen=True)
class PgBinaries:
    """A directory with ``initdb`` and ``postgres``, and where it was found."""

    bindir: Path
    source: str  # "CROSSFADE_PG_BINDIR" | "pg_config" | "PATH" | "pgserver"

    def tool(self, name: str) -> str:
        return str(self.bindir / name)

    def major_version(self) -> int:
        """The major version of the ``postgres`` binary (e.g. 15).

        Raises PreflightError when the binary cannot be run.
        """
        try:
            out = subprocess.run(
                [self.tool("postgres"), "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise PreflightError(
                f"cannot run {self.tool('postgres')} --version ({exc})",
                hint=f"set {BINDIR_ENV} to a working PostgreSQL bin directory",
            ) from exc
        match = re.search(r"\)\s*(\d+)", out) or re.search(r"(\d+)", out)
        if not match:
            raise PreflightError(
                f"cannot parse PostgreSQL version from {out.strip()!r}",
                hint=f"set {BINDIR_ENV} to a standard PostgreSQL bin directory",
            )
        return int(match.group(1))


def _has_tools(bindir: Path) -> bool:
    return all(os.access(bindir / tool, os.X_OK) for tool in _TOOLS)


def resolve_pg_binaries() -> PgBinaries:
    """Find PostgreSQL server binaries (order in the module docstring).

    Raises PreflightError when ``$CROSSFADE_PG_BINDIR`` is set but lacks the tools, or when
    nothing is found at all.
    """
    override = os.environ.get(BINDIR_ENV)
    if override:
        path = Path(override)
        if not _has_tools(path):
            raise PreflightError(
                f"{BINDIR_ENV}={override} does not contain initdb and postgres",
                hint=f"point {BINDIR_ENV} at a PostgreSQL bin directory or unset it",
            )
        return PgBinaries(path, BINDIR_ENV)

    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30, check=True
            ).stdout.strip()
            if out and _has_tools(Path(out)):
                return PgBinaries(Path(out), "pg_config")

    initdb = shutil.which("initdb")
    if initdb and _has_tools(Path(initdb).resolve().parent):
        return PgBinaries(Path(initdb).resolve().parent, "PATH")

    # find_spec does not import pgserver (its import has side effects we do not want).
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            bindir = Path(location) / "pginstall" / "bin"
            if _has_tools(bindir):
                return PgBinaries(bindir, "pgserver")

    raise PreflightError(
        "no PostgreSQL server binaries found (tried $CROSSFADE_PG_BINDIR, pg_config, PATH, pgserver)",
        hint="install postgresql or `pip install pgserver`, or set CROSSFADE_PG_BINDIR",
    )


@dataclass(frozen=True)
class _RunAs:
    name: str
    uid: int
    gid: int


def _pick_run_as(data_dir: Path) -> _RunAs | None:
    """None when not root; else the unprivileged user that will own and run the cluster."""
    if os.geteuid() != 0:
        return None
    if (data_dir / "PG_VERSION").exists():
        st = data_dir.stat()
        if st.st_uid != 0:
            try:
                name = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                name = str(st.st_uid)
            return _RunAs(name, st.st_uid, st.st_gid)
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return _RunAs(name, pw.pw_uid, pw.pw_gid)
    raise PreflightError(
        "running as root and neither a 'postgres' nor a 'nobody' user exists (initdb refuses root)",
        hint="create a 'postgres' system user or run as a non-root user",
    )


def _resolve_log_path(log_to: Path | None, default_dir: Path, name: str) -> Path:
    """``log_to`` if it names a file, ``log_to/name`` if it is an existing directory, else
    ``default_dir/name``. Parent directories of a given file are created."""
    if log_to is None:
        return default_dir / name
    log_to = Path(log_to)
    if log_to.is_dir():
        return log_to / name
    log_to.parent.mkdir(parents=True, exist_ok=True)
    return log_to


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class EmbeddedPostgres:
    """A PostgreSQL cluster on 127.0.0.1 with ``wal_level=logical`` and trust auth.

    * ``data_dir=None``: a fresh temporary cluster, removed by :meth:`stop` (not by
      :meth:`restart` or :meth:`kill`).
    * ``data_dir`` given: created and initialised if empty or missing, reused if it already holds
      a cluster (a restart keeps the data). It is never removed.
    * ``port=None``: a free port is picked once; :meth:`restart` and :meth:`start` after
      :meth:`kill` keep it, so DSNs stay valid.
    * The server log goes to ``log_to`` (a file, or a directory to hold ``postgres.log``) or to
      ``<data_dir>/postgres.log``.

    The postmaster runs in its own session, so a terminal Ctrl-C does not reach it; an
    ``atexit`` hook stops it if the caller did not. Failures raise
    :class:`~crossfade.errors.PreflightError` with a one-line reason that includes the last lines
    of the server log.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        *,
        log_to: Path | None = None,
    ) -> None:
        self._given_dir = Path(data_dir).absolute() if data_dir is not None else None
        self._auto_port = port is None
        self._port = port if port is not None else free_port()
        self._log_to = Path(log_to) if log_to is not None else None
        self._temp_root: Path | None = None
        self._socket_tmp: Path | None = None
        self._bins: PgBinaries | None = None
        self._run_as: _RunAs | None = None
        self._log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ever_started = False
        self._atexit = False
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The TCP port on 127.0.0.1 (fixed for the life of this object)."""
        return self._port

    @property
    def data_dir(self) -> Path | None:
        """The cluster's data directory; None for a temporary server not started yet."""
        if self._given_dir is not None:
            return self._given_dir
        return self._temp_root / "data" if self._temp_root is not None else None

    @property
    def log_path(self) -> Path | None:
        """The server log file, once :meth:`start` has chosen it."""
        return self._log_path

    @property
    def binaries(self) -> PgBinaries | None:
        """The PostgreSQL binaries in use, once :meth:`start` has resolved them."""
        return self._bins

    @property
    def run_as_user(self) -> str | None:
        """The unprivileged user the server runs as when we are root, else None."""
        return self._run_as.name if self._run_as else None

    @property
    def pid(self) -> int | None:
        """The live postmaster's PID, or None when it is not running."""
        return self._live_pid()

    @property
    def running(self) -> bool:
        return self._live_pid() is not None

    def dsn(self, dbname: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:PORT/dbname`` (no password: trust auth)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self._port}/{quote(dbname, safe='')}"

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 30) -> EmbeddedPostgres:
        """Initialise the cluster if needed and start it; return ``self``.

        Idempotent while running. Waits (like ``pg_ctl start -w``: ``postmaster.pid`` says
        "ready") until the server accepts connections, including any crash recovery after
        :meth:`kill`, for up to ``timeout`` seconds. Raises PreflightError (binaries missing,
        data dir unusable or in use, port taken, initdb or startup failed) with the log tail in
        the message; a server that failed to start is not left running.
        """
        with self._lock:
            if self._live_pid() is not None:
                return self
            if self._bins is None:
                self._bins = resolve_pg_binaries()
            data = self._prepare_data_dir()
            self._ensure_initialised(data)
            pid = self._read_pid(data)
            if pid is not None and pid_alive(pid):
                raise PreflightError(
                    f"data directory {data} is in use by a running postmaster (PID {pid})",
                    hint="stop that server or use another data_dir",
                )
            self._ensure_port()
            self._write_conf(data)
            assert self._log_path is not None
            self._register_atexit()
            self._proc = None
            failure: str | None = None
            try:
                with open(self._log_path, "ab") as log:
                    self._proc = subprocess.Popen(
                        [self._bins.tool("postgres"), "-D", str(data)],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        **self._spawn_kwargs(),
                    )
            except OSError as exc:
                failure = f"cannot run {self._bins.tool('postgres')} ({exc})"
            if failure is None:
                failure = self._wait_ready(data, timeout)
            if failure is not None:
                self._stop_server("immediate")
                raise PreflightError(
                    f"embedded PostgreSQL on port {self._port} did not start: {failure}; "
                    f"log {self._log_path}: {tail(self._log_path)}",
                    hint="fix the cause in the log, or pass another port/data_dir",
                )
            self._ever_started = True
            return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (like ``pg_ctl stop -m mode``) and remove a temporary data directory.

        Idempotent; also cleans up after :meth:`kill`. If the requested mode fails, falls back
        to ``immediate`` and then to SIGKILL, so the server is gone when this returns. ``mode``
        must be ``smart``, ``fast`` or ``immediate`` (ValueError otherwise).
        """
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {tuple(_STOP_SIGNALS)}, not {mode!r}")
        with self._lock:
            self._stop_server(mode)
            self._unregister_atexit()
            for path in (self._temp_root, self._socket_tmp):
                if path is not None:
                    shutil.rmtree(path, ignore_errors=True)
            self._temp_root = None
            self._socket_tmp = None

    def restart(self, timeout: float = 30, *, mode: str = "fast", down_s: float = 0.0) -> None:
        """Stop (like ``pg_ctl stop -m mode``), stay down ``down_s`` seconds, start again on the
        same port and data directory. Committed data is kept whatever the mode: ``immediate`` is
        a crash (sessions cut without a shutdown checkpoint; the start runs crash recovery).
        ValueError for another mode."""
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {tuple(_STOP_SIGNALS)}, not {mode!r}")
        with self._lock:
            self._stop_server(mode)
            if down_s > 0:
                time.sleep(down_s)
            self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster and its children, like a crash; no cleanup of the data.

        The next :meth:`start` runs crash recovery. A no-op when not running.
        """
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            _kill_tree(proc.pid)
            proc.wait()

    def create_database(self, name: str) -> None:
        """Create database ``name`` if it does not exist (idempotent).

        Raises DatabaseUnavailable when the server cannot be reached (e.g. not started).
        """
        import psycopg
        from psycopg import errors as pgerr
        from psycopg import sql

        try:
            with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10) as conn:
                row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if row.fetchone() is None:
                    with contextlib.suppress(pgerr.DuplicateDatabase):
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DatabaseUnavailable(
                f"cannot reach embedded PostgreSQL at 127.0.0.1:{self._port} ({first})",
                hint="call start() first",
            ) from exc

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self._live_pid() is not None else "stopped"
        return f"EmbeddedPostgres(port={self._port}, data_dir={self.data_dir}, {state})"

    # ------------------------------------------------------------------ internals

    def _spawn_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for subprocess: own session (no terminal Ctrl-C), clean env,
        and the unprivileged user when we are root."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
        env["LC_ALL"] = "C"  # English, parseable messages
        kwargs: dict[str, Any] = {"env": env, "cwd": "/", "start_new_session": True}
        if self._run_as is not None:
            kwargs.update(user=self._run_as.uid, group=self._run_as.gid, extra_groups=[])
        return kwargs

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _prepare_data_dir(self) -> Path:
        """Create the data directory (or temp root), pick the run-as user, check access."""
        if self._given_dir is None:
            if self._temp_root is None:
                self._temp_root = Path(tempfile.mkdtemp(prefix="crossfade-pg-"))
            data = self._temp_root / "data"
            self._run_as = _pick_run_as(data)
            self._chown(self._temp_root)
        else:
            data = self._given_dir
            if data.exists() and not data.is_dir():
                raise PreflightError(
                    f"data_dir {data} exists and is not a directory",
                    hint="pass a directory path for data_dir",
                )
            if not data.exists():
                missing = [p for p in (data, *data.parents) if not p.exists()]
                data.mkdir(parents=True, mode=0o700)
                for created in missing[1:]:
                    created.chmod(0o755)  # ours: make it searchable for the run-as user
            elif not (data / "PG_VERSION").exists() and any(data.iterdir()):
                raise PreflightError(
                    f"data_dir {data} is not empty and holds no PostgreSQL cluster",
                    hint="point data_dir at an empty directory or an existing cluster",
                )
            self._run_as = _pick_run_as(data)
        if self._run_as is not None:
            ra = self._run_as
            for target in (data, self._bins.bindir / "postgres" if self._bins else data):
                bad = first_untraversable(target, ra.uid, ra.gid)
                if bad is not None:
                    raise PreflightError(
                        f"PostgreSQL runs as user '{ra.name}' (initdb refuses root) "
                        f"but that user cannot enter {bad}",
                        hint=f"chmod o+x {bad}, or put the data_dir under {tempfile.gettempdir()}",
                    )
            if data.exists() and not (data / "PG_VERSION").exists():
                self._chown(data)
                data.chmod(0o700)
        return data

    def _ensure_initialised(self, data: Path) -> None:
        """Run initdb when ``data`` holds no cluster; check the major version otherwise."""
        assert self._bins is not None
        version_file = data / "PG_VERSION"
        if version_file.exists():
            have = version_file.read_text().strip()
            want = self._bins.major_version()
            if have != str(want):
                raise PreflightError(
                    f"data_dir {data} holds a PostgreSQL {have} cluster but the binaries in "
                    f"{self._bins.bindir} are version {want}",
                    hint=f"set {BINDIR_ENV} to PostgreSQL {have} binaries or use a fresh data_dir",
                )
        else:
            output = ""
            for locale in ("C.UTF-8", "C"):
                cmd = [self._bins.tool("initdb"), "-D", str(data), "-U", SUPERUSER]
                cmd += ["-E", "UTF8", f"--locale={locale}", "-A", "trust"]
                cmd += ["--no-sync"]  # embedded/test cluster: durability is not needed
                try:
                    result = subprocess.run(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        **self._spawn_kwargs(),
                    )
                except (OSError, subprocess.SubprocessError) as exc:
                    raise PreflightError(
                        f"cannot run initdb for {data} ({exc})",
                        hint=f"check the binaries in {self._bins.bindir} or set {BINDIR_ENV}",
                    ) from exc
                output = (result.stdout or "") + (result.stderr or "")
                if result.returncode == 0:
                    break
                if "locale" not in output.lower():
                    break
            if not version_file.exists():
                lines = [ln.strip() for ln in output.splitlines() if ln.strip()][-4:]
                raise PreflightError(
                    f"initdb failed for {data}: {' | '.join(lines) or 'no output'}",
                    hint="fix the cause above, or pass an empty data_dir",
                )
            (data / "pg_hba.conf").write_text(_PG_HBA)
            self._chown(data / "pg_hba.conf")
        conf = data / "postgresql.conf"
        text = conf.read_text()
        if _INCLUDE_LINE not in text:
            with open(conf, "a") as fh:
                fh.write("\n# crossfade.embedded settings (rewritten on every start)\n")
                fh.write(_INCLUDE_LINE + "\n")

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

    def _write_conf(self, data: Path) -> None:
        """(Re)write crossfade.conf (included at the end of postgresql.conf) and pick the log."""
        socket_dir = data
        if len(str(data)) > _MAX_SOCKET_DIR:
            if self._socket_tmp is None:
                self._socket_tmp = Path(tempfile.mkdtemp(prefix="crossfade-pgsock-"))
                self._chown(self._socket_tmp)
            socket_dir = self._socket_tmp
        settings = {
            "listen_addresses": _conf_quote("127.0.0.1"),
            "port": str(self._port),
            "unix_socket_directories": _conf_quote(str(socket_dir)),
            # Debezium needs logical decoding, one slot and one walsender per connector.
            "wal_level": "logical",
            "max_replication_slots": "20",
            "max_wal_senders": "20",
            # Embedded/test server only: give up durability against an OS crash or power loss
            # for speed. A kill of the server processes (kill()) loses nothing: every write has
            # reached the OS page cache. synchronous_commit stays ON on purpose: with it off a
            # commit is acknowledged before its WAL leaves shared memory, so kill() loses the last
            # ~0.6 s of acknowledged commits, and logical decoding (Debezium, pgoutput) only sees
            # changes once their WAL is flushed. With fsync=off, commit-time flushes are cheap.
            "fsync": "off",
            "synchronous_commit": "on",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        body = "# Written by crossfade.embedded on every start; edits are lost.\n"
        body += "".join(f"{k} = {v}\n" for k, v in settings.items())
        conf = data / _CONF_NAME
        conf.write_text(body)
        self._chown(conf)
        self._log_path = _resolve_log_path(self._log_to, data, _LOG_NAME)
        if not self._log_path.exists():
            self._log_path.touch()
            if self._log_path.parent == data:
                self._chown(self._log_path)

    @staticmethod
    def _read_pid(data: Path) -> int | None:
        try:
            first = (data / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        except OSError:
            return None
        return int(first) if first.isdigit() else None

    def _live_pid(self) -> int | None:
        """PID of the postmaster this object started, while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _wait_ready(self, data: Path, timeout: float) -> str | None:
        """None once ``postmaster.pid`` reports "ready" for our postmaster, else the reason."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        lock = data / "postmaster.pid"
        while True:
            code = self._proc.poll()
            if code is not None:
                return f"the postmaster exited with code {code}"
            with contextlib.suppress(OSError):
                lines = lock.read_text().splitlines()
                # Line 1 is the PID, line 8 the status (PG >= 10): starting/stopping/ready/standby.
                if (
                    len(lines) >= 8
                    and lines[0].strip() == str(self._proc.pid)
                    and lines[7].strip() == "ready"
                ):
                    return None
            if time.monotonic() >= deadline:
                return f"not ready within {timeout:.0f}s"
            time.sleep(0.05)

    def _stop_server(self, mode: str) -> None:
        """Signal our postmaster for ``mode``; escalate to immediate, then SIGKILL; reap it."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        attempts = [(mode, 60.0)] + ([("immediate", 10.0)] if mode != "immediate" else [])
        for attempt, wait in attempts:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, _STOP_SIGNALS[attempt])
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue
        _kill_tree(proc.pid)
        proc.wait()

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
            self.stop("fast")


def _kill_tree(pid: int) -> None:
    """SIGKILL a postmaster and its children (each child has its own process group).

    The postmaster is stopped first so it cannot fork while we list its children.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)
    kids = children_of(pid)
    for target in (pid, *kids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    wait_dead([pid, *kids], 10)
