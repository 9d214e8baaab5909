"""A mapped row the new database refuses is a dead letter, not a crash loop.

The target tables of a mapping are the new system's: their constraints are not the legacy's. A
row the mapping passes but PostgreSQL refuses (a phone too long for ``varchar(12)``, a NULL
under NOT NULL, a CHECK, a unique index on a non-key column) made the batch fail on every retry
and sync exit, again after every restart. Here such rows, in the initial load and streamed,
become dead letters with rule ``target`` and the database's reason; the batch's other rows
apply; a child of a refused parent follows the parent-left rule; verify counts the refused rows
as dead letters; and once the target's constraints are fixed ``crossfade dlq replay`` applies
them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.integration

LEGACY = """
CREATE TABLE public.customers (id int PRIMARY KEY, name text, phone text, age int, email text);
CREATE TABLE public.orders (id int PRIMARY KEY, customer_id int, amount numeric);
INSERT INTO public.customers VALUES
 (1, 'Ann', '555-0101', 30, 'ann@example.com'),
 (2, 'Bob', '555-0102', 0, 'bob@example.com'),
 (3, 'Cal', '555-0103', 50, 'cal at example.com'),
 (4, 'Dee', '555-0104', -1, 'dee@example.com'),
 (5, 'Eve', '555-0105', 20, 'eve@example.com');
INSERT INTO public.orders VALUES (10, 1, 9.5), (11, 2, 3), (12, 5, 7);
"""
TARGET = """
CREATE SCHEMA crm;
CREATE DOMAIN crm.email_t AS text CONSTRAINT email_has_at CHECK (VALUE LIKE '%@%');
CREATE TABLE crm.customers (legacy_id int PRIMARY KEY, name text NOT NULL, phone text,
    age int CONSTRAINT age_not_negative CHECK (age >= 0)
        CONSTRAINT age_inverse CHECK (age IS NULL OR 1 / age IS NOT NULL),
    email crm.email_t);
CREATE UNIQUE INDEX customers_email_unique ON crm.customers (email);
CREATE TABLE crm.orders (legacy_id int PRIMARY KEY, customer_id int, amount numeric);
"""
MAPPING = {
    "tables": {
        "public.customers": {
            "targets": [
                {
                    "table": "crm.customers",
                    "columns": {
                        "legacy_id": "id",
                        "name": "name",
                        "phone": "phone",
                        "age": "age",
                        "email": "email",
                    },
                }
            ]
        },
        "public.orders": {
            "targets": [
                {
                    "table": "crm.orders",
                    "columns": {
                        "legacy_id": "id",
                        "customer_id": "customer_id",
                        "amount": "amount",
                    },
                    "rules": {
                        "customer_id": {
                            "references": {"table": "crm.customers", "column": "legacy_id"}
                        }
                    },
                }
            ]
        },
    }
}
TABLES = ["public.customers", "public.orders"]


def dead_letters(stack: Any) -> dict[tuple[str, int], tuple[str, str]]:
    with stack.tgt() as c:
        return {
            (t, key[0]): (rule, reason)
            for t, key, rule, reason in c.execute(
                "SELECT source_table, source_key, rule, reason FROM crossfade.ledger "
                "WHERE outcome = 'dead_letter'"
            ).fetchall()
        }


def _ids(stack: Any, table: str) -> set[int]:
    with stack.tgt() as c:
        return {r[0] for r in c.execute(f"SELECT legacy_id FROM {table}")}


def _verify(stack: Any) -> dict[str, Any]:
    r = stack.cli("verify", "--json", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rep = json.loads(r.stdout)
    assert rep["match"] is True, rep
    return rep


def started(stack: Any, *legacy: str) -> None:
    """The customers and orders (and the ``legacy`` SQL after them) synced to the target."""
    for q in (LEGACY, *legacy):
        stack.sql(q)
    with stack.tgt() as c:
        c.execute(TARGET)
    stack.write_config(TABLES, mapping=MAPPING)
    stack.start("capture")
    stack.start("sync")
    stack.fence(timeout=180)


def test_refused_rows_are_dead_letters_and_replay_after_the_fix(stack: Any) -> None:
    started(stack)

    # the load: 2 (a CHECK dividing by its age 0: SQLSTATE 22012, a data exception), 3 (the
    # email domain's CHECK), 4 (age < 0) refused: the mapping knows none; order 11 of the
    # refused customer 2 is a dead letter of its references rule (its parent left)
    assert _ids(stack, "crm.customers") == {1, 5}
    assert _ids(stack, "crm.orders") == {10, 12}
    dead = dead_letters(stack)
    assert set(dead) == {
        ("public.customers", 2),
        ("public.customers", 3),
        ("public.customers", 4),
        ("public.orders", 11),
    }, dead
    for k in (2, 3, 4):
        assert dead[("public.customers", k)][0] == "target", dead
    assert "crm.customers" in dead[("public.customers", 2)][1]
    assert "division by zero" in dead[("public.customers", 2)][1]
    assert "email_has_at" in dead[("public.customers", 3)][1]
    assert "age_not_negative" in dead[("public.customers", 4)][1]
    assert dead[("public.orders", 11)][0] == "crm.orders.customer_id:references"
    assert "parent left" in dead[("public.orders", 11)][1]

    # streamed: refused rows among good ones, in one transaction (6: the email of 1, taken)
    stack.sql(
        "INSERT INTO public.customers VALUES (6, 'Fay', '555-0106', 25, 'ann@example.com'), "
        "(7, 'Gus', '555-0107', -5, 'gus@example.com'), "
        "(8, 'Hal', '555-0108', 33, 'hal@example.com')"
    )
    stack.fence(timeout=120)
    assert _ids(stack, "crm.customers") == {1, 5, 8}
    dead = dead_letters(stack)
    assert dead[("public.customers", 7)][0] == "target"
    assert "age_not_negative" in dead[("public.customers", 7)][1]
    assert "customers_email_unique" in dead[("public.customers", 6)][1]
    assert all(p.alive() for p in stack.procs), [p.tail() for p in stack.procs]

    # dlq list names them, with the reason
    r = stack.cli("dlq", "list", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    groups = {(g["rule"], g["table"]): g for g in json.loads(r.stdout)["by_rule"]}
    target = groups[("target", "public.customers")]
    assert target["records"] == 5, groups
    assert any("age_not_negative" in ex["reason"] for ex in target["examples"]), target

    rep = _verify(stack)
    (acc,) = [
        a
        for t in rep["tables"]
        if t.get("mapping")
        for a in t["mapping"]["accounting"]
        if a["table"] == "public.customers"
    ]
    assert acc["closes"] and acc["dead_letters"] == 5, acc

    # a replay before the fix: every record still refused stays a dead letter, nothing stops
    r = stack.cli("dlq", "replay", "--json")
    assert r.returncode == 1, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["selected"] == 6 and out["still_failing"] == 6, out
    assert out["still_failing_by_rule"]["target"] == 5, out
    assert len(dead_letters(stack)) == 6

    # fixed in the target: the replay applies them, and their child with them
    with stack.tgt() as c:
        c.execute(
            "ALTER TABLE crm.customers ALTER COLUMN email TYPE text, "
            "DROP CONSTRAINT age_not_negative, DROP CONSTRAINT age_inverse"
        )
        c.execute("DROP INDEX crm.customers_email_unique")
    r = stack.cli("dlq", "replay", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["selected"] == 6 and out["still_failing"] == 0, out
    assert _ids(stack, "crm.customers") == {1, 2, 3, 4, 5, 6, 7, 8}
    assert _ids(stack, "crm.orders") == {10, 11, 12}
    assert not dead_letters(stack)
    _verify(stack)


DEDUP_LEGACY = """
CREATE TABLE public.people (id int PRIMARY KEY, email text, level int, updated_at timestamp);
INSERT INTO public.people VALUES
 (1, 'a@example.com', 3, '2024-01-01'), (2, 'a@example.com', -1, '2024-01-02'),
 (3, 'b@example.com', 4, '2024-01-01');
"""
DEDUP_TARGET = """
CREATE SCHEMA crm;
CREATE TABLE crm.people (legacy_id int PRIMARY KEY, email text,
    level int CONSTRAINT level_not_negative CHECK (level >= 0), updated_at timestamp);
"""
DEDUP_MAPPING = {
    "tables": {
        "public.people": {
            "targets": [
                {
                    "table": "crm.people",
                    "columns": {
                        "legacy_id": "id",
                        "email": "email",
                        "level": "level",
                        "updated_at": "updated_at",
                    },
                }
            ]
        }
    },
    "dedup": {
        "crm.people": {
            "match": [{"name": "same-email", "all": [{"column": "email"}]}],
            "survivorship": {"recency": "updated_at"},
        }
    },
}


def dedup_started(stack: Any, *legacy: str) -> None:
    """The deduplicated people (and the ``legacy`` SQL after them) synced to the target, whose
    CHECK refuses a negative level."""
    for q in (DEDUP_LEGACY, *legacy):
        stack.sql(q)
    with stack.tgt() as c:
        c.execute(DEDUP_TARGET)
    stack.write_config(["public.people"], mapping=DEDUP_MAPPING)
    stack.start("capture")
    stack.start("sync")
    stack.fence(timeout=180)


def test_a_refused_golden_record_dead_letters_the_member_that_made_it(stack: Any) -> None:
    """Group a's golden record takes the newest member's level, -1, which the target refuses:
    that member is the dead letter, and the group's golden record is made of the others."""
    dedup_started(stack)
    with stack.tgt() as c:
        rows = dict(c.execute("SELECT legacy_id, level FROM crm.people").fetchall())
    assert rows == {1: 3, 3: 4}, rows
    dead = dead_letters(stack)
    assert set(dead) == {("public.people", 2)}, dead
    assert dead[("public.people", 2)][0] == "target"
    assert "level_not_negative" in dead[("public.people", 2)][1]
    # a new member with a good value joins the group
    stack.sql("INSERT INTO public.people VALUES (4, 'a@example.com', 7, '2024-02-01')")
    stack.fence(timeout=120)
    with stack.tgt() as c:
        rows = dict(c.execute("SELECT legacy_id, level FROM crm.people").fetchall())
    assert rows == {1: 7, 3: 4}, rows
    assert all(p.alive() for p in stack.procs), [p.tail() for p in stack.procs]
    _verify(stack)


def test_a_delete_passes_a_not_null_domain_on_a_non_key_column(stack: Any) -> None:
    """A delete reaches the target through the staging table with NULL in the non-key columns:
    a staging column of the target's NOT NULL domain refused it, and the row's removal could
    never be applied (sync stopped: `the target refuses a row even as a dead letter`). The
    staging table's columns are the domains' base types; the target still checks the domain
    on every row written."""
    stack.sql(
        "CREATE TABLE public.members (id int PRIMARY KEY, email text);"
        "INSERT INTO public.members VALUES (1, 'a@example.com'), (2, 'b@example.com'),"
        " (3, 'c@example.com');"
    )
    with stack.tgt() as c:
        c.execute(
            "CREATE SCHEMA crm;"
            "CREATE DOMAIN crm.email_nn AS text NOT NULL CHECK (VALUE LIKE '%@%');"
            "CREATE TABLE crm.members (legacy_id int PRIMARY KEY, email crm.email_nn);"
        )
    mapping = {
        "tables": {
            "public.members": {
                "targets": [
                    {"table": "crm.members", "columns": {"legacy_id": "id", "email": "email"}}
                ]
            }
        }
    }
    stack.write_config(["public.members"], mapping=mapping)
    stack.start("capture")
    stack.start("sync")
    stack.fence(timeout=180)
    assert _ids(stack, "crm.members") == {1, 2, 3}
    stack.sql(
        "DELETE FROM public.members WHERE id = 2;"
        "INSERT INTO public.members VALUES (4, 'no at sign');"
        "UPDATE public.members SET email = 'a2@example.com' WHERE id = 1"
    )
    stack.fence(timeout=120)
    assert _ids(stack, "crm.members") == {1, 3}
    with stack.tgt() as c:
        assert c.execute("SELECT email FROM crm.members WHERE legacy_id = 1").fetchone() == (
            "a2@example.com",
        )
    dead = dead_letters(stack)
    assert set(dead) == {("public.members", 4)}, dead
    assert dead[("public.members", 4)][0] == "target"
    assert all(p.alive() for p in stack.procs), [p.tail() for p in stack.procs]
    _verify(stack)
