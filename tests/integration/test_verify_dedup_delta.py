"""Inside the freeze, a deduplicated target (golden records) is verified by its changes too.

The demo CRM (services/crossfade/embedded/crm.py, its mapping crm-mapping.yaml: ``app.people``
deduplicated by email, or by phone and a similar name; ``app.addresses`` referring to people)
seeded with duplicates, plus one large group (members sharing an email), synced. A full verify
is the base. Then:

(a) a duplicate member's change, applied by sync, is verified by delta: few keys, and it passes;
(b) with sync stopped, a golden record altered by hand, a member changed so it leaves its group
    (sync never regroups it: its own row is missing, its addresses still point at the old
    survivor, whose golden record still holds its values; its stored block keys are changed by
    hand, so only the full verify's groups lead to that survivor) and a person changed so they join another (the younger's row should be gone) are
    named by the delta — exactly as a full verify names them;
(c) a change whose block-key closure passes the limit sends the target to the full compare.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import yaml

from crossfade.embedded.crm import MAPPING_FILE, TABLES, CrmWriter, create_target_schema
from tests.conftest import Stack

pytestmark = pytest.mark.integration

BIG = 30
ACCOUNTS = int(os.environ.get("CROSSFADE_DEDUP_DELTA_ACCOUNTS", "200"))
"""Accounts seeded (about 1.5 people each); raise it to measure the delta against the full."""


def _crm(stack: Stack) -> Any:
    CrmWriter(stack.source_dsn, seed=0).seed(ACCOUNTS)
    stack.sql(
        "INSERT INTO public.contacts (account_id, first_name, last_name, email, phone, updated_at) "
        "SELECT (SELECT min(id) FROM public.accounts WHERE active), 'Big', 'Group' || g, "
        "'big.group@example.com', NULL, '2020-01-01'::timestamptz + g * interval '1 minute' "
        f"FROM generate_series(1, {BIG}) g"
    )
    with stack.tgt() as c:
        create_target_schema(c)
    stack.write_config(TABLES, mapping=yaml.safe_load(MAPPING_FILE.read_text()))
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    return sync


def _groups(stack: Stack) -> dict[str, list[str]]:
    """Survivor -> members (survivor first) of sync's merged groups of app.people."""
    bk = stack.settings.sync.bookkeeping_schema
    with stack.tgt() as t:
        rows = t.execute(
            f"SELECT survivor_key, member_key FROM {bk}.crosswalk WHERE target_table = 'app.people' "
            "ORDER BY survivor_key, member_key"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for sk, mk in rows:
        out.setdefault(json.loads(sk)[0], []).append(json.loads(mk)[0])
    return {s: sorted(ms, key=lambda m: m != s) for s, ms in out.items() if len(ms) > 1}


def _one(stack: Stack, q: str, params: Any = None) -> Any:
    with stack.src() as s:
        row = s.execute(q, params).fetchone()
    assert row is not None, q
    return row[0]


def _table(rep: Any, name: str) -> Any:
    return next(t for t in rep.tables if t.name == name)


def _found(rep: Any, name: str, col: str) -> set[tuple[str, str]]:
    return {(e["kind"], str(e["key"][col])) for e in _table(rep, name).examples}


def test_deduplicated_targets_are_verified_by_their_changes_inside_the_freeze(
    stack: Stack,
) -> None:
    from crossfade.verify.run import Verifier, delta_base

    sync = _crm(stack)
    settings = stack.settings
    full = Verifier(settings, fence_timeout=60)
    rep = full.run()
    full_seconds = rep.seconds
    assert rep.match, [t.as_dict() for t in rep.tables if not t.match]
    people_rows = _table(rep, "app.people").target_rows
    base = delta_base(full)
    assert base is not None and "app.people" in base.dedup
    groups = _groups(stack)
    big = next(s for s, ms in groups.items() if len(ms) == BIG)
    small = [ms for s, ms in groups.items() if s != big and len(ms) == 2]
    assert len(small) >= 3, groups

    # (a) a duplicate member changed (the most recent now: its birth date wins the golden record)
    g1 = small[0]
    stack.sql(
        "UPDATE public.contacts SET birth_date = '1970-01-02', updated_at = now() WHERE id = %s",
        (g1[1],),
    )
    stack.fence()
    with stack.tgt() as t:
        got = t.execute("SELECT birth_date::text FROM app.people WHERE person_id = %s", (g1[0],))
        assert got.fetchone() == ("1970-01-02",)
    rep = Verifier(settings, fence_recheck=False, changed_since=base).run(record=False)
    people, addresses = _table(rep, "app.people"), _table(rep, "app.addresses")
    assert people.mapped and people.mapped["compared"] == "changes since the full verify", (
        people.mapped
    )
    assert addresses.mapped and addresses.mapped["compared"] == "changes since the full verify"
    assert people.delta_keys is not None and 2 <= people.delta_keys < 100, people.as_dict()
    assert rep.match, [t.as_dict() for t in rep.tables if not t.match]
    print(
        f"(a) delta: people {people.delta_keys} of {people.target_rows} rows, {rep.seconds:.2f} s "
        f"(the full verify: {full_seconds:.2f} s)"
    )

    # (c) one member of the large group changed: its closure (the whole group) passes the limit
    stack.sql(
        "UPDATE public.contacts SET birth_date = '1970-01-03' WHERE id = %s", (groups[big][3],)
    )
    stack.fence()
    limit = BIG - 10
    small_fraction = (limit + 0.5) / people_rows
    rep = Verifier(
        settings, fence_recheck=False, changed_since=base, delta_max_fraction=small_fraction
    ).run(record=False)
    people = _table(rep, "app.people")
    # (past the limit as its members are found, or once the block has been read whole)
    assert people.mapped and people.mapped["compared"].startswith(f"in full: more than {limit} "), (
        people.mapped
    )
    assert (
        _table(rep, "app.addresses").mapped["compared"].startswith("in full: child of app.people")
    )
    assert rep.match, [t.as_dict() for t in rep.tables if not t.match]
    rep = Verifier(settings, fence_recheck=False, changed_since=base).run(record=False)
    people = _table(rep, "app.people")
    assert people.mapped["compared"] == "changes since the full verify", people.mapped
    assert (
        people.delta_keys is not None and BIG <= people.delta_keys < BIG + 100 + people_rows // 50
    )
    assert rep.match, [t.as_dict() for t in rep.tables if not t.match]

    # (b) sync stopped: a golden record altered by hand; a member leaving its group and a person
    # joining another, never regrouped in the target
    sync.stop()
    g2, g3 = small[1], small[2]
    with stack.tgt() as t:
        t.execute("UPDATE app.people SET first_name = 'Planted' WHERE person_id = %s", (g2[0],))
    stack.sql(
        "UPDATE public.contacts SET email = 'left.group@example.com', phone = NULL WHERE id = %s",
        (g3[1],),
    )
    # as if sync had stored the member's new block keys and left its old group as it was: the
    # old survivor is found through the full verify's groups only
    bk = settings.sync.bookkeeping_schema
    with stack.tgt() as t:
        t.execute(
            f"UPDATE {bk}.dedup_members SET block_keys = '{{}}' WHERE target_table = 'app.people' "
            "AND member_key = %s",
            (json.dumps([g3[1]]),),
        )
        t.execute(  # and its index by block key, as the store's write_members keeps it
            f"DELETE FROM {bk}.dedup_blocks WHERE target_table = 'app.people' AND member_key = %s",
            (json.dumps([g3[1]]),),
        )
    merged = {m for ms in groups.values() for m in ms}
    with stack.tgt() as t:
        alone = [
            str(r[0])
            for r in t.execute(
                "SELECT person_id FROM app.people p WHERE EXISTS (SELECT 1 FROM app.addresses a "
                "WHERE a.person_id = p.person_id) ORDER BY updated_at LIMIT 40"
            ).fetchall()
            if str(r[0]) not in merged
        ]
    older, younger = alone[0], alone[-1]
    email = _one(stack, "SELECT email FROM public.contacts WHERE id = %s", (older,))
    stack.sql(
        "UPDATE public.contacts SET email = %s, updated_at = now() WHERE id = %s", (email, younger)
    )

    rep = Verifier(settings, fence_recheck=False, changed_since=base).run(record=False)
    people, addresses = _table(rep, "app.people"), _table(rep, "app.addresses")
    # the closure over shared block keys: the demo's phones are shared by many people
    few = BIG + 40 if ACCOUNTS <= 200 else people_rows // 5
    assert people.mapped["compared"] == "changes since the full verify", people.mapped
    assert addresses.mapped["compared"] == "changes since the full verify", addresses.mapped
    assert people.delta_keys is not None and people.delta_keys < few, people.as_dict()
    found = _found(rep, "app.people", "person_id")
    assert {("different", g2[0]), ("missing", g3[1]), ("extra", younger)} <= found, found
    assert ("different", g3[0]) in found, found  # the golden record of the group it left
    # the addresses of the two that moved point at the wrong person now
    assert addresses.different >= 1, addresses.as_dict()
    print(
        f"(b) delta: people {people.delta_keys} keys, addresses {addresses.delta_keys}, "
        f"{rep.seconds:.2f} s: {sorted(found)}"
    )

    # the full verify names the same differences
    whole = Verifier(settings, fence_recheck=False).run(record=False)
    for name, col in (("app.people", "person_id"), ("app.addresses", "address_id")):
        d, f = _table(rep, name), _table(whole, name)
        assert (d.missing, d.extra, d.different) == (f.missing, f.extra, f.different), (
            d.as_dict(),
            f.as_dict(),
        )
        assert _found(rep, name, col) == _found(whole, name, col)
    print(f"full verify: {whole.seconds:.2f} s")


def test_a_cutover_verifies_a_deduplicated_target_by_its_changes_and_names_a_planted_one(
    stack: Stack,
) -> None:
    """A real cutover on the demo CRM: the full verify while writes may flow, then, inside the
    freeze, the verify of the changes; a golden record altered in the new database by the freeze
    command (between the two) is named, and app.people is compared by its changed keys."""
    import re
    import sys

    _crm(stack)
    survivor = next(iter(_groups(stack)))
    plant = (
        "import psycopg\n"
        f"with psycopg.connect({stack.target_dsn!r}, autocommit=True) as c:\n"
        "    c.execute(\"UPDATE app.people SET first_name = 'planted' WHERE person_id = "
        f"'{survivor}'\")\n"
    )
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["cutover"] = {
        "freeze_sql": "SELECT 1",
        "unfreeze_sql": "SELECT 1",
        "freeze_command": [sys.executable, "-c", plant],
        "fence_timeout_s": 60,
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    ack = stack.cli("dlq", "ack", "--note", "test: the CRM's known bad rows")
    assert ack.returncode == 0, ack.stderr
    r = stack.cli("cutover", "--json", timeout=300)
    rep = json.loads(r.stdout)
    assert not rep["go"], rep
    steps = {g["name"]: g for g in rep["gates"]}
    assert "verify_live" in steps and steps["verify_live"]["ok"], rep["gates"]
    detail = steps["verify"]["detail"]
    assert not steps["verify"]["ok"] and "app.people: 0 missing, 0 extra, 1 different" in detail
    n = re.search(r"app\.people by (\d+) changed key\(s\) of (\d+) rows", detail)
    assert n and 1 <= int(n[1]) < 40 and int(n[2]) > 200, detail
    assert "app.addresses by" in detail, detail
