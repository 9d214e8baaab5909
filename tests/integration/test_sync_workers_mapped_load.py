"""``sync.workers: 2``: one ``crossfade sync`` process runs two sync workers (threads, one
consumer group), and they load the demo CRM through the demo mapping (contacts deduplicated into
golden records, children of accounts; addresses, children of people) as one worker does:
``crossfade verify`` passes and every table's accounting closes. Both workers held partitions
and committed batches (their heartbeats, from the one process), and a SIGTERM stops the process
cleanly (exit 0) with both workers stopped."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import psycopg
import pytest

from tests.conftest import Stack, wait_for
from tests.integration.test_two_sync_mapped_load import seed_crm

pytestmark = pytest.mark.integration

ACCOUNTS = 5000
"""About 18k legacy rows (3.7 per account): with small batches, many batches for each worker."""


def sync_heartbeats(stack: Stack) -> list[tuple[str, int, list[str], int]]:
    """(worker id, pid, partitions, batches) of every sync worker's heartbeat."""
    bk = stack.settings.sync.bookkeeping_schema
    with stack.tgt() as c:
        try:
            rows = c.execute(
                f"SELECT worker_id, pid, partitions, detail FROM {bk}.heartbeats WHERE role = 'sync'"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return []
    return [(w, pid, parts or [], int((d or {}).get("batches") or 0)) for w, pid, parts, d in rows]


def test_two_workers_of_one_sync_process_load_a_mapped_crm(
    stack_factory: Callable[..., Stack],
) -> None:
    # one process (sync.processes): this is the test of its two worker threads
    stack = stack_factory(initial_load="copy", partitions=4, batch_size=300, workers=2, processes=1)
    seed_crm(stack, ACCOUNTS, seed=11)
    stack.start("capture")
    sync = stack.start("sync")
    t0 = time.monotonic()
    both_held = False
    while not both_held and time.monotonic() - t0 < 240:
        hbs = sync_heartbeats(stack)
        both_held = len([h for h in hbs if h[2]]) == 2
        if not both_held:
            time.sleep(0.5)
    assert both_held, (
        f"two sync workers never both held partitions: {sync_heartbeats(stack)}{stack._diag()}"
    )
    stack.fence(timeout=300)
    # both committed batches, from the one process
    wait_for(
        lambda: len([h for h in sync_heartbeats(stack) if h[3] > 0]) == 2,
        30,
        lambda: f"both workers committed batches: {sync_heartbeats(stack)}",
    )
    hbs = sync_heartbeats(stack)
    assert len(hbs) == 2 and {h[1] for h in hbs} == {sync.p.pid}, hbs

    r = stack.cli("verify", "--json", timeout=300)
    rep = json.loads(r.stdout) if r.stdout.strip() else {}
    accounting = [
        a for t in rep.get("tables", []) for a in (t.get("mapping") or {}).get("accounting", [])
    ]
    assert r.returncode == 0 and rep.get("match"), (
        f"verify failed: {json.dumps(accounting)}\n{r.stdout[-3000:]}{r.stderr[-1500:]}{stack._diag()}"
    )
    assert accounting and all(a["closes"] for a in accounting), accounting

    assert sync.stop() == 0, sync.tail()
    log = sync.log.read_text(errors="replace")
    assert "sync-1" in log and "sync-2" in log, sync.tail()
    assert sync_heartbeats(stack) == []  # each worker dropped its heartbeat as it stopped
