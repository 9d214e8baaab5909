"""A float column's NaN and infinities in a deduplicated target (FAULTS 24): the live regroup
(crossfade.sync.sinks.dedup.DedupWriter, which regroups members read back from
``dedup_members``' jsonb, where they are stored as the strings ``to_jsonb`` writes) leaves the
groups and golden records the batch Deduper (audit, dry-run, verify) computes from the mapped
rows in memory: an exact rule on a float column does not match NaN with NaN (the text ``'NaN'``
would), ``longest`` finds ``nan`` and ``inf`` equally long (the text ``'Infinity'`` is longer)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from crossfade.catalog import read_shape
from crossfade.config.mapping import DedupSpec
from crossfade.mapping.dedup import Deduper
from crossfade.mapping.engine import Mapper
from crossfade.sync.sinks.dedup import DedupWriter
from crossfade.sync.sinks.mapped_source import RowChange
from crossfade.target.store import ensure_schema

BK = "dnf_crossfade"
T = "dnf_app.readings"
COLS = ("id", "score", "ratio", "seen")
SPEC = DedupSpec.model_validate(
    {
        "match": [{"name": "same-score", "all": [{"column": "score"}]}],
        "survivorship": {"recency": "seen", "columns": {"ratio": "longest"}},
    }
)
NAN, INF = math.nan, math.inf
ROWS = [
    {"id": 1, "score": 1.5, "ratio": NAN, "seen": 1},
    {"id": 2, "score": 1.5, "ratio": INF, "seen": 2},
    {"id": 3, "score": 1.5, "ratio": None, "seen": 3},
    {"id": 4, "score": NAN, "ratio": 1.0, "seen": 1},
    {"id": 5, "score": NAN, "ratio": 2.0, "seen": 2},
    {"id": 6, "score": -INF, "ratio": -INF, "seen": 1},
    {"id": 7, "score": -INF, "ratio": NAN, "seen": 2},
]


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS dnf_app CASCADE; DROP SCHEMA IF EXISTS {BK} CASCADE")
        c.execute(
            "CREATE SCHEMA dnf_app; CREATE TABLE dnf_app.readings (id bigint PRIMARY KEY, "
            "score float8, ratio real, seen bigint, _cf_pos numeric)"
        )
        ensure_schema(c, BK)
    c = psycopg.connect(dsn)
    yield c
    c.close()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS dnf_app CASCADE; DROP SCHEMA IF EXISTS {BK} CASCADE")


def _text(v: Any) -> str | None:
    return None if v is None else repr(float(v))


def test_live_regroup_of_nan_and_infinities_as_in_memory(conn: psycopg.Connection) -> None:
    writer = DedupWriter(
        read_shape(conn, T),
        ("id",),
        COLS,
        SPEC,
        Mapper(None, ["public.readings"], {"public.readings": ["id"]}),
        BK,
    )
    for pos, r in enumerate(ROWS, 1):  # one batch each: every regroup reads members back
        with conn.transaction():
            writer.apply(conn, [RowChange((r["id"],), dict(r), pos)])

    d = Deduper(T, SPEC, keep=list(COLS), key_columns=["id"])
    for r in ROWS:
        d.add((r["id"],), r, T)
    groups = d.groups()
    merged = {m.key[0] for g in groups for m in g.members if m is not g.survivor}
    want = {r["id"]: (_text(r["score"]), _text(r["ratio"])) for r in ROWS if r["id"] not in merged}
    for g in groups:
        want[g.survivor.key[0]] = (_text(g.golden["score"]), _text(g.golden["ratio"]))
    got = {
        k: (_text(s), _text(r))
        for k, s, r in conn.execute("SELECT id, score, ratio FROM dnf_app.readings")
    }
    conn.commit()
    # NaN scores do not match each other; -inf ones do; 1's NaN is as long as 2's inf
    assert want == {
        1: ("1.5", "nan"),
        4: ("nan", "1.0"),
        5: ("nan", "2.0"),
        6: ("-inf", "-inf"),
    }
    assert got == want
