"""The COPY load's relay (crossfade.capture.copy_worker.relay) reads the source's rows from libpq
directly: every row passed on in order, in text and binary, a source that fails at the start or
mid-stream raises its own error and leaves nothing in the target, and the stream processes that
capture starts before it has work exit cleanly when given none."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from crossfade.capture.copy_stream import CopyStream
from crossfade.capture.copy_worker import relay
from crossfade.embedded import EmbeddedPostgres


@pytest.fixture
def pair(pg_server: EmbeddedPostgres):  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    pg_server.create_database(f"relay_src_{tag}")
    pg_server.create_database(f"relay_tgt_{tag}")
    src = psycopg.connect(pg_server.dsn(f"relay_src_{tag}"))
    tgt = psycopg.connect(pg_server.dsn(f"relay_tgt_{tag}"), autocommit=True)
    src.execute("CREATE TABLE t (id int PRIMARY KEY, s text, b bytea, n numeric, ts timestamptz)")
    # rows over several of the relay's 256 KiB blocks, and values that text COPY escapes
    src.execute(
        "INSERT INTO t SELECT g, repeat(E'x\\t\\n\\\\', g % 50) || g, "
        "decode(md5(g::text), 'hex'), g * 1.5, '2020-01-01'::timestamptz + g * interval '1 s' "
        "FROM generate_series(1, 30000) g"
    )
    src.commit()
    tgt.execute("CREATE TABLE t (id int PRIMARY KEY, s text, b bytea, n numeric, ts timestamptz)")
    yield src, tgt
    src.close()
    tgt.close()


def _digest(conn: psycopg.Connection) -> tuple[int, str]:
    row = conn.execute(
        "SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM t"
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


@pytest.mark.parametrize("fmt", ["", " (FORMAT binary)"])
def test_relay_passes_every_row_on(pair, fmt: str) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    n = relay(src, tgt, f"COPY t TO STDOUT{fmt}", f"COPY t FROM STDIN{fmt}")
    assert n == 30000
    assert _digest(tgt) == _digest(src)
    # the source's session is usable after the COPY (its result read to the end)
    assert src.execute("SELECT count(*) FROM t").fetchone() == (30000,)


def test_a_source_failing_mid_stream_raises_its_error_and_copies_nothing(pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    with pytest.raises(psycopg.errors.DivisionByZero):
        relay(
            src,
            tgt,
            "COPY (SELECT id, s, b, n / (id - 20000), ts FROM t ORDER BY id) TO STDOUT",
            "COPY t FROM STDIN",
        )
    assert _digest(tgt)[0] == 0  # the target's transaction rolled back


def test_a_source_failing_at_the_start_raises_its_error(pair) -> None:  # type: ignore[no-untyped-def]
    src, tgt = pair
    with pytest.raises(psycopg.errors.UndefinedColumn):
        relay(src, tgt, "COPY (SELECT nope FROM t) TO STDOUT", "COPY t FROM STDIN")
    assert _digest(tgt)[0] == 0


def test_a_stream_given_no_work_exits_cleanly() -> None:
    stream = CopyStream()
    try:
        stream.finish()  # raises when the worker exits non-zero
        assert stream.proc.returncode == 0
    finally:
        stream.close()
