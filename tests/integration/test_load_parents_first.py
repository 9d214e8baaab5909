"""Parents first during an initial load (crossfade.sync.load_order): every table's snapshot events
are in the topics before sync starts (capture's snapshot events: the default ``initial_load:
copy`` with a mapping), and sync consumes the children's partitions only once their parents
finished their snapshot, so no child is deferred; the target ends equal to the mapping of the
legacy rows.

The same load with the scheduling off (``sync.parents_first_wait_s: 0``) defers children: the
situation is real, and the first test would fail without the scheduling.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable

import pytest

from crossfade.sync.worker import SyncWorker
from tests.conftest import Stack, wait_for
from tests.integration.test_audit import LEGACY_DDL, MAPPING, TARGET_DDL

pytestmark = pytest.mark.integration

MEMBERS, NOTES = 3000, 6000
PARENT, CHILD = "public.people", "public.notes"
"""The members table of test_audit's mapping, named so that its children's topic sorts first (as
the CRM's addresses before their contacts): a fetch of a whole load hands sync the children
first, and without the scheduling they are deferred."""


def _load(stack: Stack) -> None:
    """The legacy rows, the mapping, capture's whole load in the topics (sweep markers too)."""
    with stack.src() as c:
        c.execute(LEGACY_DDL.replace("public.members", PARENT))
        c.execute(
            f"INSERT INTO {PARENT} SELECT g, 'Person Number', 'p' || g || '@example.com', "
            "NULL, '1980-01-01', 'GB', true, '2023-06-01', '2024-01-01' "
            f"FROM generate_series(1, {MEMBERS}) g"
        )
        # every member has notes, the first notes the last members': consumed side by side, a
        # note comes long before its member
        c.execute(
            "INSERT INTO public.notes SELECT g, %s - ((g - 1) %% %s), 'note ' || g "
            "FROM generate_series(1, %s) g",
            (MEMBERS, MEMBERS, NOTES),
        )
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
    mapping = copy.deepcopy(MAPPING)
    mapping.pop("dedup")
    mapping["tables"][PARENT] = mapping["tables"].pop("public.members")
    stack.write_config([PARENT, CHILD], mapping=mapping)
    cap = stack.start("capture")
    wait_for(
        lambda: "sweep markers sent" in cap.tail(400) or "initial load done" in cap.tail(400),
        180,
        lambda: "capture to put the whole load in the topics" + stack._diag(),
    )


def _sync(stack: Stack, body: Callable[[SyncWorker], None]) -> SyncWorker:
    """Run one sync worker in this process around ``body`` (its stats count the deferrals)."""
    stop = threading.Event()
    worker = SyncWorker(stack.settings, stop=stop)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    t = threading.Thread(target=run, name="sync-under-test", daemon=True)
    t.start()
    try:
        body(worker)
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    return worker


def _target(stack: Stack) -> tuple[int, int, int]:
    with stack.tgt() as c:
        people = c.execute("SELECT count(*) FROM crm.people").fetchone()
        notes = c.execute(
            "SELECT count(*), count(*) FILTER (WHERE n.person_id IN (SELECT legacy_id FROM crm.people)) "
            "FROM crm.notes n"
        ).fetchone()
    assert people is not None and notes is not None
    return int(people[0]), int(notes[0]), int(notes[1])


def _verify(stack: Stack) -> None:
    r = stack.cli("verify", "--json", timeout=300)
    rep = json.loads(r.stdout) if r.stdout.strip() else {}
    assert r.returncode == 0 and rep.get("match"), r.stdout[-4000:] + r.stderr[-2000:]
    for t in rep["tables"]:
        assert all(a["closes"] for a in t["mapping"]["accounting"]), t


def _deferred(worker: SyncWorker) -> dict[str, int]:
    return {t: n for t, n in worker.stats.deferred.items() if n}


def _loaded(
    stack_factory: Callable[..., Stack], scheduled: bool, caplog: pytest.LogCaptureFixture
) -> tuple[dict[str, int], list[str]]:
    """One whole load consumed by one sync worker, checked: its deferrals and log lines."""
    caplog.clear()
    # small batches: the children's records come in many batches, most before the parents'
    # are all applied unless they wait
    stack = stack_factory(
        initial_load="copy",
        batch_size=100,
        parents_first_wait_s=20.0 if scheduled else 0.0,
    )
    _load(stack)

    def body(worker: SyncWorker) -> None:
        stack.fence(timeout=300)

    worker = _sync(stack, body)
    deferred = _deferred(worker)
    assert _target(stack) == (MEMBERS, NOTES, NOTES)
    _verify(stack)
    stack.close()
    return deferred, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("scheduled", [True, False], ids=["parents-first", "off"])
def test_children_in_the_topics_before_their_parents_are_not_deferred(
    stack_factory: Callable[..., Stack], scheduled: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", "crossfade.sync.load_order")
    deferred, messages = _loaded(stack_factory, scheduled, caplog)
    if scheduled:
        assert deferred == {}, deferred
        assert any(f"holding back {CHILD} until {PARENT}" in m for m in messages), messages
        assert any(
            f"{CHILD} no longer held back: {PARENT} finished its snapshot" in m for m in messages
        ), messages
        return
    # the same load without the scheduling: children met before their parents are deferred
    # (5999 of 6000 notes, as a rule). Which partitions librdkafka's first fetch serves first
    # is its choice, though: once in many CI runs every member came first (none deferred). The
    # situation is real if it shows in one of three loads.
    tries = [deferred]
    while not deferred.get(CHILD, 0) and len(tries) < 3:
        deferred, messages = _loaded(stack_factory, scheduled, caplog)
        tries.append(deferred)
    assert deferred.get(CHILD, 0) > 0, tries
    assert not any("holding back" in m for m in messages)
