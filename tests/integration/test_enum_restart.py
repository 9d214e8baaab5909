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
