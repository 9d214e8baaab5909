"""A service process whose exit hangs after its services ended (test_fault_35: capture printed its
error, then JPype's exit handler waited for Debezium's Java threads and nothing restarted it) says
so and exits, with the code it was going to exit with."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crossfade.errors import BrokerDataLost, CrossfadeError
from crossfade.ops.runner import exit_code

# an exit that waits forever (a non-daemon thread that never ends), after a failure; the CLI's
# _serve arms the watch in its finally, while the error propagates
_HANGING_EXIT = """
import sys
import threading

from crossfade.errors import CrossfadeError
from crossfade.ops.runner import exit_within


class Failed(CrossfadeError):
    exit_code = 3


threading.Thread(target=threading.Event().wait, name="never-ends").start()
try:
    try:
        raise Failed("the services failed")
    finally:
        exit_within("crossfade capture", seconds=1)
except Failed as exc:
    print(f"crossfade: error: {exc}", file=sys.stderr, flush=True)
    sys.exit(exc.exit_code)
"""


def test_a_hanging_exit_is_reported_and_ended() -> None:
    try:
        r = subprocess.run(
            [sys.executable, "-c", _HANGING_EXIT], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not exit: {exc.stderr!r}")
    assert r.returncode == 3, r.stderr
    assert "crossfade capture has not exited 1 s after its services ended" in r.stderr
    assert "exiting with code 3 now" in r.stderr
    assert "most recent call first" in r.stderr  # the threads' stacks follow


def test_exit_codes() -> None:
    assert exit_code(None) == 0
    assert exit_code(CrossfadeError("x")) == 1
    assert exit_code(BrokerDataLost("x")) == BrokerDataLost.exit_code
    assert exit_code(KeyboardInterrupt()) == 130
    assert exit_code(SystemExit(4)) == 4
    assert exit_code(RuntimeError("x")) == 1
