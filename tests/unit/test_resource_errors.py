"""A target server short of a resource (SQLSTATE class 53, e.g. ``out of shared memory`` when
its lock table is full) is retried like any transient error, but sync says at ERROR, from the
third retry on, that it makes no progress, with the server's hint (what to raise); other
transient errors stay at WARNING. Before this, 53200 was retried forever at WARNING with the hint
dropped (a 1M-row mapped load, issue 22)."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace

import psycopg
import pytest

from crossfade.errors import classify_db_error, lacks_resource, one_line
from crossfade.sync.worker import RESOURCE_RETRIES_BEFORE_ERROR, SyncWorker


def _raise(dsn: str, sqlstate: str, hint: str) -> psycopg.Error:
    with psycopg.connect(dsn) as c:
        try:
            c.execute(
                f"DO $$ BEGIN RAISE EXCEPTION 'out of shared memory' USING ERRCODE = '{sqlstate}', "
                f"HINT = '{hint}'; END $$"
            )
        except psycopg.Error as exc:
            return exc
    raise AssertionError("no error raised")


def test_a_server_short_of_a_resource_is_transient_and_named_with_its_hint(dsn: str) -> None:
    exc = _raise(dsn, "53200", "You might need to increase max_locks_per_transaction.")
    assert classify_db_error(exc) == "transient" and lacks_resource(exc)
    assert one_line(exc) == (
        "OutOfMemory: out of shared memory "
        "(hint: You might need to increase max_locks_per_transaction.)"
    )
    other = _raise(dsn, "40001", "try again")
    assert not lacks_resource(other) and not lacks_resource(ValueError("53"))


@pytest.mark.parametrize(("sqlstate", "escalates"), [("53200", True), ("40001", False)])
def test_sync_escalates_a_resource_shortage_to_error_after_some_retries(
    dsn: str, sqlstate: str, escalates: bool, caplog: pytest.LogCaptureFixture
) -> None:
    exc = _raise(dsn, sqlstate, "raise it")
    fails = RESOURCE_RETRIES_BEFORE_ERROR + 1
    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= fails:
            raise exc
        return "applied"

    fake = SimpleNamespace(stats=SimpleNamespace(retries=0), conn=None, stop=threading.Event())
    with caplog.at_level(logging.WARNING, logger="crossfade.sync.worker"):
        assert SyncWorker._with_db_retry(fake, fn) == "applied"  # type: ignore[arg-type]
    levels = [r.levelno for r in caplog.records if "transient error" in r.getMessage()]
    assert len(levels) == fails and fake.stats.retries == fails
    first_error = RESOURCE_RETRIES_BEFORE_ERROR - 1
    if escalates:
        assert levels[:first_error] == [logging.WARNING] * first_error
        assert set(levels[first_error:]) == {logging.ERROR}
        assert "hint: raise it" in caplog.records[-1].getMessage()
        assert "no progress" in caplog.records[-1].getMessage()
    else:
        assert set(levels) == {logging.WARNING}
