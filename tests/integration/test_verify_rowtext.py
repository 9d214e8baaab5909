"""verify's range checksums hash a row's text: columns of one type on both sides by their type's
output (the faster form), columns whose types differ by ``::text``. Both must still see every
difference and no false one, against the embedded PostgreSQL (no broker needed)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest

from crossfade.catalog import read_shape
from crossfade.embedded.postgres import EmbeddedPostgres
from crossfade.verify.chunked import TableComparer, prepare_session

pytestmark = pytest.mark.integration

_COLS = "id int PRIMARY KEY, b bool, c char(5), ip inet, n numeric, j jsonb, arr text[], d date, pad {pad}"
_ROWS = (
    "INSERT INTO t SELECT g, g % 2 = 0, left(md5(g::text), 3), ('10.0.' || (g % 250) || '.1')::inet, g * 1.25, "
    "jsonb_build_object('k', g, 's', 'a,b\"c'), ARRAY['x', NULL, 'y,z'], DATE '2020-01-01' + g, {pad} FROM generate_series(1, 3000) g"
)


@pytest.fixture
def dbs(pg_server: EmbeddedPostgres) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    names = [f"rowtext_{side}_{time.monotonic_ns()}" for side in ("src", "tgt")]
    for n in names:
        pg_server.create_database(n)
    src, tgt = (psycopg.connect(pg_server.dsn(n), autocommit=True) for n in names)
    # pad: char(4) in the source, text in the target (what a hand-made target may hold)
    src.execute("CREATE TABLE t (" + _COLS.format(pad="char(4)") + ")")
    tgt.execute("CREATE TABLE t (" + _COLS.format(pad="text") + ")")
    src.execute(_ROWS.format(pad="'ab'"))  # stored blank-padded: 'ab  '
    tgt.execute(_ROWS.format(pad="'ab'"))  # no padding: equal to the source's by ::text only
    for c in (src, tgt):
        prepare_session(c)
    yield src, tgt
    src.close()
    tgt.close()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as c:
        for n in names:
            c.execute(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)")


def _compare(src: psycopg.Connection, tgt: psycopg.Connection) -> TableComparer:
    shape, tshape = read_shape(src, "public.t"), read_shape(tgt, "public.t")
    assert shape is not None and tshape is not None
    comparer = TableComparer(src, tgt, shape, target_shape=tshape, chunk_rows=500, leaf_rows=50)
    comparer.run()
    return comparer


def test_same_type_columns_by_their_output_others_by_text(
    dbs: tuple[psycopg.Connection, psycopg.Connection],
) -> None:
    src, tgt = dbs
    comparer = _compare(src, tgt)
    assert comparer._same_type == {
        "id",
        "b",
        "c",
        "ip",
        "n",
        "j",
        "arr",
        "d",
    }  # not pad: char(4) vs text
    res = comparer.result
    assert (res.source_rows, res.target_rows) == (3000, 3000)
    assert res.chunks_differing == 0 and not res.keys, res.keys


def test_every_kind_of_difference_is_found(
    dbs: tuple[psycopg.Connection, psycopg.Connection],
) -> None:
    src, tgt = dbs
    tgt.execute("UPDATE t SET b = NOT b WHERE id = 3")
    tgt.execute("UPDATE t SET ip = '10.0.3.2' WHERE id = 1003")
    tgt.execute(
        "UPDATE t SET n = 1.250 WHERE id = 1"
    )  # equal as numbers, not as text: a difference
    tgt.execute(
        "UPDATE t SET arr = ARRAY['x', 'NULL', 'y,z'] WHERE id = 2000"
    )  # the string 'NULL' is not NULL
    tgt.execute("UPDATE t SET c = NULL WHERE id = 2500")
    tgt.execute(
        "UPDATE t SET pad = 'ab ' WHERE id = 2999"
    )  # text keeps the blank: not 'ab' any more
    tgt.execute("DELETE FROM t WHERE id = 77")
    tgt.execute("INSERT INTO t (id) VALUES (5000)")
    res = _compare(src, tgt).result
    found = {k[0]: why for k, why in res.keys.items()}
    assert found == {
        "3": "different",
        "1003": "different",
        "1": "different",
        "2000": "different",
        "2500": "different",
        "2999": "different",
        "77": "missing",
        "5000": "extra",
    }, found
