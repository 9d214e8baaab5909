"""The verify inside the freeze counts the rows the target refused as dead letters, as the full one does.

A mapped row the new database refuses (a CHECK the mapping knows nothing of) is a dead letter of
rule ``target`` (crossfade.sync.refused). The full verify counts it as rejected: not expected in
the target. The verify of the changes since (the cutover's, inside the write freeze:
crossfade.verify.mapped_delta) must too: a refused row changed since the full verify is not a
missing row, and its dead letter is not one that "maps now"; a real difference next to it is
still named. Once the target is fixed and ``crossfade dlq replay`` applied the rows, the delta
follows the ledger: the rows are expected again, and found.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Stack
from tests.integration.test_refused_rows import dead_letters, started

pytestmark = pytest.mark.integration

BULK = range(100, 200)
"""Enough rows that the delta's few keys stay under its max_fraction of a table."""
BULK_SQL = (
    "INSERT INTO public.customers SELECT g, 'Bulk ' || g, '555-' || g, 40, "
    f"'bulk' || g || '@example.com' FROM generate_series({BULK[0]}, {BULK[-1]}) g;"
    "INSERT INTO public.orders SELECT g * 10, g, 1 "
    f"FROM generate_series({BULK[0]}, {BULK[-1]}) g"
)


def _delta(stack: Stack, base: Any) -> dict[str, Any]:
    from crossfade.verify.run import Verifier

    # as the cutover runs it inside the freeze: frozen and fenced, no re-check
    rep = Verifier(stack.settings, fence_recheck=False, changed_since=base).run(record=False)
    return {t.name: t for t in rep.tables}


def _account(table: Any, source: str) -> dict[str, Any]:
    """The account of ``source`` in ``table``'s report: partial (the entries the delta compared)
    and closing (legacy's rows are the ledger's; it said ``closes: false`` before, legacy's
    whole count against the few entries involved)."""
    (acc,) = [a for a in table.mapped["accounting"] if a["table"] == source]
    assert acc["closes"] and acc.get("partial"), acc
    assert acc["source_rows"] == acc["accounted"] >= acc["mapped"] + acc["rejected"], acc
    return acc


def test_the_delta_verify_counts_rows_the_target_refused_as_dead_letters(stack: Stack) -> None:
    from crossfade.verify.run import Verifier, delta_base

    started(stack, BULK_SQL)
    full = Verifier(stack.settings, fence_timeout=60)
    rep = full.run()
    assert rep.match, [t.as_dict() for t in rep.tables if not t.match]
    base = delta_base(full)
    assert base is not None

    # since the full verify: a new customer the target refuses (age < 0) with an order, an
    # update of a customer refused in the load (still refused), and a real difference: a
    # target row altered by hand
    stack.sql(
        "INSERT INTO public.customers VALUES (7, 'Gus', '555-0107', -5, 'gus@example.com');"
        "INSERT INTO public.orders VALUES (70, 7, 4);"
        "UPDATE public.customers SET name = 'Dee Two' WHERE id = 4"
    )
    stack.fence(timeout=120)
    dead = dead_letters(stack)
    assert dead[("public.customers", 7)][0] == "target", dead
    assert dead[("public.customers", 4)][0] == "target", dead
    with stack.tgt() as c:
        c.execute("UPDATE crm.customers SET name = 'Planted' WHERE legacy_id = %s", (BULK[0],))

    got = _delta(stack, base)
    customers, orders = got["crm.customers"], got["crm.orders"]
    for t in (customers, orders):
        assert t.mapped["compared"] == "changes since the full verify", t.as_dict()
    assert (customers.missing, customers.extra, customers.different) == (0, 0, 1), (
        customers.as_dict()
    )
    assert [(e["kind"], e["key"]["legacy_id"]) for e in customers.examples] == [
        ("different", BULK[0])
    ]
    assert customers.error is None, customers.error
    acc = _account(customers, "public.customers")
    assert acc["rejected"] == acc["dead_letters"] == 2, acc  # 4 and 7
    # the order of the refused customer: a dead letter of its references rule
    assert (orders.missing, orders.extra, orders.different) == (0, 0, 0), orders.as_dict()
    assert orders.error is None, orders.error
    acc = _account(orders, "public.orders")
    assert acc["rejected"] == acc["dead_letters"] == 1, acc  # 70

    # the target fixed and the dead letters replayed: the delta follows the ledger now
    with stack.tgt() as c:
        c.execute(
            "ALTER TABLE crm.customers ALTER COLUMN email TYPE text, "
            "DROP CONSTRAINT age_not_negative, DROP CONSTRAINT age_inverse"
        )
    r = stack.cli("dlq", "replay", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    stack.fence(timeout=120)
    assert not dead_letters(stack)
    got = _delta(stack, base)
    customers, orders = got["crm.customers"], got["crm.orders"]
    assert customers.mapped["compared"] == "changes since the full verify", customers.as_dict()
    assert (customers.missing, customers.extra, customers.different) == (0, 0, 1), (
        customers.as_dict()
    )
    assert customers.error is None and orders.error is None, (customers.error, orders.error)
    acc = _account(customers, "public.customers")
    assert acc["rejected"] == acc["dead_letters"] == 0, acc
    assert acc["mapped"] >= 5, acc  # 2, 3, 4, 7 replayed (written since), and the planted one
    assert (orders.missing, orders.extra, orders.different) == (0, 0, 0), orders.as_dict()


def test_a_cutover_verifies_a_row_refused_inside_its_freeze_as_a_dead_letter(stack: Stack) -> None:
    """A real cutover: between its full verify (``verify_live``) and the verify inside the
    freeze, legacy gets a row the target refuses and an update of one refused before (the
    freeze command writes them: freeze_sql freezes nothing here). The fence applies them as
    dead letters; the verify of the changes counts them so and passes, and the cutover is GO."""
    import json
    import sys

    import yaml

    started(stack, BULK_SQL)
    write = (
        "import psycopg\n"
        f"with psycopg.connect({stack.source_dsn!r}, autocommit=True) as c:\n"
        "    c.execute(\"INSERT INTO public.customers VALUES (9, 'Ida', '555-0109', -2, "
        "'ida@example.com')\")\n"
        "    c.execute(\"UPDATE public.customers SET name = 'Dee Two' WHERE id = 4\")\n"
        f"    c.execute(\"UPDATE public.customers SET name = 'Moved' WHERE id = {BULK[1]}\")\n"
    )
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["cutover"] = {
        "freeze_sql": "SELECT 1",
        "unfreeze_sql": "SELECT 1",
        "freeze_command": [sys.executable, "-c", write],
        "fence_timeout_s": 60,
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    ack = stack.cli("dlq", "ack", "--note", "test: the customers the target refuses")
    assert ack.returncode == 0, ack.stderr
    r = stack.cli("cutover", "--json", timeout=300)
    rep = json.loads(r.stdout)
    steps = {g["name"]: g for g in rep["gates"]}
    assert steps["verify"]["ok"], steps["verify"]
    assert "crm.customers by" in steps["verify"]["detail"], steps["verify"]["detail"]
    assert rep["go"], rep["gates"]
    dead = dead_letters(stack)
    assert dead[("public.customers", 9)][0] == "target", dead
    assert dead[("public.customers", 4)][0] == "target", dead


def test_the_delta_verify_leaves_a_refused_member_out_of_its_duplicate_group(
    stack: Stack,
) -> None:
    """A deduplicated target: a member whose golden record the target refuses is a dead letter
    (sync regroups without it, crossfade.sync.refused); the dedup delta regroups only mapped
    members (crossfade.verify.dedup_delta), so the refused one must be out of its group there
    too. Since the full verify: a newest member with a level the CHECK refuses joins group b
    (its golden record stays the older member's), one refused in the load changes and is still
    refused (the newest of group a), a good member joins group a. The delta passes by its
    changes, the refused members counted as dead letters; with them in their groups, the
    delta's expected rows did not add up to the target's and it went to the full compare."""
    from crossfade.verify.run import Verifier, delta_base
    from tests.integration.test_refused_rows import dedup_started

    dedup_started(  # and members alone, so the delta's few keys stay under its max_fraction
        stack,
        "INSERT INTO public.people SELECT g, 'bulk' || g || '@example.com', 1, '2024-01-01' "
        f"FROM generate_series({BULK[0]}, {BULK[-1]}) g",
    )
    full = Verifier(stack.settings, fence_timeout=60)
    rep = full.run()
    assert rep.match, [t.as_dict() for t in rep.tables if not t.match]
    base = delta_base(full)
    assert base is not None and "crm.people" in base.dedup

    stack.sql(
        "INSERT INTO public.people VALUES (5, 'b@example.com', -2, '2024-03-01'),"
        " (4, 'a@example.com', 7, '2024-02-01');"
        "UPDATE public.people SET updated_at = '2024-03-02' WHERE id = 2"  # still the newest of a
    )
    stack.fence(timeout=120)
    dead = dead_letters(stack)
    assert {k for k, (rule, _why) in dead.items() if rule == "target"} == {
        ("public.people", 2),
        ("public.people", 5),
    }, dead
    with stack.tgt() as c:
        rows = dict(
            c.execute("SELECT legacy_id, level FROM crm.people WHERE legacy_id < 100").fetchall()
        )
    assert rows == {1: 7, 3: 4}, rows

    rep = Verifier(stack.settings, fence_recheck=False, changed_since=base).run(record=False)
    (people,) = rep.tables
    assert people.mapped["compared"] == "changes since the full verify", people.as_dict()
    assert people.delta_keys is not None and 4 <= people.delta_keys < 20, people.as_dict()
    assert (people.missing, people.extra, people.different) == (0, 0, 0), people.as_dict()
    assert people.error is None and rep.match, people.as_dict()
    acc = _account(people, "public.people")
    assert acc["rejected"] == acc["dead_letters"] == 2, acc
