"""``crossfade verify``: are the legacy tables and the target equal, row for row?

Steps, for every configured table (or ``--table``):

1. counts and chunked checksums, narrowed to the differing keys (:mod:`crossfade.verify.chunked`);
2. *live-safe re-check*: while sync runs, a key can differ only because its change is in flight.
   Each differing key is re-read around a fence (:func:`crossfade.verify.fence.fence`), in this
   order: source (S1), fence written and applied everywhere, target (T), source again (S2). If
   S1 and S2 are the same row version (content and ``xmin``: equal content alone may be a row
   deleted and re-inserted, or updated A -> B -> A, meanwhile) the key did not change while the
   fence went through, so the target, which by then holds every change committed before the
   fence, must equal it: T != S2 is a real difference, T == S2 was in flight. S1 != S2 (the key
   changed meanwhile) leaves it undecided for the next round, as does a row the target holds
   and S1 and S2 lack, until the target holds it at the same position a round later (else it
   may be an insert after S1, applied, and deleted after the fence: :func:`judge_identity`).
   The last round (of ``rounds``) reads S1 ``FOR SHARE`` and holds the lock until S2:
   a row written all the time (a pgbench branch) cannot change during that one fence, so it
   settles too; the application's writes to those rows wait for that long. The locks are taken
   NOWAIT and retried (up to ``lock_wait``): verify never waits for a lock while holding one, so
   it cannot deadlock with (and get aborted) an application transaction. A key still undecided
   is reported as *unsettled* (counted as a mismatch: a cutover must not pass on it). Without
   the fence (``fence_recheck=False``, for a quiet source) the chunk pass's keys are reported
   as they are;
3. the first differing rows of each table are shown with the columns that differ;
4. with ``repair``: :mod:`crossfade.verify.repair` re-emits them and they are re-checked;
5. the run is recorded in ``<bookkeeping>.verify_runs`` and published as metrics.

Before it reads anything, a run takes a snapshot of each database (PostgreSQL 13+): the next
run may then compare only the rows written since (``changed_since``, :mod:`crossfade.verify.delta`:
the cutover's verify inside the write freeze) instead of every row's checksum.

Tables without a primary key are compared by :func:`crossfade.verify.compare.compare_table`
(a streaming merge of both sides; no re-check, no repair). Tables with an entry under
``mapping.tables`` are compared through the mapping (:mod:`crossfade.verify.mapped`), one report
per *target* table, with the accounting of their source tables (a mapped table is not repaired:
replay its dead letters, or rewind).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random

from crossfade import metrics
from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import ConfigError, CrossfadeError
from crossfade.target.store import (
    VerifyRun,
    ensure_schema,
    fence_position,
    mapping_fingerprint,
    record_verify_run,
)
from crossfade.verify.chunked import Key, TableComparer, prepare_session
from crossfade.verify.delta import DedupBase, DeltaBase, snapshot_of, totals
from crossfade.verify.mapped_pool import usable_cpus
from crossfade.verify.report import (
    EXAMPLES,
    MappedCheck,
    Progress,
    Quiet,
    TableReport,
    VerifyReport,
    clip,
    judge_entries,
    judge_identity,
    judge_keys,
    mapped_report,
)
from crossfade.who import operator

log = logging.getLogger(__name__)

MAPPED_EXTRA_ROUNDS = 2
"""Re-check rounds mapped targets get beyond ``rounds`` (they have no share-locked last round)."""


class Verifier:
    """One verify run; ``run()`` returns the report (and records it)."""

    def __init__(
        self,
        settings: Settings,
        tables: list[str] | None = None,
        *,
        fence_recheck: bool = True,
        rounds: int = 3,
        chunk_rows: int = 20_000,
        leaf_rows: int = 1_000,
        max_keys: int = 10_000,
        fence_timeout: float = 120.0,
        progress: Progress | None = None,
        fence: Callable[[], tuple[str, float]] | None = None,
        lock_wait: float = 10.0,
        changed_since: DeltaBase | None = None,
        delta_max_fraction: float = 0.2,
        workers: int | None = None,
    ) -> None:
        """``changed_since``: compare only the rows written since that (full) verify's
        snapshots, plus its unsettled keys (:mod:`crossfade.verify.delta`; mapped targets:
        :mod:`crossfade.verify.mapped_delta`, in full beyond ``delta_max_fraction`` of a
        target's rows). ``workers``: processes mapping the legacy rows of mapped tables
        (:mod:`crossfade.verify.mapped_pool`); None: one per usable CPU."""
        self.settings = settings
        unknown = [t for t in tables or [] if t not in settings.tables]
        if unknown:
            raise ConfigError(
                f"--table {', '.join(unknown)} is not under `tables:` in the config",
                f"one of {', '.join(settings.tables)}",
            )
        self.tables = tables or list(settings.tables)
        self.fence_recheck = fence_recheck
        self.rounds = max(1, rounds)
        self.chunk_rows, self.leaf_rows, self.max_keys = chunk_rows, leaf_rows, max_keys
        self.fence_timeout = fence_timeout
        self.lock_wait = lock_wait
        self.progress: Progress = progress or Quiet()
        self.bk = settings.sync.bookkeeping_schema
        self._fence = fence or self._default_fence
        self.report = VerifyReport([], datetime.now(UTC))
        self.comparers: dict[str, TableComparer] = {}
        self.confirmed: dict[str, dict[Key, str]] = {}
        self.last_fence_lsn: int | None = None
        self.changed_since = changed_since
        if changed_since is not None:
            self.report.delta_of = changed_since.run_id
        self._unsettled: dict[str, set[Key]] = {}
        self._keyless_base: dict[str, dict[str, tuple[int, int]]] = {}
        self.delta_max_fraction = delta_max_fraction
        self.workers = max(1, usable_cpus() if workers is None else workers)
        self._mapped_open: tuple[dict[str, set[Key]], dict[str, set[str]]] = ({}, {})
        self._mapped_dedup: dict[str, DedupBase] = {}

    # -- fence --------------------------------------------------------------------------------
    def _default_fence(self) -> tuple[str, float]:
        from crossfade.verify.fence import fence

        r = fence(self.settings, timeout=self.fence_timeout, via="verify")
        return r.token, r.seconds

    def fence(self, tgt: psycopg.Connection) -> None:
        self.progress.phase("fence: waiting until sync has applied every change committed so far")
        try:
            token, seconds = self._fence()
        except CrossfadeError as exc:
            raise CrossfadeError(
                f"differing rows cannot be re-checked: {exc.message}",
                (exc.hint or "")
                + "; or, if the source is quiet and sync has caught up, verify --no-fence",
            ) from None
        self.report.fences += 1
        self.report.fence_seconds = max(self.report.fence_seconds, seconds)
        self.last_fence_lsn = fence_position(tgt, self.bk, token)

    # -- run ----------------------------------------------------------------------------------
    def run(self, *, repair: bool = False, record: bool = True) -> VerifyReport:
        t0 = time.monotonic()
        with (
            connect(self.settings.source, "source") as src,
            connect(self.settings.target, "target") as tgt,
        ):
            prepare_session(src)
            prepare_session(tgt)
            snaps = {"source": snapshot_of(src), "target": snapshot_of(tgt)}
            if all(snaps.values()):
                self.report.snapshots = {k: str(v) for k, v in snaps.items()}
            mapping = self.settings.mapping
            mapped = [t for t in self.tables if mapping is not None and t in mapping.tables]
            for table in self.tables:
                if table not in mapped:
                    self.report.tables.append(self._chunk_pass(src, tgt, table))
            base = self.changed_since
            if mapped and base is not None and {"source", "target"} <= set(base.snapshots):
                self.report.tables.extend(self._mapped_delta(tgt, mapped, base))
            elif mapped:
                self.report.tables.extend(self._mapped(tgt, mapped))
            pending = {t: dict(c.result.keys) for t, c in self.comparers.items() if c.result.keys}
            if pending and self.fence_recheck:
                r0 = time.monotonic()
                self._recheck(src, tgt, pending)
                self.report.live_only_seconds += time.monotonic() - r0
                self.report.rechecked_after_fence = True
            else:
                self.confirmed = pending
            for tr in self.report.tables:
                self._summarise(src, tgt, tr)
            if repair:
                from crossfade.verify.repair import Repairer

                Repairer(self, src, tgt).run()
        self.report.seconds = time.monotonic() - t0
        metrics.set_verify_result(
            {t.name: (0 if t.match else max(1, t.mismatched)) for t in self.report.tables},
            passed=self.report.match,
        )
        if record:
            self._record()
        return self.report

    def _mapped(self, tgt: psycopg.Connection, sources: list[str]) -> list[TableReport]:
        """Mapped tables: the mapping of every legacy row against the target, then the live-safe
        re-check of what differs (:meth:`_mapped_recheck`)."""
        from crossfade.verify.mapped import run_mapped
        from crossfade.verify.report import as_found

        self.progress.phase(f"mapping {', '.join(sources)} and comparing with the target")
        first = run_mapped(self.settings, sources, self.progress.advance, workers=self.workers)
        self._mapped_dedup.update(first.dedup)
        keys = {t: dict(r.differing) for t, r in first.targets.items() if r.differing}
        entries = {s: a.disagreeing() for s, a in first.accounts.items() if a.disagreeing()}
        if self.fence_recheck and (keys or entries):
            r0 = time.monotonic()
            check = self._mapped_recheck(tgt, sources, first, keys, entries)
            self.report.live_only_seconds += time.monotonic() - r0
        else:  # a quiet source (--no-fence): the differences as found
            check = as_found(tgt, first, keys, entries)
        # what the verify inside the freeze must look at again (crossfade.verify.mapped_delta)
        for found in (check.confirmed, check.unsettled):
            for t, ks in found.items():
                self._mapped_open[0].setdefault(t, set()).update(ks)
        for held in (check.entries, check.unsettled_entries):
            for src_table, es in held.items():
                self._mapped_open[1].setdefault(src_table, set()).update(es)
        return [mapped_report(t, first, check) for t in first.targets]

    def _mapped_delta(
        self, tgt: psycopg.Connection, sources: list[str], base: DeltaBase
    ) -> list[TableReport]:
        """Mapped targets inside the freeze: only the keys changed since ``base``
        (:mod:`crossfade.verify.mapped_delta`); those it cannot compare safely in full, as
        :meth:`_mapped` does, with the reason in their report (``mapped.compared``)."""
        from crossfade.verify.mapped_delta import run_delta
        from crossfade.verify.report import as_found

        self.progress.phase(
            f"mapping the rows of {', '.join(sources)} changed since the full verify"
        )
        if self.report.delta_scanned_at is None:
            self.report.delta_scanned_at = time.monotonic()
        d = run_delta(self.settings, sources, base, max_fraction=self.delta_max_fraction)
        self.report.delta_compare_seconds += d.compare_seconds
        keys = {t: dict(r.differing) for t, r in d.run.targets.items() if r.differing}
        entries = {s: a.disagreeing() for s, a in d.run.accounts.items() if a.disagreeing()}
        full = dict(d.full)
        if self.fence_recheck:  # writes flow: a difference may be in flight, re-checked in full
            for t, r in d.run.targets.items():
                if r.mismatched or any(s in entries for s in r.sources):
                    full[t] = "differences while writes flow: re-checked by the full verify"
        reports = []
        if full:
            again = [s for s in sources if any(s in d.sources[t] for t in full)]
            for rep in self._mapped(tgt, again):
                why = full.get(rep.name, "shares a legacy table with a target compared in full")
                rep.mapped = {**(rep.mapped or {}), "compared": f"in full: {why}"}
                reports.append(rep)
        done = {r.name for r in reports}
        check = as_found(tgt, d.run, keys, entries)
        for t in d.run.targets:
            if t in done:
                continue
            rep = mapped_report(t, d.run, check)
            rep.delta_keys = d.compared[t]
            rep.mapped = {**(rep.mapped or {}), "compared": "changes since the full verify"}
            reports.append(rep)
        return reports

    def _mapped_recheck(
        self,
        tgt: psycopg.Connection,
        sources: list[str],
        first: Any,
        keys: dict[str, dict[Key, str]],
        entries: dict[str, set[str]],
    ) -> MappedCheck:
        """The identity re-check, for mapped targets: each differing target key (and each ledger
        entry whose outcome disagrees) is judged from three reads: the expected row from the
        mapping of one legacy snapshot (E1, the previous run), the target after a fence (T), and
        the expected row from a snapshot taken after T (E2, a new run of the whole mapping, so
        parents, children, duplicate groups and filters are all as of one moment). E1 == E2: no
        change reached that row meanwhile, so T, which holds every change before the fence, must
        equal it: T != E2 is a real difference, T == E2 was in flight — unless T's row was written
        by a change E1's snapshot did not see (its ``_cf_pos`` above the WAL position read before
        that snapshot): E1 == E2 then hides a state in between (a note inserted after E1, applied,
        and deleted after the fence is absent from both), so T != E2 waits for the next round.
        E1 != E2: undecided, the next round (of ``rounds`` + :data:`MAPPED_EXTRA_ROUNDS`)
        decides; still undecided after the last is *unsettled* (counted as a mismatch: a cutover
        must not pass on it)."""
        from crossfade.verify.mapped import Want, ledger_outcomes, run_mapped
        from crossfade.verify.target_reads import newest_writes, target_rows

        check = MappedCheck(first)
        exp = {t: {k: first.expected[t].get(k) for k in ks} for t, ks in keys.items()}
        out = {s: {e: first.outcomes[s][e] for e in es} for s, es in entries.items()}
        pending_k = {t: set(ks) for t, ks in keys.items()}
        pending_e = {s: set(es) for s, es in entries.items()}
        # no row is held still in a last round here (a golden record or a child depends on rows
        # of several tables): MAPPED_EXTRA_ROUNDS more rounds instead decide a row that changed
        # during the first ones; one that changes in every round is reported unsettled
        rounds = self.rounds + MAPPED_EXTRA_ROUNDS
        for rnd in range(1, rounds + 1):
            n = sum(map(len, pending_k.values())) + sum(map(len, pending_e.values()))
            self.progress.phase(
                f"re-checking {n} differing mapped row(s) after a fence (round {rnd} of {rounds})"
            )
            self.fence(tgt)
            self.report.rechecked_after_fence = True
            seen, written = {}, {}
            for t, ks in pending_k.items():
                r = first.targets[t]
                assert r.shape is not None  # set by the comparison that found the keys
                rel = sql.SQL("{}.{}").format(*map(sql.Identifier, t.split(".", 1)))
                dedup = (self.bk, t) if t in first.dedup else None
                seen[t], written[t] = target_rows(tgt, rel, r.shape, r.key, r.cols, list(ks), dedup)
            recorded = {s: ledger_outcomes(tgt, self.bk, s, es) for s, es in pending_e.items()}
            run = run_mapped(
                self.settings,
                sources,
                self.progress.advance,
                Want({t: list(ks) for t, ks in pending_k.items()}, pending_e),
                self.workers,
            )
            # E1 is the previous run's snapshot, read before this round's fence
            since = min(check.last.before, self.last_fence_lsn or 0)
            check.last = run
            for t, ks in pending_k.items():
                newest = newest_writes(tgt, self.bk, written[t], run.producers.get(t, {}))
                judge_keys(check, t, ks, exp[t], run.expected[t], seen[t], newest, since)
            for s, es in pending_e.items():
                judge_entries(check, s, es, out[s], run.outcomes[s], recorded[s], since)
            pending_k = {t: ks for t, ks in pending_k.items() if ks}
            pending_e = {s: es for s, es in pending_e.items() if es}
            if not pending_k and not pending_e:
                break
        check.unsettled = {t: dict.fromkeys(ks, "unsettled") for t, ks in pending_k.items()}
        check.unsettled_entries = {s: set(es) for s, es in pending_e.items()}
        return check

    def _chunk_pass(
        self, src: psycopg.Connection, tgt: psycopg.Connection, table: str
    ) -> TableReport:
        t0 = time.monotonic()
        tr = TableReport(table)
        shape = read_shape(src, table)
        if shape is None:
            tr.error = f"{table} does not exist in the source database"
            return tr
        tshape = read_shape(tgt, table)
        if tshape is None:
            row = src.execute(
                sql.SQL("SELECT count(*) FROM {}.{}").format(
                    *map(sql.Identifier, table.split(".", 1))
                )
            ).fetchone()
            tr.source_rows = tr.missing = int(row[0]) if row else 0
            tr.error = f"{table} does not exist in the target database (has sync started?)"
            return tr
        lacking = [c.name for c in shape.columns if c.name not in {x.name for x in tshape.columns}]
        if lacking:
            tr.error = f"target {table} lacks column(s) {', '.join(lacking)}"
            return tr
        if not shape.pk:
            return self._keyless(src, tgt, table, [c.name for c in shape.columns], tr, t0)
        comparer = TableComparer(
            src,
            tgt,
            shape,
            chunk_rows=self.chunk_rows,
            leaf_rows=self.leaf_rows,
            max_keys=self.max_keys,
            on_rows=self.progress.advance,
            target_shape=tshape,
        )
        base = self.changed_since
        if base is not None and {"source", "target"} <= set(base.snapshots):
            # only the rows written since the base run, and the keys it left undecided
            self.progress.table(table, 0)
            if self.report.delta_scanned_at is None:
                self.report.delta_scanned_at = time.monotonic()
            # both servers scan at once (psycopg waits without the GIL), as the chunk pass does
            with ThreadPoolExecutor(1, thread_name_prefix="verify-target") as pool:
                theirs = pool.submit(comparer.changed_keys, "target", base.snapshots["target"])
                keys = comparer.changed_keys("source", base.snapshots["source"])
                keys |= theirs.result()
            keys |= base.unsettled.get(table, set())
            c0 = time.monotonic()
            tr.delta_keys = comparer.compare_keys(keys)
            self.report.delta_compare_seconds += time.monotonic() - c0
            res = comparer.result
        else:
            res = comparer.run(on_counts=lambda s, _t: self.progress.table(table, s))
        self.comparers[table] = comparer
        tr.source_rows, tr.target_rows = res.source_rows, res.target_rows
        tr.chunks, tr.chunks_differing = res.chunks, res.chunks_differing
        tr.candidates = len(res.keys) + sum(res.overflow.values())
        tr.unchecked = sum(res.overflow.values())
        tr.missing = res.overflow["missing"]
        tr.extra = res.overflow["extra"]
        tr.different = res.overflow["different"]
        tr.seconds = time.monotonic() - t0
        return tr

    def _snapshot(self, which: str) -> psycopg.Connection:
        """A connection inside a REPEATABLE READ transaction whose snapshot is taken now."""
        conn = connect(
            self.settings.source if which == "source" else self.settings.target,
            which,
            autocommit=False,
        )
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        prepare_session(conn)
        conn.execute("SELECT 1")
        return conn

    def _keyless(
        self,
        src: psycopg.Connection,
        tgt: psycopg.Connection,
        table: str,
        cols: list[str],
        tr: TableReport,
        t0: float,
    ) -> TableReport:
        """Append-only tables, compared as multisets of rows (streaming merges, bounded memory).

        Live-safe without keys: rows are only ever added, so with S1 (source snapshot before a
        fence), T (target after it) and S2 (source after T), every row of S1 must be in T
        (missing otherwise) and every row of T in S2 (extra otherwise); rows in S2 but not yet
        in T are in flight. With no row at S1 nothing can be missing: no fence (an empty log)."""
        from crossfade.verify.compare import compare_table, has_rows

        self.progress.table(table, 0)
        base = self.changed_since
        if base is not None and table in base.keyless:
            return self._keyless_delta(src, tgt, table, cols, tr, t0, base)
        if self.report.snapshots is not None:
            # the base of a later verify of the changes: the totals of the rows older than the
            # snapshots, which nobody writes again (see crossfade.verify.delta)
            self._keyless_base[table] = {
                side: totals(conn, table, cols, self.report.snapshots[side], since=False)
                for side, conn in (("source", src), ("target", tgt))
            }
        if not self.fence_recheck:
            conns = [self._snapshot("source"), self._snapshot("target")]
            try:
                d = compare_table(conns[0], conns[1], table, cols, [])
            finally:
                for c in conns:
                    c.close()
            tr.source_rows, tr.target_rows = d.source_rows, d.target_rows
            tr.missing, tr.extra, tr.different = d.n_missing, d.n_extra, d.n_different
            tr.seconds = time.monotonic() - t0
            return tr
        conns = [self._snapshot("source")]
        try:
            if has_rows(conns[0], table):  # else none can be missing, and T, S2 need no fence
                self.fence(tgt)
            conns.append(self._snapshot("target"))
            conns.append(self._snapshot("source"))
            s1, t, s2 = conns
            before = compare_table(s1, t, table, cols, [])
            after = compare_table(s2, t, table, cols, [])
        finally:
            for c in conns:
                c.close()
        self.report.rechecked_after_fence = True
        tr.source_rows, tr.target_rows = after.source_rows, after.target_rows
        tr.missing, tr.extra, tr.in_flight = before.n_missing, after.n_extra, after.n_missing
        tr.seconds = time.monotonic() - t0
        return tr

    def _keyless_delta(
        self,
        src: psycopg.Connection,
        tgt: psycopg.Connection,
        table: str,
        cols: list[str],
        tr: TableReport,
        t0: float,
        base: DeltaBase,
    ) -> TableReport:
        """A table without a key inside the freeze: the base run's totals of the old rows plus
        the totals of the rows written since, side against side (:mod:`crossfade.verify.delta`).
        With the fence re-check (writes may still flow): legacy before a fence (S1), new after
        it (T), legacy again (S2); T == S2 matches, S1 != S2 (legacy changed meanwhile) is in
        flight, not a difference; T != S1 == S2 is one."""
        old = base.keyless[table]

        def side(which: str, conn: psycopg.Connection) -> tuple[int, int]:
            n, h = totals(conn, table, cols, base.snapshots[which], since=True)
            return old[which][0] + n, old[which][1] + h

        s1 = side("source", src)
        if self.fence_recheck:
            f0 = time.monotonic()
            self.fence(tgt)
            self.report.live_only_seconds += time.monotonic() - f0
            self.report.rechecked_after_fence = True
        t = side("target", tgt)
        s2 = s1
        if self.fence_recheck:
            r0 = time.monotonic()
            s2 = side("source", src)
            self.report.live_only_seconds += time.monotonic() - r0
        tr.source_rows, tr.target_rows = s2[0], t[0]
        tr.delta_keys = 0
        if t != s2 and s1 != s2:
            tr.in_flight = abs(s2[0] - t[0])
        elif t != s2:
            tr.error = (
                f"rows differ: {s2[0]} legacy rows, {t[0]} new"
                + (" (as many, other content)" if s2[0] == t[0] else "")
                + f"; `crossfade verify --table {table}` names them"
            )
        tr.seconds = time.monotonic() - t0
        return tr

    def _recheck(
        self, src: psycopg.Connection, tgt: psycopg.Connection, pending: dict[str, dict[Key, str]]
    ) -> None:
        confirmed: dict[str, dict[Key, str]] = {t: {} for t in pending}
        in_flight = dict.fromkeys(pending, 0)
        seen: dict[str, dict[Key, str]] = {}  # judge_identity's memory between rounds
        for rnd in range(1, self.rounds + 1):
            n = sum(len(k) for k in pending.values())
            # the last round holds the rows that keep changing still for one fence (hot rows)
            locked = rnd == self.rounds and rnd > 1
            self.progress.phase(
                f"re-checking {n} differing key(s) after a fence (round {rnd} of {self.rounds}"
                + (", rows share-locked in the source)" if locked else ")")
            )
            hold = connect(self.settings.source, "source", autocommit=False) if locked else None
            try:
                if hold is not None:
                    s1 = self._read_held(hold, pending)
                else:
                    s1 = {t: self._versions("source", t, keys) for t, keys in pending.items()}
                self.fence(tgt)
                tg = {t: self._versions("target", t, keys) for t, keys in pending.items()}
                s2 = {t: self._versions("source", t, keys) for t, keys in pending.items()}
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                log.warning(
                    "could not hold %d changing row(s) still for the re-check within %.0f s (%s): "
                    "reported unsettled",
                    n,
                    self.lock_wait,
                    type(exc).__name__,
                )
                break
            finally:
                if hold is not None:
                    hold.rollback()
                    hold.close()
            still: dict[str, dict[Key, str]] = {}
            for t, keys in pending.items():
                undecided, found, n_in_flight = judge_identity(
                    keys, s1[t], tg[t], s2[t], seen.setdefault(t, {})
                )
                in_flight[t] += n_in_flight
                confirmed[t].update(found)
                if undecided:
                    still[t] = undecided
            pending = still
            if not pending:
                break
        for tr in self.report.tables:
            tr.in_flight = in_flight.get(tr.name, 0)
            tr.unsettled = len(pending.get(tr.name, {}))
        self.confirmed = {t: {**confirmed[t], **pending.get(t, {})} for t in confirmed}
        self._unsettled = {t: set(v) for t, v in pending.items()}

    def _versions(
        self, side: str, t: str, keys: dict[Key, str], conn: psycopg.Connection | None = None
    ) -> dict[Key, str]:
        """The versioned hashes the re-check judges (:func:`judge_identity`)."""
        return self.comparers[t].hashes_of(
            side, keys, conn=conn, lock=conn is not None, version=True
        )

    def _read_held(
        self, hold: psycopg.Connection, pending: dict[str, dict[Key, str]]
    ) -> dict[str, dict[Key, str]]:
        """S1 of the last round: the pending rows read and share-locked in ``hold``'s transaction.

        The locks are taken with NOWAIT: a row the application is writing fails the attempt, which
        releases everything and tries again shortly (for up to ``lock_wait`` seconds). Waiting
        instead, while holding the rows of the tables already read, closes a deadlock with any
        application transaction that writes those tables in another order (pgbench: accounts,
        tellers, branches), and PostgreSQL then aborts one of the two, as often the application's."""

        def attempt() -> dict[str, dict[Key, str]]:
            hold.rollback()
            # FOR SHARE needs a read-write transaction, even when a freeze made read-only the default
            hold.execute("SET LOCAL transaction_read_only = off")
            prepare_session(hold)
            try:
                return {t: self._versions("source", t, keys, hold) for t, keys in pending.items()}
            except psycopg.errors.LockNotAvailable:
                hold.rollback()  # an aborted transaction still holds the rows it locked
                raise

        retrying = Retrying(
            retry=retry_if_exception_type(psycopg.errors.LockNotAvailable),
            reraise=True,
            stop=stop_after_delay(self.lock_wait),
            wait=wait_random(0.01, 0.2),
        )
        return retrying(attempt)

    def _summarise(self, src: psycopg.Connection, tgt: psycopg.Connection, tr: TableReport) -> None:
        keys = self.confirmed.get(tr.name, {})
        unsettled = self._unsettled.get(tr.name, set())
        for k, kind in keys.items():
            if k in unsettled:
                continue
            if kind == "missing":
                tr.missing += 1
            elif kind == "extra":
                tr.extra += 1
            else:
                tr.different += 1
        comparer = self.comparers.get(tr.name)
        if comparer is None or not keys:
            return
        sample = list(keys)[:EXAMPLES]
        s_rows, t_rows = comparer.rows_of("source", sample), comparer.rows_of("target", sample)
        for k in sample:
            s, t = s_rows.get(k), t_rows.get(k)
            ex: dict[str, Any] = {
                "key": comparer.key_dict(k),
                "kind": "unsettled" if k in unsettled else keys[k],
            }
            if s is not None and t is not None:
                ex["columns"] = {
                    c: {"source": clip(s[c]), "target": clip(t[c])}
                    for c in comparer.cols
                    if s[c] != t[c]
                }
            tr.examples.append(ex)

    # -- bookkeeping --------------------------------------------------------------------------
    def _record(self) -> None:
        r = self.report
        try:
            with connect(self.settings.target, "target") as tgt:
                ensure_schema(tgt, self.bk)
                r.run_id = record_verify_run(
                    tgt,
                    self.bk,
                    VerifyRun(
                        r.started_at,
                        r.match,
                        len(r.tables),
                        sum(t.source_rows for t in r.tables),
                        sum(t.target_rows for t in r.tables),
                        sum(t.different + t.unsettled for t in r.tables),
                        sum(t.missing for t in r.tables),
                        sum(t.extra for t in r.tables),
                        r.rechecked_after_fence,
                        r.seconds,
                        operator(),
                        r.as_dict(),
                        mapping_fingerprint(self.settings.mapping),
                    ),
                )
        except (psycopg.Error, CrossfadeError) as exc:
            log.warning("verify result not recorded in %s.verify_runs: %s", self.bk, exc)


def delta_base(v: Verifier) -> DeltaBase | None:
    """What a later verify of the changes needs from the (full) run ``v`` made: its snapshots
    and unsettled keys; None when it took no snapshot (PostgreSQL before 13)."""
    if v.report.snapshots is None:
        return None
    return DeltaBase(
        v.report.run_id,
        v.report.snapshots,
        {t: set(k) for t, k in v._unsettled.items()},
        dict(v._keyless_base),
        v._mapped_open[0],
        v._mapped_open[1],
        dict(v._mapped_dedup),
    )


def verify(
    settings: Settings, tables: list[str] | None = None, *, repair: bool = False, **kw: Any
) -> VerifyReport:
    return Verifier(settings, tables, **kw).run(repair=repair)
