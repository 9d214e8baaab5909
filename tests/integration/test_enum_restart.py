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
