"""The stop's bound (``capture.stop_timeout_s``) in the other commands that run capture:
``crossfade fallback start`` (the reverse capture, new -> legacy) and ``crossfade capture`` alone.

Capture's handler never returns (fault hook ``CF_CAPTURE_STUCK``, tests/integration/fault_hooks),
so Debezium's engine cannot stop; SIGTERM (Kubernetes, a coordinator's Ctrl-C) ends the command
anyway, 5 s after it here, with exit code 1 and one line naming what did not stop. Fallback waited
for its engine for ever before it had the bound. ``crossfade run``'s case:
tests/integration/test_run_processes.py."""

from __future__ import annotations

import os
import re
import signal

import pytest

from crossfade.mapping.inverse import reversed_for
from crossfade.ops.demo import compare_all
from tests.conftest import Proc, Stack, wait_for
from tests.integration.fault_harness import HOOKS_DIR
from tests.integration.test_fallback import (  # noqa: F401 - drop_reverse_slots: a fixture
    _reverse_fence,
    drop_reverse_slots,
    forward_done,
)

pytestmark = pytest.mark.integration

STUCK = {"CF_CAPTURE_STUCK": "1", "CROSSFADE_CAPTURE__STOP_TIMEOUT_S": "5"}


def _hooked(stack: Stack, name: str, args: list[str]) -> Proc:
    """``crossfade <args>`` with capture's handler stuck and a stop bound of 5 s."""
    env = {**stack._env(), **STUCK}
    env["PYTHONPATH"] = os.pathsep.join([str(HOOKS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    p = Proc(name, args, env, stack.dir / f"{name}.log")
    stack.procs.append(p)
    return p


def _stops_at_its_bound(stack: Stack, p: Proc) -> None:
    """Once capture's handler is stuck: SIGTERM ends ``p`` at the bound with one line."""
    wait_for(
        lambda: "FAULT POINT capture_stuck" in p.tail(200),
        180,
        lambda: f"{p.name}'s capture handler to get stuck\n{p.tail()}" + stack._diag(),
    )
    os.kill(p.p.pid, signal.SIGTERM)
    code = p.p.wait(60)  # Debezium's own timeouts alone are 40 s and more; it was for ever
    p.expected_dead = True
    assert code == 1, p.tail()
    errors = [line for line in p.tail(200).splitlines() if line.startswith("crossfade: error:")]
    assert len(errors) == 1, p.tail()
    assert re.search(r"error: capture did not stop within 5 s of the stop", errors[0]), errors
    assert "its handler is" in errors[0] and "capture.stop_timeout_s" in errors[0], errors
    # and the exit after it did not hang in turn (runner.exit_within's watch)
    assert "has not exited" not in p.log.read_text(errors="replace"), p.tail()


def test_fallback_stopped_with_its_capture_stuck_exits_at_the_bound_and_loses_nothing(
    stack: Stack,
    drop_reverse_slots: list[Stack],  # noqa: F811 - the fixture imported above
) -> None:
    drop_reverse_slots.append(stack)
    forward_done(stack, 50)
    # the reverse capture's snapshot of the new database gets stuck in its first batch
    fb = _hooked(stack, "fallback", ["fallback", "start"])
    _stops_at_its_bound(stack, fb)
    # the held batch was never acknowledged: the next start sends it again, with what the new
    # database took meanwhile
    with stack.tgt() as t:
        t.execute("UPDATE items SET name = 'changed in new' WHERE id <= 10")
    fb2 = Proc("fallback2", ["fallback", "start"], stack._env(), stack.dir / "fallback2.log")
    stack.procs.append(fb2)
    _reverse_fence(stack, [fb2])
    rev, _ = reversed_for(stack.settings)
    assert not [d.as_dict() for d in compare_all(rev) if not d.match]
    with stack.src() as s:
        assert s.execute("SELECT count(*) FROM items WHERE name = 'changed in new'").fetchone() == (
            10,
        )
    assert fb2.stop(60) == 0, fb2.tail()


def test_capture_alone_stopped_with_its_handler_stuck_exits_at_the_bound(stack: Stack) -> None:
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO public.t SELECT g, 'before' FROM generate_series(1, 20) g")
    stack.write_config(["public.t"])
    cap = _hooked(stack, "capture", ["capture"])
    _stops_at_its_bound(stack, cap)
