"""ledger_positions (issue 22): the lookup every mapped batch makes before mapping (which of its
keys the ledger already holds, at what position) must answer exactly the ledger's rows of the
entries asked, and read only those rows whatever the ledger's statistics say. During a load the
ledger grows faster than autovacuum analyzes it; ``entry = ANY($2)`` was then planned as a scan
of all the table's ledger rows, each compared with every entry asked (1.3 s for 1276 keys at 27k
rows in bench.mapped_load, the target's top statement)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from crossfade.target.store import ensure_schema
from crossfade.target.store.ledger import ledger_positions

BK = "ll_crossfade"
ACCOUNTS, CONTACTS = "public.accounts", "public.contacts"


@pytest.fixture
def db(dsn: str) -> Iterator[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {BK} CASCADE")
        ensure_schema(c, BK)
        # the statistics stay what they were when the ledger was empty (a load outruns them)
        c.execute(f"ALTER TABLE {BK}.ledger SET (autovacuum_enabled = false)")
        c.execute(f"ANALYZE {BK}.ledger")
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS {BK} CASCADE")


def _fill(c: psycopg.Connection, table: str, n: int, outcome: str = "mapped") -> None:
    c.execute(
        f"INSERT INTO {BK}.ledger (source_table, entry, position, outcome) "
        "SELECT %s, '[' || g || ']', 1000 + g, %s FROM generate_series(1, %s) g",
        (table, outcome, n),
    )


def test_answers_are_the_ledger_rows_of_the_entries_asked(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as c:
        _fill(c, ACCOUNTS, 50)
        _fill(c, CONTACTS, 10, "filtered")  # the same entries in another table
        c.execute(
            f"UPDATE {BK}.ledger SET outcome = 'dead_letter', rule = 'r1' "
            "WHERE source_table = %s AND entry = '[7]'",
            (ACCOUNTS,),
        )
        asked = ["[7]", "[3]", "[3]", "[999]", "[50]", '["x"]', "[1]"]  # a repeat, two missing
        got = ledger_positions(c, BK, ACCOUNTS, asked)
        # what a plain one-row look-up of each entry answers
        plain = {}
        for e in asked:
            row = c.execute(
                f"SELECT position, outcome, rule FROM {BK}.ledger "
                "WHERE source_table = %s AND entry = %s",
                (ACCOUNTS, e),
            ).fetchone()
            if row is not None:
                plain[e] = (row[0], row[1], row[2])
        assert got == plain
        assert got == {
            "[7]": (1007, "dead_letter", "r1"),
            "[3]": (1003, "mapped", None),
            "[50]": (1050, "mapped", None),
            "[1]": (1001, "mapped", None),
        }
        assert ledger_positions(c, BK, CONTACTS, ["[3]", "[50]"]) == {
            "[3]": (1003, "filtered", None)
        }
        assert ledger_positions(c, BK, ACCOUNTS, []) == {}


def test_the_lookup_reads_only_the_rows_asked_for_on_stale_statistics(db: str) -> None:
    rows = 20_000
    with psycopg.connect(db) as c:
        _fill(c, ACCOUNTS, rows)  # after the ANALYZE: the planner thinks the ledger is empty
        c.commit()
        # a batch's keys: most new (an initial load), some in the ledger; several batches, so
        # the statement is prepared (psycopg) and its generic plan may be chosen (PostgreSQL)
        for batch in range(8):
            asked = [f"[{rows + batch * 1000 + i}]" for i in range(1, 991)]
            asked += [f"[{batch * 1000 + i}]" for i in range(1, 11)]
            before = _rows_read(c)
            got = ledger_positions(c, BK, ACCOUNTS, asked)
            read = _rows_read(c) - before
            assert len(got) == 10, batch
            # one probe per entry: the rows found, not the table's 20000 ledger rows
            assert read <= 2 * len(got), (batch, read)
        c.rollback()


def _rows_read(c: psycopg.Connection) -> int:
    """Ledger rows this transaction has read so far (by scans and by index fetches)."""
    row = c.execute(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_xact_user_tables WHERE schemaname = %s AND relname = 'ledger'",
        (BK,),
    ).fetchone()
    assert row is not None
    return int(row[0])
