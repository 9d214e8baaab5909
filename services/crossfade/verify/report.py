"""The verify report (per table and per run) and the pure parts of a run: how two rows' checksums
differ, how a value is shown, what the re-check of mapped targets decided and the report it gives.
No database access here: :mod:`crossfade.verify.run` reads, this module judges and tells."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from crossfade.verify.chunked import Key

log = logging.getLogger(__name__)

EXAMPLES = 20
VALUE_CHARS = 120


class Progress(Protocol):
    def table(self, name: str, total: int) -> None: ...
    def advance(self, rows: int) -> None: ...
    def phase(self, text: str) -> None: ...


@dataclass
class TableReport:
    name: str
    source_rows: int = 0
    target_rows: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    unsettled: int = 0
    unchecked: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    candidates: int = 0
    in_flight: int = 0
    seconds: float = 0.0
    error: str | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    repair: dict[str, Any] | None = None
    delta_keys: int | None = None
    """In a verify of the changes only: how many keys (changed since the base run) were compared."""
    mapped: dict[str, Any] | None = None
    """For a target of the mapping: its sources, expected rows, merged duplicates, accounting."""

    @property
    def mismatched(self) -> int:
        return self.missing + self.extra + self.different + self.unsettled

    @property
    def match(self) -> bool:
        if self.error:
            return False
        if self.repair is not None:
            return self.repair["remaining"] == 0 and self.unchecked == 0
        return self.mismatched == 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "match": self.match,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            # keys present on both sides whose rows differ (plus those still changing: unsettled)
            "mismatched_keys": self.different + self.unsettled,
            "missing": self.missing,
            "extra": self.extra,
            "different": self.different,
            "unsettled": self.unsettled,
            "unchecked": self.unchecked,
            "in_flight": self.in_flight,
            "chunks": self.chunks,
            "chunks_differing": self.chunks_differing,
            "seconds": round(self.seconds, 3),
            "error": self.error,
            "rows": self.examples,
            "repair": self.repair,
            **({"delta_keys": self.delta_keys} if self.delta_keys is not None else {}),
            **({"mapping": self.mapped} if self.mapped is not None else {}),
        }


@dataclass
class VerifyReport:
    tables: list[TableReport]
    started_at: datetime
    seconds: float = 0.0
    fences: int = 0
    fence_seconds: float = 0.0
    rechecked_after_fence: bool = False
    snapshots: dict[str, str] | None = None
    """``source``/``target`` -> the snapshot taken before the run read anything (the base of a
    later verify of the changes; None before PostgreSQL 13)."""
    delta_of: int | None = None
    """A verify of the changes since this run (``verify_runs.id``); None: a full verify."""
    run_id: int | None = None
    """Its ``verify_runs.id`` once recorded."""
    live_only_seconds: float = 0.0
    """Time spent only because writes may still flow: re-check rounds of differing keys around
    fences, a keyless table's fence and second read in a verify of the changes. With writes
    frozen and fenced (the cutover's real run) none of it is spent: the dry run's forecast
    leaves it out."""
    delta_compare_seconds: float = 0.0
    """In a verify of the changes: seconds spent comparing the changed keys' rows."""
    delta_scanned_at: float | None = None
    """In a verify of the changes: ``time.monotonic()`` when its scans for changed keys began
    (the forecast scales the comparison by the keys written up to then)."""

    @property
    def match(self) -> bool:
        return all(t.match for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "match": self.match,
            "tables": [t.as_dict() for t in self.tables],
            "started_at": self.started_at.isoformat(),
            "seconds": round(self.seconds, 3),
            "fences": self.fences,
            "fence_seconds": round(self.fence_seconds, 3),
            "rechecked_after_fence": self.rechecked_after_fence,
            "delta_of": self.delta_of,
            "live_only_seconds": round(self.live_only_seconds, 3),
            "delta_compare_seconds": round(self.delta_compare_seconds, 3),
        }


class Quiet:
    def table(self, name: str, total: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def phase(self, text: str) -> None:
        log.info("%s", text)


def clip(v: str | None) -> str | None:
    if v is None or len(v) <= VALUE_CHARS:
        return v
    return v[:VALUE_CHARS] + f"... ({len(v)} chars)"


def difference_kind(src: str | None, tgt: str | None) -> str | None:
    if src == tgt:
        return None
    if tgt is None:
        return "missing"
    if src is None:
        return "extra"
    return "different"


def split_version(v: str | None) -> tuple[str | None, str | None]:
    """A versioned hash (``TableComparer.hashes_of(version=True)``) as (md5, version); a version
    is None when empty (a target row sync did not write)."""
    if v is None:
        return None, None
    h, _, ver = v.partition(" ")
    return h, ver or None


def judge_identity(
    pending: dict[Key, str],
    s1: dict[Key, str],
    tg: dict[Key, str],
    s2: dict[Key, str],
    seen: dict[Key, str],
) -> tuple[dict[Key, str], dict[Key, str], int]:
    """One re-check round's verdict on an identity table's differing keys (see
    :meth:`crossfade.verify.run.Verifier._recheck`): the legacy rows before the fence (``s1``)
    and after the target was read (``s2``), the target's (``tg``), all versioned hashes.
    Returns (undecided key -> kind found first, confirmed key -> kind, keys in flight).

    Equal content twice does not mean the legacy row held still: deleted and re-inserted, or
    updated A -> B -> A, between the reads, it reads the same while the target rightly holds the
    state in between (applied before the fence, the way back not yet). Equal *versions* do: the
    same tuple was visible at both reads, so no change of the key committed in between, and the
    target, which holds every change committed before the fence, must equal it.

    A key the legacy lacks at both reads has no version: a row the target holds may come from an
    insert committed after ``s1``, applied, and deleted after the fence. It is a real extra only
    if the target held that very row (same position) in an earlier round whose ``s2`` lacked
    the key (the delete was then committed before this round's fence, so applied: the row
    cannot be in flight), or if sync did not write it (no position). ``seen`` (key -> the
    target row's position in such a round) is kept here for the next round. Never confirmed on
    doubt: an undecided key of the last round is reported unsettled."""
    still: dict[Key, str] = {}
    confirmed: dict[Key, str] = {}
    in_flight = 0
    for k, first in pending.items():
        (h1, v1), (h2, v2) = split_version(s1.get(k)), split_version(s2.get(k))
        got, pos = split_version(tg.get(k))
        earlier = seen.pop(k, None)
        if h2 is None and pos is not None:
            seen[k] = pos
        if (h1, v1) != (h2, v2) or (h2 is None and pos is not None and pos != earlier):
            still[k] = first  # changed meanwhile, or maybe in flight: the next round decides
            continue
        kind = difference_kind(h2, got)
        if kind is None:
            in_flight += 1
        else:
            confirmed[k] = kind
    return still, confirmed, in_flight


class MappedCheck:
    """What the re-check of mapped targets decided (see :meth:`Verifier._mapped_recheck`)."""

    def __init__(self, first: Any) -> None:
        self.last = first
        self.confirmed: dict[str, dict[Key, str]] = {}
        self.unsettled: dict[str, dict[Key, str]] = {}
        self.in_flight: dict[str, int] = {}
        self.rows: dict[tuple[str, Key], tuple[Any, Any]] = {}
        """(target, key) -> (expected row, target row) of a confirmed difference."""
        self.entries: dict[str, dict[str, tuple[str, str]]] = {}
        """source -> entry -> (the mapping's outcome, sync's recorded one), confirmed apart."""
        self.unsettled_entries: dict[str, set[str]] = {}


def judge_keys(
    check: MappedCheck,
    t: str,
    pending: set[Key],
    exp: dict[Key, Any],
    expected_now: dict[Key, Any],
    seen: dict[Key, Any],
    written: dict[Key, int],
    since: int,
) -> None:
    """One re-check round's verdict on ``t``'s pending keys (see :meth:`crossfade.verify.run.Verifier._mapped_recheck`):
    decided keys leave ``pending``, as in flight or confirmed; the others wait for the next round
    (``exp`` then holds the newer expected row). ``since``: the legacy WAL position read before
    E1's snapshot (below this round's fence)."""
    for k in list(pending):
        e1, e2, got = exp[k], expected_now.get(k), seen[k]
        if e1 != e2:
            exp[k] = e2  # changed meanwhile: the next round decides
            continue
        if got != e2 and written.get(k, 0) > since:
            # the target row holds a change E1's snapshot did not see: E1 == E2 yet the row
            # moved (A -> B -> A), before the fence (absent, inserted, applied, deleted after
            # the fence) or after it (B applied, A not yet); the next round decides
            continue
        pending.discard(k)
        if got == e2:
            check.in_flight[t] = check.in_flight.get(t, 0) + 1
        else:
            kind = "extra" if e2 is None else "missing" if got is None else "different"
            log.info(
                "re-check confirms %s %s key %s: E1 = E2 %s, target %s, written at LSN %s, "
                "E1 saw every change below %s",
                t,
                kind,
                k,
                e2,
                got,
                written.get(k, 0),
                since,
            )
            check.confirmed.setdefault(t, {})[k] = kind
            check.rows[(t, k)] = (e2, got)


def judge_entries(
    check: MappedCheck,
    s: str,
    pending: set[str],
    out: dict[str, str],
    outcomes_now: dict[str, str],
    recorded: dict[str, tuple[str, int]],
    since: int,
) -> None:
    """:func:`judge_keys` for the ledger entries of source ``s`` whose outcome disagreed: the
    mapping's outcome before the fence (``out``) and after it (``outcomes_now``) against sync's
    record (outcome, LSN) read in between; one recorded by a change the earlier snapshot did
    not see (above ``since``) waits for the next round, as a target row does."""
    for e in list(pending):
        o1, o2 = out[e], outcomes_now.get(e, "mapped")
        got, at = recorded[e]
        if o1 != o2 or (got != o2 and at > since):  # changed meanwhile, or A -> B -> A
            out[e] = o2
            continue
        pending.discard(e)
        if got != o2:
            check.entries.setdefault(s, {})[e] = (o2, got)


def recorded_outcome(account: Any, entry: str) -> str:
    if entry in account.ledger_dead:
        return "rejected"
    return "filtered" if entry in account.ledger_filtered else "mapped"


def shown(v: Any) -> Any:
    s = v if v is None or isinstance(v, int | float | bool) else str(v)
    return clip(s) if isinstance(s, str) else s


def mapped_report(t: str, first: Any, check: MappedCheck) -> TableReport:
    """The report of one mapped target from the first run and what the re-check decided (pure:
    counts, the ledger disagreements as one error line per source, the first examples)."""
    from crossfade.verify.mapped import EXAMPLES

    last = check.last
    r, r1 = last.targets[t], first.targets[t]
    accounts = [last.accounts[s] for s in r.sources if s in last.accounts]
    confirmed = check.confirmed.get(t, {})
    unsettled = check.unsettled.get(t, {})
    kinds = list(confirmed.values())
    # keys past MAX_KEYS were only counted in the first pass: reported as found there
    over = {
        k: getattr(r1, f"n_{k}") - sum(1 for v in r1.differing.values() if v == k)
        for k in ("missing", "extra", "different")
    }
    problems = []
    for a in accounts:
        bad = check.entries.get(a.table, {})
        dead_not = sorted(e for e, (want, got) in bad.items() if want == "rejected")
        maps_now = sorted(e for e, (want, got) in bad.items() if got == "rejected")
        filt = sorted(e for e, (want, got) in bad.items() if "filtered" in (want, got))
        parts = []
        if dead_not:
            parts.append(
                f"{len(dead_not)} row(s) the mapping rejects are not dead letters (e.g. "
                f"{dead_not[:3]}; sync has not dead-lettered them)"
            )
        if maps_now:
            parts.append(
                f"{len(maps_now)} dead letter(s) map now (e.g. {maps_now[:3]}): "
                "run `crossfade dlq replay`"
            )
        if filt:
            parts.append(
                f"{len(filt)} row(s) filtered differently than sync recorded (e.g. {filt[:3]})"
            )
        n_uns = len(check.unsettled_entries.get(a.table, set()))
        if n_uns:
            parts.append(f"{n_uns} ledger entr(ies) kept changing: unsettled")
        if parts:
            problems.append(f"{a.table}: " + "; ".join(parts))
    examples: list[dict[str, Any]] = []
    for k, kind in [*confirmed.items(), *unsettled.items()][:EXAMPLES]:
        ex: dict[str, Any] = {"key": dict(zip(r1.key, k, strict=True)), "kind": kind}
        e, got = check.rows.get((t, k), (None, None))
        if kind == "different" and e is not None and got is not None:
            ex["columns"] = {
                c: {"source": shown(a), "target": shown(b)}
                for c, a, b in zip(r1.cols, e, got, strict=True)
                if a != b
            }
        examples.append(ex)
    return TableReport(
        t,
        source_rows=sum(a.source_rows for a in accounts),
        target_rows=r.target_rows,
        missing=kinds.count("missing") + over["missing"],
        extra=kinds.count("extra") + over["extra"],
        different=kinds.count("different") + over["different"],
        unsettled=len(unsettled),
        unchecked=sum(over.values()),
        candidates=len(r1.differing),
        in_flight=check.in_flight.get(t, 0),
        seconds=sum(x.seconds for x in {id(first): first, id(last): last}.values()),
        examples=examples,
        error="; ".join(problems) or None,
        mapped={
            "sources": r.sources,
            "expected_rows": r.expected_rows,
            "merged_duplicates": r.merged,
            "accounting": [a.as_dict() for a in accounts],
        },
    )


def as_found(
    tgt: Any, first: Any, keys: dict[str, dict[Key, str]], entries: dict[str, set[str]]
) -> MappedCheck:
    """The differences of a mapped run taken as they are (no re-check: a quiet source, or
    writes frozen and fenced), with the rows of their first examples."""
    from psycopg import sql

    from crossfade.verify.expected import rows_of
    from crossfade.verify.mapped import EXAMPLES

    check = MappedCheck(first)
    check.confirmed = keys
    for t, ks in keys.items():
        r = first.targets[t]
        assert r.shape is not None
        sample = list(ks)[:EXAMPLES]
        got = rows_of(tgt, sql.Identifier(*t.split(".", 1)), r.shape, r.key, r.cols, sample)
        for k in sample:
            check.rows[(t, k)] = (first.expected[t].get(k), got[k])
    for s, es in entries.items():
        a = first.accounts[s]
        check.entries[s] = {e: (a.outcome(e), recorded_outcome(a, e)) for e in es}
    return check
