"""The pure parts of issue 20's points 1 and 2: comparing table definitions, what is deferred
after the load, what the gate blocks on, and where a sequence must move."""

from __future__ import annotations

import dataclasses

import pytest

from crossfade.cutover.schema import TableSchema, summary
from crossfade.cutover.sequences import target_value
from crossfade.target.definition import (
    Constraint,
    Index,
    Sequence,
    TableDefinition,
    column_clause,
    deferred_statements,
    differences,
)

SEQ = Sequence(
    "public", "orders_id_seq", "id", True, False, "bigint", 1, 1, 1, 2**63 - 1, 1, False, 300, True
)

LEGACY = TableDefinition(
    "public.orders",
    defaults={"id": "nextval('orders_id_seq'::regclass)", "status": "'new'::text"},
    not_null=frozenset({"id", "qty"}),
    sequences=(SEQ,),
    constraints=(
        Constraint("orders_pkey", "p", "PRIMARY KEY (id)"),
        Constraint("orders_qty_check", "c", "CHECK ((qty > 0))"),
        Constraint("orders_ref_key", "u", "UNIQUE (ref)"),
        Constraint(
            "orders_customer_fkey",
            "f",
            "FOREIGN KEY (customer_id) REFERENCES public.customers(id)",
            "public.customers",
        ),
        Constraint(
            "orders_region_fkey",
            "f",
            "FOREIGN KEY (region_id) REFERENCES public.regions(id)",
            "public.regions",
        ),
    ),
    indexes=(
        Index(
            "orders_by_customer",
            "CREATE INDEX orders_by_customer ON public.orders USING btree (customer_id)",
        ),
    ),
)
MIGRATED = {"public.orders", "public.customers"}


def _created(d: TableDefinition) -> TableDefinition:
    """What crossfade creates with the table: no UNIQUE, foreign keys or secondary indexes yet."""
    return dataclasses.replace(
        d, constraints=tuple(c for c in d.constraints if c.kind in "pc"), indexes=()
    )


def test_the_same_definition_has_no_difference_and_index_names_may_differ() -> None:
    renamed = dataclasses.replace(
        LEGACY,
        indexes=(Index("idx_1", "CREATE INDEX idx_1 ON public.orders USING btree (customer_id)"),),
    )
    assert differences(LEGACY, LEGACY, MIGRATED) == []
    assert differences(LEGACY, renamed, MIGRATED) == []
    assert deferred_statements(LEGACY, renamed, MIGRATED) == []


def test_differences_name_each_one() -> None:
    target = dataclasses.replace(
        _created(LEGACY),
        defaults={"id": "nextval('orders_id_seq'::regclass)"},
        identity={"id": "d"},
        not_null=frozenset({"id"}),
        constraints=(*_created(LEGACY).constraints, Constraint("extra", "c", "CHECK ((id > 0))")),
    )
    assert differences(LEGACY, target, MIGRATED) == [
        "public.orders.status: default none (legacy: 'new'::text)",
        "public.orders.id: identity BY DEFAULT (legacy: none)",
        "public.orders.qty: nullable (legacy: NOT NULL)",
        "public.orders: missing unique orders_ref_key UNIQUE (ref)",
        "public.orders: missing foreign key orders_customer_fkey FOREIGN KEY (customer_id) "
        "REFERENCES public.customers(id)",
        "public.orders: check extra CHECK ((id > 0)) is not in legacy",
        "public.orders: missing index CREATE INDEX orders_by_customer ON public.orders USING "
        "btree (customer_id)",
    ]


def test_deferred_objects_and_the_foreign_key_to_a_table_not_migrated() -> None:
    todo = deferred_statements(LEGACY, _created(LEGACY), MIGRATED)
    assert [(d.kind, d.name, d.statement is not None) for d in todo] == [
        ("index", "orders_by_customer", True),
        ("unique", "orders_ref_key", True),
        ("foreign key", "orders_customer_fkey", True),
        ("foreign key", "orders_region_fkey", False),
    ]
    assert todo[3].note == "skipped: it references public.regions, which crossfade does not migrate"
    assert todo[2].statement is not None
    assert todo[2].statement.as_string(None) == (
        'ALTER TABLE "public"."orders" ADD CONSTRAINT "orders_customer_fkey" '
        "FOREIGN KEY (customer_id) REFERENCES public.customers(id)"
    )


def test_the_gate_blocks_on_what_is_missing_except_in_a_dry_run_where_the_cutover_creates_it() -> (
    None
):
    target = _created(LEGACY)
    ts = TableSchema(
        "public.orders",
        created=True,
        differences=differences(LEGACY, target, MIGRATED),
        pending=deferred_statements(LEGACY, target, MIGRATED),
    )
    ok, detail = summary([ts])
    assert not ok and "missing index CREATE INDEX orders_by_customer" in detail
    assert "orders_region_fkey skipped: it references public.regions" in detail
    assert "the cutover creates what crossfade's tables lack after its fence" in detail
    ok, detail = summary([ts], deferred_ok=True)
    assert ok, detail
    # a difference the cutover does not create still blocks a dry run
    ts.differences.append("public.orders.status: default none (legacy: 'new'::text)")
    assert not summary([ts], deferred_ok=True)[0]
    # a table crossfade did not create, with its differences accepted: reported, not blocking
    other = TableSchema("public.orders", created=False, differences=["x"], accepted=True)
    ok, detail = summary([other])
    assert ok and "accepted differences of public.orders: x" in detail


def test_column_clause_carries_identity_and_defaults() -> None:
    ident = dataclasses.replace(
        LEGACY,
        defaults={},
        identity={"id": "a"},
        sequences=(dataclasses.replace(SEQ, identity=True),),
    )
    assert column_clause(ident, "id").as_string(None) == (
        ' GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME "public"."orders_id_seq" INCREMENT BY 1 '
        "MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1 NO CYCLE)"
    )
    assert column_clause(LEGACY, "status").as_string(None) == " DEFAULT 'new'::text"
    assert column_clause(LEGACY, "qty").as_string(None) == ""


@pytest.mark.parametrize(
    ("seq", "values", "gap", "want"),
    [
        (SEQ, [5000, 301], 1000, 6000),  # past the largest value and the other side, plus the gap
        (SEQ, [10], 100, None),  # already past: never moved back
        (dataclasses.replace(SEQ, last_value=1, is_called=False), [1], 0, 1),  # never used yet
        (dataclasses.replace(SEQ, last_value=2, is_called=False), [1], 0, None),
        (dataclasses.replace(SEQ, max=5500), [5000], 1000, 5500),  # kept within its bounds
        (SEQ, [], 1000, None),  # an empty table, no other side
        (
            dataclasses.replace(SEQ, increment=-1, min=-(2**63), max=-1, last_value=-10),
            [-500],
            10,
            -510,
        ),
        (dataclasses.replace(SEQ, last_value=None, is_called=False), [5], 1, None),  # unreadable
    ],
)
def test_where_a_sequence_must_move(
    seq: Sequence, values: list[int], gap: int, want: int | None
) -> None:
    assert target_value(seq, values, gap) == want
