"""write_ledger (issue 22): set-based (a COPY into a staging table, then one merge) it must
leave exactly the ledger rows the row-by-row upsert it replaced left: new rows, updates (the
outcome's ``first_at`` kept or restarted, a deferral's deadline kept), a stale row (an older
position) that must not overwrite, an equal position that does, an entry given several times in
one batch (each over the row before it, stale ones refused). The old statement is kept here,
verbatim, as the reference; both run in one transaction, so ``now()`` is the same for both."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.target.store.ledger import HELD, Held, Origin, write_ledger

OLD, NEW = "wl_old_crossfade", "wl_new_crossfade"
A, B = "public.accounts", "public.contacts"


@pytest.fixture
def db(fresh_bookkeeping: Callable[..., str]) -> str:
    return fresh_bookkeeping(OLD, NEW)


def old_write_ledger(conn: psycopg.Connection, schema: str, held: list[Held]) -> None:
    """The row-by-row write_ledger ran before, verbatim."""
    stmt = sql.SQL(
        """INSERT INTO {bk}.ledger AS l (source_table, entry, position, outcome, source_key, rule, reason, failures,
               topic, partition, "offset", key, value, headers, deadline)
           VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s, now() + make_interval(secs => %s))
           ON CONFLICT (source_table, entry) DO UPDATE SET position = EXCLUDED.position, outcome = EXCLUDED.outcome,
               source_key = EXCLUDED.source_key, rule = EXCLUDED.rule, reason = EXCLUDED.reason,
               failures = EXCLUDED.failures, topic = EXCLUDED.topic, partition = EXCLUDED.partition,
               "offset" = EXCLUDED."offset", key = EXCLUDED.key, value = EXCLUDED.value, headers = EXCLUDED.headers,
               first_at = CASE WHEN l.outcome = EXCLUDED.outcome THEN l.first_at ELSE now() END,
               deadline = CASE WHEN l.outcome = 'deferred' AND EXCLUDED.outcome = 'deferred' THEN l.deadline
                               ELSE EXCLUDED.deadline END,
               at = now()
           WHERE l.position <= EXCLUDED.position"""
    ).format(bk=sql.Identifier(schema))
    params = []
    for h in held:
        keep = h.outcome in (*HELD, "held")
        o = (
            h.origin
            if h.outcome in ("dead_letter", "deferred", "held", "parent_left")
            or (h.keep_origin and h.outcome in ("mapped", "replayed"))
            else None
        )
        params.append(
            (
                h.source_table,
                h.entry,
                h.position,
                h.outcome,
                Jsonb(h.source_key) if h.source_key is not None else None,
                h.rule if keep else None,
                h.reason if keep else None,
                Jsonb(h.failures) if keep and h.failures else None,
                o.topic if o else None,
                o.partition if o else None,
                o.offset if o else None,
                o.key if o else None,
                o.value if o else None,
                Jsonb(o.headers) if o else None,
                h.window_s if h.outcome == "deferred" else None,
            )
        )
    with conn.cursor() as cur:
        cur.executemany(stmt, params)


def _rows(c: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    return c.execute(f"SELECT * FROM {schema}.ledger ORDER BY source_table, entry").fetchall()


def _o(n: int) -> Origin:
    return Origin("cdc.accounts", n % 3, 100 + n, f"k{n}".encode(), b"\x00v\xff" * n, {"h": str(n)})


def _h(entry: str, pos: int, outcome: str, table: str = A, **kw: Any) -> Held:
    kw.setdefault("source_key", [entry])
    if outcome in (*HELD, "held"):
        kw.setdefault("rule", "r_" + outcome)
        kw.setdefault("reason", f"{entry} at {pos}")
        kw.setdefault("failures", [{"rule": "r_" + outcome, "column": "c"}])
        kw.setdefault("origin", _o(pos))
    return Held(table, entry, pos, outcome, **kw)


SEED = [
    _h("e1", 10, "mapped"),
    _h("e2", 10, "dead_letter"),
    _h("e3", 10, "deferred", window_s=60),
    _h("e4", 50, "filtered"),
    _h("e5", 10, "mapped"),
    _h("e1", 10, "deferred", table=B, window_s=5),
]
BATCH = [
    _h("e1", 20, "mapped"),  # same outcome: first_at kept
    _h("e2", 20, "mapped"),  # resolved: details and bytes go, first_at restarts
    _h("e3", 20, "deferred", window_s=999),  # still deferred: the first deadline stays
    _h("e4", 40, "mapped"),  # stale: refused
    _h("e5", 10, "replayed", keep_origin=True, origin=_o(5)),  # an equal position passes
    _h("e6", 30, "deferred", window_s=30),
    _h("e7", 31, "held", origin=_o(7)),
    _h("@cdc.accounts/0/7", 32, "dead_letter", source_key=None),
    # one entry several times: each over the row before it, the stale one refused, the
    # deferral's deadline the first of the run of deferrals
    _h("e8", 5, "mapped"),
    _h("e8", 7, "deferred", window_s=10),
    _h("e8", 6, "dead_letter"),
    _h("e8", 9, "deferred", window_s=20),
    _h("e9", 3, "dead_letter"),
    _h("e9", 2, "mapped"),
    _h("e1", 9, "filtered", table=B),  # stale in another table
    _h("e1", 11, "filtered", table=B),
    _h("e1", 12, "filtered", table=B),
]


def test_the_ledger_written_set_based_matches_the_row_by_row_upsert(db: str) -> None:
    with psycopg.connect(db) as c:
        for s in (OLD, NEW):
            old_write_ledger(c, s, SEED)
        c.commit()
        seeded = {(r[0], r[1]): r for r in _rows(c, NEW)}
        time.sleep(0.05)  # the batch's now() after the seed's
        old_write_ledger(c, OLD, BATCH)
        write_ledger(c, NEW, BATCH)
        now = c.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        assert _rows(c, NEW) == _rows(c, OLD)
        c.commit()
        got = {(r[0], r[1]): r for r in _rows(c, NEW)}
        assert _rows(c, NEW) == _rows(c, OLD) and len(got) == 11
    # spot checks of what the batch means (the reference could be wrong too): position,
    # outcome, rule, first_at, deadline
    cols = [14, 16]  # first_at, deadline

    def pick(k: tuple[str, str]) -> tuple[Any, ...]:
        r = got[k]
        return (r[2], r[3], r[5], *(r[i] for i in cols))

    s = {k: (r[2], r[3], r[5], *(r[i] for i in cols)) for k, r in seeded.items()}
    assert pick((A, "e1")) == (20, "mapped", None, s[(A, "e1")][3], None)
    assert pick((A, "e2")) == (20, "mapped", None, now, None) and got[(A, "e2")][11] is None
    assert pick((A, "e3")) == (20, "deferred", "r_deferred", s[(A, "e3")][3], s[(A, "e3")][4])
    assert got[(A, "e4")] == seeded[(A, "e4")]
    assert pick((A, "e5"))[:2] == (10, "replayed") and bytes(got[(A, "e5")][12]) == b"\x00v\xff" * 5
    e8 = pick((A, "e8"))
    assert e8[:3] == (9, "deferred", "r_deferred") and e8[3] == now
    assert (e8[4] - now).total_seconds() == 10
    assert pick((A, "e9"))[:2] == (3, "dead_letter")
    assert pick((B, "e1"))[:2] == (12, "filtered") and pick((B, "e1"))[3] == now


def test_autocommit_and_empty_batches(db: str) -> None:
    """Out of a transaction the stage and its merge run in one; no rows: nothing happens."""
    with psycopg.connect(db, autocommit=True) as c:
        write_ledger(c, NEW, [])
        write_ledger(c, NEW, SEED[:3])
        write_ledger(c, NEW, [_h("e1", 11, "mapped"), _h("e1", 12, "deferred", window_s=1)])
        assert [(r[1], r[2], r[3]) for r in _rows(c, NEW)] == [
            ("e1", 12, "deferred"),
            ("e2", 10, "dead_letter"),
            ("e3", 10, "deferred"),
        ]
