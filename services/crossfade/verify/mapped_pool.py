"""The mapping of one legacy table's rows in worker processes, for the verify of mapped tables
(:mod:`crossfade.verify.mapped`): the mapping is pure and costs most of a verify's CPU (the
transforms: e-mail validation, phone parsing...), so it runs on every core the process may use.

The main process keeps everything stateful: it reads the rows from its one repeatable-read
snapshot (batches of :data:`BATCH_ROWS`, at most :data:`WINDOW_PER_WORKER` per worker in flight:
memory stays bounded) and takes the outcomes back in the order it read them, so the accounting,
the duplicate groups, the expected rows and the parent keys are built exactly as one process
builds them. Workers are forked per table once its parents are mapped, so each starts with the
mapper and the parent keys ``references`` rules check as they then are, complete; a table whose
rules check its own targets' keys (a row's parent may be a row of the same table read earlier)
is mapped in the main process, in order (:func:`parallel_safe`). Without ``fork`` (not POSIX)
everything is mapped in the main process.
"""

from __future__ import annotations

import gc
import itertools
import math
import multiprocessing
import os
import signal
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Any

from crossfade.mapping.engine import Mapper
from crossfade.sync.key_text import key_text

BATCH_ROWS = 1000
WINDOW_PER_WORKER = 3

_job: tuple[Any, str, list[str]] | None = None
"""What the forked workers map with (set just before the fork, read-only in them): the pass of
:func:`crossfade.verify.mapped.run_mapped` (its mapper, parent keys, crosswalks), the table, its
key columns."""


def _uuid(i: int) -> uuid.UUID:
    # what UUID.__setstate__ does (UUID(int=i) checks its arguments: slower than the pickling)
    u = object.__new__(uuid.UUID)
    object.__setattr__(u, "int", i)
    object.__setattr__(u, "is_safe", uuid.SafeUUID.unknown)
    return u


def _reduce_uuid(u: uuid.UUID) -> tuple[Any, tuple[int]]:
    return _uuid, (u.int,)


# a UUID as its integer: its default pickling (through __getstate__) costs as much as its row
ForkingPickler.register(uuid.UUID, _reduce_uuid)


def cpu_quota(path: Path = Path("/sys/fs/cgroup/cpu.max")) -> float | None:
    """The CPUs a cgroup (v2) quota grants this process (a container's CPU limit: ``quota
    period`` in that file), None without one."""
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def usable_cpus(quota: float | None = None) -> int:
    """The CPUs this process may use: its affinity (not the machine's count), at most its
    cgroup's CPU quota (``quota``: read from the cgroup when None), rounded up; at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    q = cpu_quota() if quota is None else quota
    return max(1, n if q is None else min(n, math.ceil(q)))


def parallel_safe(mapper: Mapper, source: str) -> bool:
    """Whether ``source``'s rows can be mapped apart: no rule of its targets checks a key of one
    of its own targets (which the rows read before it would add)."""
    own = {t.table for t in mapper.table(source).targets}
    for t in mapper.table(source).targets:
        for r in t.spec.rules.values():
            if r.reference is not None and r.reference.table in own:
                return False
    return "fork" in multiprocessing.get_all_start_methods()


def _map_batch(rows: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    assert _job is not None
    run, source, pk = _job
    out = []
    for row in rows:
        mapped = run.mapper.map_row(source, row, parents=run.keys)
        out.append((key_text(row.get(c) for c in pk), run.ready(source, mapped)))
    return out


def _quiet_worker() -> None:
    """A worker's start: the parent's signal handlers and its garbage collector are not its own.

    A fork inherits the parent's Python signal handlers: in ``crossfade demo`` (capture running in
    the same process) the runner's, whose SIGTERM stopped *capture* in the worker, that is called
    ``engine.close()`` on the forked copy of the JVM, which has none of its threads: the close
    waited out Debezium's task.management.timeout and executor timeouts (about 100 s per table)
    while verify waited for the pool, and a worker that was waiting for the pool's task lock
    when the handler returned never ended. A worker ends on SIGTERM (the pool's terminate) and
    leaves Ctrl-C (SIGINT, sent to the whole process group) to the parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # nothing a worker allocates outlives its batch: no cycle collection (it would also touch,
    # and copy, every page of the parent's heap)
    gc.disable()


def mapped_rows(
    rows: Iterable[dict[str, Any]], run: Any, source: str, workers: int
) -> Iterator[tuple[str, Any]]:
    """(ledger entry, ``run.ready`` outcome) of each of ``rows`` of ``source`` (read by this
    process), in their order, mapped by ``workers`` forked processes."""
    global _job
    _job = (run, source, run.mapper.source_keys.get(source) or [])
    try:
        gc.collect()  # no garbage of the parent's (a connection) is collected in a worker
        pool = multiprocessing.get_context("fork").Pool(workers, initializer=_quiet_worker)
    finally:
        _job = None
    try:
        flight: deque[Any] = deque()
        it = iter(rows)
        while batch := list(itertools.islice(it, BATCH_ROWS)):
            flight.append(pool.apply_async(_map_batch, (batch,)))
            if len(flight) >= WINDOW_PER_WORKER * workers:
                yield from flight.popleft().get()
        while flight:
            yield from flight.popleft().get()
        pool.close()  # every batch mapped: the workers end on the pool's sentinels, unsignalled
        pool.join()
    finally:
        pool.terminate()  # an error or an abandoned read: SIGTERM ends the workers (no-op after join)
