"""The cutover's actions on the outside world (:mod:`crossfade.cutover.gates`): the freeze's, the
unfreeze's and the flip's SQL (each in a transaction of its own), commands (argument lists, no
shell) and the flip's HTTP hook (a JSON POST); a failure is a one-line :class:`CrossfadeError`."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from typing import Any

from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import CrossfadeError


def run_sql(settings: Settings, which: str, statement: str) -> None:
    db = settings.source if which == "source" else settings.target
    with connect(db, which) as conn, conn.transaction():
        conn.execute(statement)


def run_command(argv: list[str], timeout: float) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise CrossfadeError(f"command {argv[0]!r} not found") from None
    except subprocess.TimeoutExpired:
        raise CrossfadeError(f"command {argv[0]!r} ran longer than {timeout:g} s") from None
    if p.returncode != 0:
        last = (p.stderr or p.stdout).strip().splitlines()
        raise CrossfadeError(
            f"command {argv[0]!r} exited with {p.returncode}" + (f": {last[-1]}" if last else "")
        )
    return argv[0]


def post(url: str, body: dict[str, Any], timeout: float) -> int:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        raise CrossfadeError(f"flip_http answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CrossfadeError(
            f"flip_http is not reachable ({getattr(exc, 'reason', exc)})"
        ) from None
