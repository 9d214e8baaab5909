"""A label added to a source enum, then capture restarted: the restarted capture must go on
(found by the random fault rounds, seed 1049786793)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.integration


def test_capture_restarts_after_an_enum_label_was_added(stack: Any) -> None:
    stack.sql("CREATE TYPE mood AS ENUM ('sad', 'ok')")
    stack.sql("CREATE TABLE public.e (id int PRIMARY KEY, m mood)")
    stack.sql("INSERT INTO e VALUES (1, 'sad'), (2, 'ok')")
    stack.write_config(["public.e"])
    cap = stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.sql("ALTER TYPE mood ADD VALUE 'happy'")
    stack.sql("INSERT INTO e VALUES (3, 'happy')")
    stack.fence()
    cap.kill()
    stack.start("capture")
    stack.sql("INSERT INTO e VALUES (4, 'happy'), (5, 'sad')")
    stack.fence()
    stack.assert_equal()


def test_add_column_and_enum_label_in_one_batch(stack: Any) -> None:
    """A batch that adds a column and then meets a new enum label is rolled back, the label
    added, and applied again: the retry must add the column again (the first ADD COLUMN went
    with the rollback). Found by a random fault round (seed 243339630)."""
    stack.sql("CREATE TYPE mood2 AS ENUM ('sad', 'ok')")
    stack.sql("CREATE TABLE public.e2 (id int PRIMARY KEY, m mood2)")
    stack.sql("INSERT INTO e2 VALUES (1, 'sad'), (2, 'ok')")
    stack.write_config(["public.e2"])
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    sync.stop()
    # both changes wait in the topic: the restarted worker reads them in one batch
    stack.sql("ALTER TABLE e2 ADD COLUMN note text")
    stack.sql("INSERT INTO e2 VALUES (3, 'ok', 'with a note')")
    stack.sql("ALTER TYPE mood2 ADD VALUE 'happy'")
    stack.sql("INSERT INTO e2 VALUES (4, 'happy', 'new label')")
    stack.sql("UPDATE e2 SET note = 'touched' WHERE id = 1")
    stack.start("sync")
    stack.fence()
    stack.assert_equal()


def test_enum_whose_schema_and_name_hold_a_dot(stack: Any) -> None:
    """Issue 18: an enum in a schema whose name holds a dot broke target table creation (the
    qualified name was split at the first dot). Schema and name are quoted apart now. Debezium
    itself cannot read such a type (it leaves the column out of its events), so capture refuses
    the table before it starts, naming the column."""
    from crossfade.catalog import read_shape
    from crossfade.target.ddl import ensure_target_table, sync_enum

    stack.sql('CREATE SCHEMA "odd.schema"')
    stack.sql("CREATE TYPE \"odd.schema\".\"mood.v2\" AS ENUM ('sad', 'ok')")
    stack.sql('CREATE TABLE public.e3 (id int PRIMARY KEY, m "odd.schema"."mood.v2")')
    stack.write_config(["public.e3"])
    with stack.src() as src, stack.tgt() as tgt:
        tgt.autocommit = True
        ensure_target_table(src, tgt, "public.e3", "public.e3", create=True)
        src.execute('ALTER TYPE "odd.schema"."mood.v2" ADD VALUE \'happy\'')
        src.commit()
        shape = read_shape(src, "public.e3")
        assert shape is not None and shape.column("m").enum == ("odd.schema", "mood.v2")
        assert sync_enum(src, tgt, ("odd.schema", "mood.v2"))  # the new label reached the target
        tgt.execute("INSERT INTO public.e3 (id, m) VALUES (1, 'happy')")
        assert tgt.execute(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute "
            "WHERE attrelid = 'public.e3'::regclass AND attname = 'm'"
        ).fetchone() == ('"odd.schema"."mood.v2"',)
    cp = stack.cli("capture", timeout=120)
    assert cp.returncode == 3, cp.stdout + cp.stderr
    line = cp.stderr.strip().splitlines()[-1]
    assert "public.e3.m" in line and "Debezium cannot read it" in line, line
