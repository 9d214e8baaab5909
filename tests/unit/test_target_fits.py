"""A mapped value longer than its target column (``varchar(n)``, ``char(n)``, ``bit varying(n)``)
is never cut: the dedup sink writes golden records with explicit casts, and PostgreSQL's explicit
cast to ``varchar(5)`` truncates without a word (an assignment raises). Such a row is a dead
letter naming the table, the column, the limit and the length, on the dedup path and the plain
path alike (the plain path's COPY raised and stopped sync); audit and dry-run say it too."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from crossfade.catalog import Column, TableShape, read_shape, uncut
from crossfade.config.mapping import DedupSpec, MappingConfig
from crossfade.events.model import ChangeEvent
from crossfade.mapping.engine import Mapped, Mapper, Rejected
from crossfade.mapping.schema_check import load_mapper
from crossfade.mapping.target_fit import require_target
from crossfade.sync.key_text import key_text
from crossfade.sync.parents import TargetParents
from crossfade.sync.sinks.dedup import DedupWriter
from crossfade.sync.sinks.mapped_source import MappedResult, RowChange, build_mapped
from crossfade.target.store import ensure_schema, orphaned_parent_values
from crossfade.target.store.tombstones import delete_leaving_tombstones

BK = "tf_crossfade"
SRC = "tf_src.people"
ITEMS = "tf_src.items"
MAPPING = {
    "tables": {
        SRC: {
            "targets": [
                {
                    "table": "tf_app.people",
                    "columns": {
                        "person_id": "id",
                        "full_name": "name",
                        "email": "email",
                        "updated_at": "updated_at",
                    },
                },
            ]
        },
        ITEMS: {
            "targets": [
                {
                    "table": "tf_app.plain",
                    "columns": {
                        "id": "id",
                        "full_name": "name",
                        "code": "code",
                        "amount": "amount",
                    },
                }
            ]
        },
    },
    "dedup": {
        "tf_app.people": {
            "match": [{"name": "same-email", "all": [{"column": "email"}]}],
            "survivorship": {
                "recency": "updated_at",
                "survivor": "oldest",
                "default": "most_recent_non_empty",
            },
        }
    },
}


@pytest.fixture
def db(dsn: str) -> Iterator[str]:
    drop = f"DROP SCHEMA IF EXISTS tf_src, tf_app, {BK} CASCADE"
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(drop)
        c.execute("CREATE SCHEMA tf_src; CREATE SCHEMA tf_app")
        c.execute(
            f"CREATE TABLE {SRC} (id int PRIMARY KEY, name text, email text, updated_at bigint)"
        )
        c.execute(
            f"CREATE TABLE {ITEMS} (id int PRIMARY KEY, name text, code text, amount numeric)"
        )
        c.execute(
            "CREATE TABLE tf_app.people (person_id int PRIMARY KEY, full_name varchar(5), "
            "email text, updated_at bigint)"
        )
        c.execute(
            "CREATE TABLE tf_app.plain (id int PRIMARY KEY, full_name varchar(5), code char(2), "
            "amount numeric(6,2))"
        )
        c.execute(
            "CREATE TABLE tf_app.tags (tag varchar(5) PRIMARY KEY, label varchar(5), "
            "bits bit varying(3), _cf_pos numeric)"
        )
        ensure_schema(c, BK)
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(drop)


class Sync:
    """The mapped sources of the mapping above over one connection, fed batch by batch."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn)
        cfg = MappingConfig.model_validate(MAPPING)
        with psycopg.connect(dsn) as src:
            self.mapper, report = load_mapper(cfg, [SRC, ITEMS], src, self.conn)
        report.raise_for_errors()
        self.conn.commit()
        self.sources, _writers, _shapes = build_mapped(self.mapper, report, self.conn, BK)
        self.pos = 0

    def batch(self, *rows: dict[str, Any], source: str = SRC) -> MappedResult:
        events = []
        blank = {"name": None, "email": None, "updated_at": None} if source == SRC else {}
        for r in rows:
            self.pos += 1
            row = {**blank, "name": None, **r}
            if source == SRC:
                row["updated_at"] = self.pos
            else:
                row.setdefault("code", None)
                row.setdefault("amount", None)
            events.append(ChangeEvent(source, "c", {"id": r["id"]}, row, self.pos, 0, self.pos))
        with self.conn.transaction():
            return self.sources[source].process(self.conn, events, {}, None)

    def rows(self, table: str) -> dict[int, tuple[Any, ...]]:
        rows = self.conn.execute(f"SELECT * FROM {table}")  # noqa: S608
        out = {r[0]: r[1:-1] for r in rows}  # _cf_pos left out
        self.conn.commit()
        return out

    def ledger(self, source: str = SRC) -> dict[str, tuple[str, str | None, str | None]]:
        out = {
            r[0]: (r[1], r[2], r[3])
            for r in self.conn.execute(
                f"SELECT entry, outcome, rule, reason FROM {BK}.ledger WHERE source_table = %s",
                (source,),
            )
        }
        self.conn.commit()
        return out


@pytest.fixture
def sync(db: str) -> Iterator[Sync]:
    s = Sync(db)
    yield s
    s.conn.close()


def test_a_golden_record_longer_than_its_varchar_column_is_a_dead_letter_not_cut(
    sync: Sync,
) -> None:
    """The member was stored, its group's golden record (``most_recent_non_empty``) took its
    name and the dedup sink wrote it cut to "Annab"; the ledger said mapped."""
    sync.batch({"id": 1, "name": "Ann", "email": "a@x.org"})
    res = sync.batch({"id": 2, "name": "Annabelle", "email": "a@x.org"})  # a duplicate of 1
    assert sync.rows("tf_app.people") == {1: ("Ann", "a@x.org", 1)}
    outcome, rule, reason = sync.ledger()["[2]"]
    assert (outcome, rule) == ("dead_letter", "tf_app.people.full_name:too_long")
    assert reason is not None
    assert "9 characters long, over the 5 of tf_app.people.full_name" in reason
    assert "(character varying(5))" in reason
    assert [h.rule for h in res.dead_letters] == [rule]
    # fixed at the source, it merges
    sync.batch({"id": 2, "name": "Anna", "email": "a@x.org"})
    assert sync.rows("tf_app.people") == {1: ("Anna", "a@x.org", 3)}
    assert sync.ledger()["[2]"][:2] == ("mapped", None)


def test_a_value_longer_than_its_column_on_the_plain_path_is_a_dead_letter_not_a_stop(
    sync: Sync,
) -> None:
    """The plain path's COPY refused the batch (StringDataRightTruncation, NumericValueOutOfRange:
    sync stopped)."""
    res = sync.batch(
        {"id": 1, "name": "Annabelle", "code": "AB"},
        {"id": 2, "name": "Bo", "code": "ABC"},
        {"id": 3, "name": "Cy   ", "code": "C  "},  # spaces past the limit: dropped, as on INSERT
        {"id": 4, "name": "Di", "amount": Decimal("123456.7")},
        {"id": 5, "name": "Ed", "amount": Decimal("1.005")},  # rounded, as on every path
        source=ITEMS,
    )
    assert sync.rows("tf_app.plain") == {
        3: ("Cy   ", "C ", None),
        5: ("Ed", None, Decimal("1.01")),
    }
    ledger = sync.ledger(ITEMS)
    assert ledger["[1]"][:2] == ("dead_letter", "tf_app.plain.full_name:too_long")
    assert ledger["[2]"][:2] == ("dead_letter", "tf_app.plain.code:too_long")
    assert "3 characters long, over the 2 of tf_app.plain.code (character(2))" in (
        ledger["[2]"][2] or ""
    )
    assert ledger["[3]"][:2] == ("mapped", None)
    assert ledger["[4]"][:2] == ("dead_letter", "tf_app.plain.amount:too_large")
    assert "is 123456.7, too large for tf_app.plain.amount (numeric(6,2)" in (
        ledger["[4]"][2] or ""
    )
    assert len(res.dead_letters) == 3


def _tags(conn: psycopg.Connection) -> DedupWriter:
    """A DedupWriter of tf_app.tags (key ``tag varchar(5)``), with no mapping rule before it."""
    shape = read_shape(conn, "tf_app.tags")
    assert shape is not None
    spec = DedupSpec.model_validate(
        {"match": [{"name": "same-label", "all": [{"column": "label"}]}]}
    )
    mapper = Mapper(None, [SRC], {SRC: ["id"]})
    return DedupWriter(shape, ("tag",), ("tag", "label", "bits"), spec, mapper, BK)


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"label": "Annabelle"}, psycopg.errors.StringDataRightTruncation),
        ({"label": "A", "bits": "10110"}, psycopg.errors.StringDataRightTruncation),
    ],
)
def test_the_dedup_sink_never_casts_a_value_to_its_column_length(
    db: str, values: dict[str, Any], refusal: type[Exception]
) -> None:
    """Whatever reaches it (the mapping's rule stops such rows first), the golden record is
    stored as it is or refused, as an INSERT would; it was stored cut ("Annab", "101")."""
    with psycopg.connect(db) as conn:
        w = _tags(conn)
        row = {"tag": "t1", "label": None, "bits": None, **values}
        with pytest.raises(refusal):
            w.apply(conn, [RowChange(("t1",), row, 1)])
        conn.rollback()
        assert conn.execute("SELECT count(*) FROM tf_app.tags").fetchone() == (0,)


def test_a_key_longer_than_its_column_finds_no_row_of_a_shorter_key(db: str) -> None:
    """A delete of member "Annabelle" (a key the column cannot hold) removed row "Annab": the
    lookup cast the key to varchar(5)."""
    with psycopg.connect(db) as conn:
        w = _tags(conn)
        w.apply(conn, [RowChange(("Annab",), {"tag": "Annab", "label": "x", "bits": None}, 1)])
        w.apply(conn, [RowChange(("Annabelle",), None, 2)])
        assert conn.execute("SELECT tag FROM tf_app.tags").fetchall() == [("Annab",)]


def test_a_parent_lookup_does_not_find_the_row_of_a_cut_value(db: str) -> None:
    """A child referring to "Annabelle" found parent "Annab" (unnest(CAST(... AS varchar(5)[])))."""
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO tf_app.tags (tag, label) VALUES ('Annab', 'x')")
        shape = read_shape(conn, "tf_app.tags")
        assert shape is not None
        parents = TargetParents(conn, {"tf_app.tags": shape}, bookkeeping_schema=BK)
        want = {("tf_app.tags", "tag", key_text([v])): v for v in ("Annab", "Annabelle")}
        assert parents.lookup(want) == {("tf_app.tags", "tag", key_text(["Annabelle"]))}
        one_by_one = TargetParents(conn, {"tf_app.tags": shape}, bookkeeping_schema=BK)
        assert one_by_one("tf_app.tags", "tag", "Annabelle") is False


def test_a_child_of_a_value_no_parent_can_hold_is_orphaned(db: str) -> None:
    """After a truncate, a child referring to "Annabelle" counted parent "Annab" as its own."""
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO tf_app.tags (tag, label) VALUES ('Annab', 'x')")
        conn.execute(
            f"INSERT INTO {BK}.child_refs VALUES ('s.c', '[1]', 't.c', 'tag', 'tf_app.tags', %s), "
            "('s.c', '[2]', 't.c', 'tag', 'tf_app.tags', %s)",
            (key_text(["Annabelle"]), key_text(["Annab"])),
        )
        gone = orphaned_parent_values(
            conn, BK, "tf_app.tags", "tag", "character varying(5)", dedup=False
        )
        assert gone == [key_text(["Annabelle"])]


def test_a_repair_delete_of_a_long_key_leaves_a_shorter_key_alone(db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("INSERT INTO tf_app.tags (tag, label, _cf_pos) VALUES ('Annab', 'x', 1)")
        n = delete_leaving_tombstones(
            conn, BK, "tf_app.tags", [("tag", "character varying(5)")], "x", [["Annabelle"]], 9
        )
        assert n == 0
        assert conn.execute("SELECT tag FROM tf_app.tags").fetchall() == [("Annab",)]


@pytest.mark.parametrize(
    ("type_sql", "value", "fits"),
    [
        ("character varying(5)", "Annab", True),
        ("character varying(5)", "Annabe", False),
        ("character varying(5)", "Ann        ", True),  # spaces past the limit: as INSERT does
        ("character varying(5)", "Ann      x", False),
        ("character varying(5)", "ÄÖÜßé", True),  # characters, not bytes
        ("character(2)", "ABC", False),
        ("character varying(3)", 1234, False),  # its text is "1234"
        ("character varying(3)", 123, True),
        ("character varying(3)", True, True),  # not measured: the database's to refuse
        ("character varying(3)", None, True),
        ("bit varying(3)", "1010", False),
        ("bit varying(3)", "10  ", False),  # bits have no spaces to drop
        ("character varying(3)[]", ["abc", "abcd"], False),
        ("character varying(3)[]", ["abc", None], True),
        ("text", "x" * 10_000, True),
    ],
)
def test_the_too_long_rule(type_sql: str, value: Any, fits: bool) -> None:
    cfg = MappingConfig.model_validate(
        {"tables": {"s.a": {"targets": [{"table": "t.a", "columns": {"id": "id", "v": "v"}}]}}}
    )
    m = Mapper(cfg, ["s.a"], {"s.a": ["id"]})
    require_target(
        m, TableShape("t", "a", (Column("id", "int", True), Column("v", type_sql, False)), ("id",))
    )
    out = m.map_row("s.a", {"id": 1, "v": value})
    if fits:
        assert isinstance(out, Mapped)
    else:
        assert isinstance(out, Rejected) and out.rule == "t.a.v:too_long", out


@pytest.mark.parametrize(
    ("type_sql", "cast_to"),
    [
        ("character varying(5)", "character varying"),
        ("character(2)", "bpchar"),  # `character` alone is character(1)
        ("bit(3)", "bit varying"),  # `bit` alone is bit(1)
        ("bit varying(3)", "bit varying"),
        ("character varying(5)[]", "character varying[]"),
        ("numeric(6,2)", "numeric(6,2)"),
        ("timestamp(3) without time zone", "timestamp(3) without time zone"),
        ('"odd(1)".mood', '"odd(1)".mood'),
    ],
)
def test_uncut(type_sql: str, cast_to: str) -> None:
    assert uncut(type_sql) == cast_to


CASES = [
    ("character varying(5)", "Annab"),
    ("character varying(5)", "Annabe"),
    ("character varying(5)", "Ann        "),
    ("character varying(5)", "Ann      x"),
    ("character varying(5)", "ÄÖÜßé"),
    ("character varying(5)", "ÄÖÜßéa"),
    ("character(2)", "AB "),
    ("character(2)", "ABC"),
    ("character varying(3)", 123),
    ("character varying(3)", -12),
    ("character varying(3)", 1234),
    ("bit varying(3)", "101"),
    ("bit varying(3)", "1010"),
    ("bit(3)", "1010"),
    ("character varying(3)[]", ["abc", "abcd"]),
    ("character varying(3)[]", ["abc", None]),
    ("numeric(6,2)", Decimal("9999.99")),
    ("numeric(6,2)", Decimal("9999.994")),
    ("numeric(6,2)", Decimal("9999.995")),  # rounds to 10000.00
    ("numeric(6,2)", Decimal("-9999.995")),
    ("numeric(6,2)", Decimal("0.000001")),
    ("numeric(6,2)", Decimal("NaN")),
    ("numeric(6,2)", Decimal("Infinity")),
    ("numeric(6,2)", Decimal("1E+3")),
    ("numeric(6,2)", Decimal("1E+4")),
    ("numeric(6,2)", 9999),
    ("numeric(6,2)", 10000),
    ("numeric(3,3)", Decimal("0.9994")),
    ("numeric(3,3)", Decimal("0.9995")),
    ("numeric(10,0)", 9_999_999_999),
    ("numeric(10,0)", 10_000_000_000),
    ("numeric(10,0)", Decimal("9999999999.5")),
    ("numeric(6,2)[]", [Decimal("1.5"), Decimal("12345.6")]),
]


@pytest.mark.parametrize(("type_sql", "value"), CASES)
def test_the_rules_refuse_what_postgresql_refuses(dsn: str, type_sql: str, value: Any) -> None:
    """What PostgreSQL does with the value written to such a column as the dedup sink writes it
    (cast to the type without its length, then assigned) is the truth the rule must agree with."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TEMP TABLE fit (v {type_sql})")
        try:
            conn.execute(f"INSERT INTO fit VALUES (CAST(%s AS {uncut(type_sql)}))", (value,))
            refused = False
        except (psycopg.errors.StringDataRightTruncation, psycopg.errors.NumericValueOutOfRange):
            refused = True
        except psycopg.errors.StringDataLengthMismatch:  # bit(3) of 4 bits: either way refused
            refused = True
    cfg = MappingConfig.model_validate(
        {"tables": {"s.a": {"targets": [{"table": "t.a", "columns": {"id": "id", "v": "v"}}]}}}
    )
    m = Mapper(cfg, ["s.a"], {"s.a": ["id"]})
    cols = (Column("id", "int", True), Column("v", type_sql, False))
    require_target(m, TableShape("t", "a", cols, ("id",)))
    assert isinstance(m.map_row("s.a", {"id": 1, "v": value}), Rejected) is refused
