"""Small process, port and file helpers shared by the embedded servers.

Nothing here raises crossfade errors: callers turn the plain results into one-line messages.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from collections.abc import Iterable
from pathlib import Path


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The port is only reserved while this function runs, so another process may take it before
    the caller binds it; the embedded servers re-check just before they start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """True when nothing listens on 127.0.0.1:``port``.

    ``SO_REUSEADDR`` is set like the servers set it, so sockets left in TIME_WAIT by a previous
    run of the same server do not count as "in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_accepts(port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to 127.0.0.1:``port`` succeeds."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live (not zombie) process.

    Zombies count as dead: the container's PID 1 may never reap the orphans we kill.
    A process we may not signal (another user's) counts as alive.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    # Format: "pid (comm) S ..."; comm may contain spaces/parens, so split after the last ')'.
    state = text.rsplit(")", 1)[-1].split()[:1]
    return state != ["Z"] and state != ["X"]


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc``; an empty list elsewhere)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                text = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = text.rsplit(")", 1)[-1].split()
            if len(fields) > 1 and fields[1] == str(pid):
                found.append(int(entry.name))
    return found


def wait_dead(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    while remaining:
        remaining = [p for p in remaining if pid_alive(p)]
        if not remaining or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return remaining


def tail(path: Path | None, lines: int = 5, max_chars: int = 600) -> str:
    """The last non-empty ``lines`` of a log file joined with `` | `` (one line for messages)."""
    if path is None:
        return "(no log)"
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return f"(log {path} unreadable)"
    picked = [ln.strip() for ln in data.splitlines() if ln.strip()][-lines:]
    text = " | ".join(picked) or "(log empty)"
    return text if len(text) <= max_chars else "..." + text[-max_chars:]


def can_access(path: Path, uid: int, gid: int, bits: int) -> bool:
    """Whether a process running as ``uid``/``gid`` (no supplementary groups) has ``bits``
    (``os.R_OK``/``W_OK``/``X_OK``, or-ed) on ``path`` by its mode bits. ACLs are ignored."""
    st = path.stat()
    if uid == 0:
        return True
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid == gid:
        shift = 3
    else:
        shift = 0
    mode = stat.S_IMODE(st.st_mode) >> shift
    return (mode & bits) == bits


def first_untraversable(path: Path, uid: int, gid: int) -> Path | None:
    """The first ancestor of ``path`` (``path`` excluded) that ``uid`` cannot search, or None."""
    for parent in reversed(path.parents):
        if parent.exists() and not can_access(parent, uid, gid, os.X_OK):
            return parent
    return None
