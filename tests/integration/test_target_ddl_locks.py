"""The target's DDL takes no table lock it does not need (issue 22: the time to the first fence).

A sync worker starting beside capture's COPY load runs :func:`ensure_target_table` on every table
while the load's COPY streams write into them. ``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` takes
its ACCESS EXCLUSIVE lock before it looks whether the column exists: sync then waited for a
table's whole COPY (the load's next chunks of that table queued behind the wait), and joined its
consumer group only after the load. Only PostgreSQL is needed here.
"""

from __future__ import annotations

import itertools

import psycopg
import pytest

from crossfade.embedded import EmbeddedPostgres
from crossfade.target.ddl import ensure_target_table

_n = itertools.count(1)


def test_ensure_target_table_does_not_wait_for_a_copy_in_flight(
    pg_server: EmbeddedPostgres,
) -> None:
    n = next(_n)
    src_db, tgt_db = f"ddl_lock_src_{n}", f"ddl_lock_tgt_{n}"
    pg_server.create_database(src_db)
    pg_server.create_database(tgt_db)
    ddl = "CREATE TABLE public.{} (id int PRIMARY KEY, v text)"
    with (
        psycopg.connect(pg_server.dsn(src_db), autocommit=True) as src,
        psycopg.connect(pg_server.dsn(tgt_db), autocommit=True) as tgt,
        psycopg.connect(pg_server.dsn(tgt_db)) as copy,
    ):
        for t in ("loading", "older"):
            src.execute(ddl.format(t))
        # "loading" as the COPY load made it (with _cf_pos); "older" from before _cf_pos existed
        ensure_target_table(src, tgt, "public.loading", "public.loading", create=True)
        tgt.execute(ddl.format("older"))
        # a COPY chunk in flight: its transaction holds ROW EXCLUSIVE on the table until it commits
        copy.execute("INSERT INTO public.loading (id, v, _cf_pos) VALUES (1, 'a', 1)")
        tgt.execute("SET lock_timeout = '3s'")
        try:
            shape = ensure_target_table(src, tgt, "public.loading", "public.loading", create=True)
        except psycopg.errors.LockNotAvailable:
            pytest.fail(
                "ensure_target_table waited for the COPY's lock on a table it need not change"
            )
        assert shape.pk == ("id",) and [c.name for c in shape.columns] == ["id", "v"]
        copy.rollback()
        # a table without _cf_pos still gets it
        ensure_target_table(src, tgt, "public.older", "public.older", create=True)
        assert tgt.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.older'::regclass "
            "AND attname = '_cf_pos' AND NOT attisdropped"
        ).fetchone() == (1,)
