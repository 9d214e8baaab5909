"""Precise fault points inside a ``crossfade sync`` subprocess (tests only).

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry that has it; the
fault harness puts this directory first on ``PYTHONPATH`` and names the point in
``CF_FAULT_POINT=<point>:<n>`` (see ``tests/integration/fault_harness.py``). Without that variable
this module does nothing. Only batches that carry change events are counted. The points are
listed in ``tests/integration/fault_harness.py``; the ``pause_*`` points sleep
``CF_FAULT_PAUSE_S`` seconds (default 10) so the test can fail something meanwhile.

``CF_HOLD_TOPIC=<part of a topic name>`` with ``CF_HOLD_RELEASE=<file>``: the partitions of the
matching topics are paused when assigned and resumed once the file exists, as when the worker
holding them lags (FAULTS 38: a child's topic is consumed before its parent's).

``CF_LEAVE_RACE=<file>``: members stopped together leave in the order that wedged Tansu's group
(tests/integration/test_run_processes.py): a stopping member that the broker does not name the
leader sends its LeaveGroup only once the leader has looked at the group (the leader touches the
file at its first look while stopping, then gives the other's LeaveGroup a second to land).

``CF_PACER_OFFSET_S=<seconds>``: capture's off-peak pacer reads a wall clock that far ahead of
the real one (tests/integration/test_offpeak.py: a load window opens seconds after start, not
at the next minute).

``CF_CAPTURE_SLOW_START=<seconds>``: capture's JVM starts that much later (as under load: the
JVM's and Debezium's start took seconds after capture said it runs). ``CF_CAPTURE_STUCK=1``:
capture's handler never returns from its first batch, stop or not (as a call into the JVM that
does not come back). Both: tests/integration/test_run_processes.py.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

_spec = os.environ.get("CF_FAULT_POINT")
_PAUSE_S = float(os.environ.get("CF_FAULT_PAUSE_S", "10"))


def _install(point: str, nth: int) -> None:
    import psycopg

    from crossfade.sync import commit as c
    from crossfade.sync import worker as w

    # the process's sync workers (sync.workers threads) share this state: the N-th batch is
    # claimed under the lock by one worker, whose batch alone is then faulted and reported
    state: dict = {"batches": 0, "fired": False, "claimed": None}
    lock = threading.Lock()
    orig_apply_batch = w.SyncWorker._apply_batch
    orig_apply_table = c.BatchCommit.apply_table

    def _say(what: str) -> None:
        sys.stderr.write(f"FAULT POINT {point}:{nth} fired: {what}\n")
        sys.stderr.flush()

    def stored(self, msgs):  # type: ignore[no-untyped-def]
        """{topic[partition]: next offset stored in the target}, on a connection of its own."""
        import psycopg as pg

        tps = sorted({(m.topic(), m.partition()) for m in msgs})
        with pg.connect(self.settings.target.conninfo, autocommit=True) as c:
            return {
                f"{t}[{p}]": c.execute(
                    f"SELECT next_offset FROM {self.bk}.offsets WHERE group_id = %s AND topic = %s AND partition = %s",
                    (self.settings.sync.group_id, t, p),
                ).fetchone()[0]
                for t, p in tps
            }

    def span(msgs):  # type: ignore[no-untyped-def]
        out = {}
        for m in msgs:
            k = f"{m.topic()}[{m.partition()}]"
            lo, hi = out.get(k, (m.offset(), m.offset()))
            out[k] = (min(lo, m.offset()), max(hi, m.offset()))
        return out

    def report(what, **data):  # type: ignore[no-untyped-def]
        import json

        sys.stderr.write(f"FAULT DATA {what} {json.dumps(data)}\n")
        sys.stderr.flush()

    def apply_batch(self, msgs, isolate=False):  # type: ignore[no-untyped-def]
        if state.get("retry_check") is self and state["fired"]:
            state["retry_check"] = None
            report("retry", span=span(msgs), stored=stored(self, msgs))
        has_data = any(_is_change(m) for m in msgs)
        # a batch counts once it committed: one that rolled back (an enum label to add first)
        # is attempted again and is still the N-th. Two workers' batches commit concurrently, so
        # the count may pass N between two looks: the first batch at or past it is claimed
        with lock:
            due = (
                has_data
                and not state["fired"]
                and state["claimed"] in (None, self)
                and state["batches"] + 1 >= nth
            )
            if due:
                state["claimed"] = self
        if due and point == "stop_before_apply":
            state["fired"] = True
            _say(f"SIGSTOP before a batch of {len(msgs)} records")
            os.kill(os.getpid(), signal.SIGSTOP)
            # a process-directed SIGSTOP stops this thread a moment after kill() returns: without
            # the pause it could begin the batch first and freeze inside its transaction, holding
            # the offsets row lock its successor's claim waits for (seen in pg_blocking_pids:
            # "idle in transaction ... TRUNCATE cf_stage_..."), which is not this case's fault
            time.sleep(0.5)
            return orig_apply_batch(self, msgs, isolate)
        if due and point in ("mid_batch", "pause_mid_batch", "stop_mid_batch"):
            state["arm_mid"] = threading.get_ident()
            state["msgs"] = msgs
            state["worker"] = self
        result = orig_apply_batch(self, msgs, isolate)
        with lock:
            if has_data and not state["fired"]:
                state["batches"] += 1
        if due and point == "after_commit":
            state["fired"] = True
            report("after_commit", span=span(msgs), stored=stored(self, msgs))
            _say(f"SIGKILL after the commit of {len(msgs)} records, before the Kafka commit")
            os.kill(os.getpid(), signal.SIGKILL)
        if due and point == "commit_ack_lost":
            state["fired"] = True
            state["retry_check"] = self
            _say(f"connection lost after the COMMIT of {len(msgs)} records")
            self.conn.close()
            raise psycopg.OperationalError(
                "server closed the connection unexpectedly (injected after COMMIT)"
            )
        return result

    def apply_table(self, tx, table, parts):  # type: ignore[no-untyped-def]
        orig_apply_table(self, tx, table, parts)
        if state.get("arm_mid") == threading.get_ident() and not state["fired"]:
            state["fired"] = True
            report(
                "mid_batch",
                table=table,
                events=sum(len(pp.items) for pp in parts),  # events, not messages
                stored=stored(state["worker"], state["msgs"]),
                span=span(state["msgs"]),
            )
            if point == "pause_mid_batch":
                _say(
                    f"pausing {_PAUSE_S:.0f} s inside the batch transaction, after writing {table}"
                )
                time.sleep(_PAUSE_S)
                return
            if point == "stop_mid_batch":
                # no statement here: the applier's last request (a pipeline's flush) is what the
                # frozen session's server last saw, as when a worker freezes between two tables
                _say(
                    f"SIGSTOP inside the batch transaction, after writing {table} "
                    f"(target session {tx.conn.info.backend_pid})"
                )
                os.kill(os.getpid(), signal.SIGSTOP)
                time.sleep(0.5)  # the stop takes effect a moment after kill() returns
                return  # resumed (SIGCONT): the batch's next statement meets its ended session
            _say(f"SIGKILL inside the batch transaction, after writing {table}")
            os.kill(os.getpid(), signal.SIGKILL)

    w.SyncWorker._apply_batch = apply_batch  # type: ignore[method-assign]
    c.BatchCommit.apply_table = apply_table  # type: ignore[method-assign]
    if point == "pause_in_merge":
        from crossfade.sync.sinks import dedup

        orig_regroup = dedup.DedupWriter._regroup
        merges = {"n": 0}

        def regroup(self, conn, changed, blocks):  # type: ignore[no-untyped-def]
            orig_regroup(self, conn, changed, blocks)
            merges["n"] += 1
            if merges["n"] == nth and not state["fired"]:
                state["fired"] = True
                _say(f"pausing {_PAUSE_S:.0f} s inside a dedup merge of {len(changed)} members")
                time.sleep(_PAUSE_S)

        dedup.DedupWriter._regroup = regroup  # type: ignore[method-assign]


def _is_change(m) -> bool:  # type: ignore[no-untyped-def]
    if m.value() is None:
        return False
    return not any(k == "crossfade.control" for k, _ in (m.headers() or []))


def _install_hold(part: str, release: str) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from crossfade.sync import consumer as w

    class HoldingConsumer(Consumer):  # type: ignore[misc]
        held: list = []  # noqa: RUF012 - per instance once assigned

        def assign(self, partitions):  # type: ignore[no-untyped-def]
            super().assign(partitions)
            hold = [TopicPartition(p.topic, p.partition) for p in partitions if part in p.topic]
            if hold and not os.path.exists(release):
                self.pause(hold)
                self.held = hold
                sys.stderr.write(f"HOLD paused {[(p.topic, p.partition) for p in hold]}\n")

        def consume(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.held and os.path.exists(release):
                self.resume(self.held)
                sys.stderr.write(f"HOLD resumed {[(p.topic, p.partition) for p in self.held]}\n")
                self.held = []
            return super().consume(*args, **kwargs)

    w.Consumer = HoldingConsumer  # type: ignore[misc]


if _spec:
    _point, _, _n = _spec.partition(":")
    _install(_point, int(_n or 1))
if os.environ.get("CF_HOLD_TOPIC") and os.environ.get("CF_HOLD_RELEASE"):
    _install_hold(os.environ["CF_HOLD_TOPIC"], os.environ["CF_HOLD_RELEASE"])


def _install_pacer_offset(offset_s: float) -> None:
    from datetime import UTC, datetime, timedelta

    from crossfade.capture import pacing

    orig = pacing.Pacer.__init__

    def init(self, *args, **kw):  # type: ignore[no-untyped-def]
        kw.setdefault("wall", lambda: datetime.now(UTC) + timedelta(seconds=offset_s))
        orig(self, *args, **kw)

    pacing.Pacer.__init__ = init  # type: ignore[method-assign]


if os.environ.get("CF_PACER_OFFSET_S"):
    _install_pacer_offset(float(os.environ["CF_PACER_OFFSET_S"]))


def _install_leave_race(looked: str) -> None:
    from crossfade.sync import consumer as c

    orig_state = c.GroupMember.group_state
    orig_leave = c.GroupMember.leave

    def group_state(self, timeout: float = 5.0):  # type: ignore[no-untyped-def]
        group = orig_state(self, timeout)
        mine = self.consumer.memberid() if self.consumer is not None else None
        if self.stop.is_set() and group and group[1] == mine and not os.path.exists(looked):
            open(looked, "w").close()  # noqa: SIM115 - touched
            sys.stderr.write("LEAVE RACE the leader looked\n")
            time.sleep(1.0)  # the other member's LeaveGroup lands now
        return group

    def leave(self) -> None:  # type: ignore[no-untyped-def]
        group = orig_state(self, 5.0)
        if group and self.consumer is not None and group[1] != self.consumer.memberid():
            deadline = time.monotonic() + 10
            while not os.path.exists(looked) and time.monotonic() < deadline:
                time.sleep(0.01)
            sys.stderr.write("LEAVE RACE a member leaves after the leader's look\n")
        orig_leave(self)

    c.GroupMember.group_state = group_state  # type: ignore[method-assign]
    c.GroupMember.leave = leave  # type: ignore[method-assign]


if os.environ.get("CF_LEAVE_RACE"):
    _install_leave_race(os.environ["CF_LEAVE_RACE"])


def _install_capture_faults(slow_start_s: float, stuck: bool) -> None:
    from crossfade.capture import batch, service

    if slow_start_s:
        orig_start = batch.start_jvm

        def start_jvm(options):  # type: ignore[no-untyped-def]
            sys.stderr.write(
                f"FAULT POINT capture_slow_start: the JVM starts in {slow_start_s:.0f} s\n"
            )
            sys.stderr.flush()
            time.sleep(slow_start_s)
            orig_start(options)

        batch.start_jvm = start_jvm
    if stuck:

        def handle(self, records):  # type: ignore[no-untyped-def]
            sys.stderr.write("FAULT POINT capture_stuck: the handler never returns\n")
            sys.stderr.flush()
            while True:
                time.sleep(1)

        service.ChangeProducer.handle = handle  # type: ignore[method-assign]


if os.environ.get("CF_CAPTURE_SLOW_START") or os.environ.get("CF_CAPTURE_STUCK"):
    _install_capture_faults(
        float(os.environ.get("CF_CAPTURE_SLOW_START") or 0),
        bool(os.environ.get("CF_CAPTURE_STUCK")),
    )
