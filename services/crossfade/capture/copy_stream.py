"""A COPY stream of the initial load seen from capture: one :mod:`crossfade.capture.copy_worker`
process, its orders and answers (JSON lines).

:class:`crossfade.capture.initial_load.CopyLoad` starts its streams first, before the slot and
the target's preparation: a worker's interpreter and psycopg take ~0.15-0.2 s of CPU to load
(measured: about half of the time between the load's start and its first row at 500k rows), and
that start-up then overlaps the slot's creation and the target's preparation, which wait on the
databases. A stream that gets no work (fewer chunks than streams) has its input closed before
any order and exits 0 without connecting.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from typing import Any

from crossfade.errors import CrossfadeError


class CopyStream:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crossfade.capture.copy_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def ask(self, order: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``order`` (if any) and return the answer; raises the worker's one-line error."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        if order is not None:
            stdin.write(json.dumps(order) + "\n")
            stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"a COPY worker process exited with code {self.proc.wait()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{answer['error']} ({answer.get('at', 'copying')})")
        return answer

    def finish(self) -> None:
        """End of orders: the worker ends its snapshot transaction (if any) and exits 0."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if self.proc.wait(60) != 0:
            raise RuntimeError(f"a COPY worker process exited with code {self.proc.returncode}")

    def close(self) -> None:
        """Killed if still running (its open target transaction rolls back); pipes closed."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


def start_streams(n: int) -> list[CopyStream]:
    """``n`` worker processes started; none left running when one cannot start."""
    streams: list[CopyStream] = []
    try:
        for _ in range(n):
            streams.append(CopyStream())
    except OSError as exc:
        for stream in streams:
            stream.close()
        raise CrossfadeError(
            f"the initial COPY load failed: cannot start a COPY worker process ({exc})",
            "fix the cause and start capture again; the load starts over",
        ) from exc
    return streams
