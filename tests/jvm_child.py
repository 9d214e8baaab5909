"""Run Java through JPype in a child Python process (a JVM cannot start twice in one process, and
each test wants its own class path) and read back the one JSON line the child prints."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def jvm_child(code: str, tag: str, timeout: float = 300) -> Any:
    """Run ``code`` with ``python -c``; return the JSON after ``tag`` + a space on the child's
    last line that starts with it. Fails the test with the child's output when there is none."""
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )
    prefix = f"{tag} "
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(prefix)]
    assert r.returncode == 0 and lines, (
        f"the Java side failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    )
    return json.loads(lines[-1][len(prefix) :])
