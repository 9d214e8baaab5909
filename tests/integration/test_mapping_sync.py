"""The mapping in the live sync, on the embedded stack (Debezium -> Tansu -> sync -> PostgreSQL).

The legacy CRM of ``test_audit`` (defects injected on known rows) is captured and synced through
the mapping: each injected defect must end as a dead letter under the rule it breaks, each
inactive member as a filtered row, each orphaned note as a dead letter once its parent's window
has passed; everything else must be in the target, mapped. The accounting must close exactly.
Then, while streaming: a child before its parent is deferred and applied when the parent comes;
a fixed legacy row leaves the dead letters; a row that becomes filtered leaves the target; a
relaxed rule plus ``crossfade dlq replay`` applies what now passes.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
import yaml

from tests.conftest import wait_for
from tests.integration.test_audit import LEGACY_DDL, MAPPING, TARGET_DDL, seed

pytestmark = pytest.mark.integration


def _mapping(window_s: float) -> dict[str, Any]:
    m = copy.deepcopy(MAPPING)
    m.pop("dedup")
    m["tables"]["public.notes"]["targets"][0]["rules"]["person_id"] = {
        "references": {"table": "crm.people", "column": "legacy_id", "window_s": window_s}
    }
    return m


def _configure(stack: Any, mapping: dict[str, Any]) -> None:
    stack.write_config(["public.members", "public.notes"], mapping=mapping)


def _ledger(stack: Any, outcome: str) -> dict[str, set[Any]]:
    """rule -> source keys (first key column) with this outcome."""
    out: dict[str, set[Any]] = {}
    with stack.tgt() as c:
        for rule, key in c.execute(
            "SELECT rule, source_key FROM crossfade.ledger WHERE outcome = %s", (outcome,)
        ).fetchall():
            out.setdefault(rule, set()).add(key[0] if key else None)
    return out


def _dlq_list(stack: Any) -> dict[str, Any]:
    r = stack.cli("dlq", "list", "--json")
    assert r.returncode in (0, 1), r.stderr
    return json.loads(r.stdout)


def test_mapped_sync_dead_letters_filters_deferral_and_accounting(stack: Any) -> None:
    members, notes, expect = seed(stack)
    _configure(stack, _mapping(window_s=2))
    stack.start("capture")
    stack.start("sync")
    stack.fence()

    # every injected rule defect is a dead letter under its rule, nothing else is
    want_dead = {rule: set(ids) for rule, ids in expect["rules"].items()}
    orphans = set(expect["orphans"])
    try:
        wait_for(
            lambda: _ledger(stack, "dead_letter").get("crm.notes.person_id:references") == orphans,
            60,
            "orphaned notes to be dead-lettered once their window passed",
        )
    except AssertionError as exc:
        with stack.tgt() as c:
            rows = c.execute(
                "SELECT source_table, outcome, rule, count(*) FROM crossfade.ledger GROUP BY 1, 2, 3"
            ).fetchall()
        raise AssertionError(f"{exc}; ledger: {rows}{stack._diag()}") from None
    dead = _ledger(stack, "dead_letter")
    assert dead.pop("crm.notes.person_id:references") == orphans
    assert dead == want_dead
    assert _ledger(stack, "filtered") == {
        "public.members:filter:inactive-before-2015": set(expect["filtered"])
    }

    rejected = set().union(*want_dead.values())
    with stack.tgt() as c:
        people = {
            r[0]: r
            for r in c.execute("SELECT legacy_id, email, phone, country, full_name FROM crm.people")
        }
        note_ids = {r[0] for r in c.execute("SELECT legacy_id FROM crm.notes")}
    assert set(people) == {m["id"] for m in members} - rejected - set(expect["filtered"])
    assert note_ids == {n["id"] for n in notes} - orphans
    # the transforms ran: normalised email, E.164 phone, ISO country, cleaned name
    dup_email = next(m for m in members if m["email"] and m["email"].startswith(" "))
    assert people[dup_email["id"]][1] == dup_email["email"].strip().lower()
    assert all(p[2] is None or p[2].startswith("+44") for p in people.values())
    assert {p[3] for p in people.values()} == {"GB"}
    assert all("  " not in p[4] and p[4] == p[4].strip() for p in people.values())

    # the accounting closes exactly, and the dead letters are on the topic with their reason
    listing = _dlq_list(stack)
    assert listing["accounting_closes"], listing["accounting"]
    acc = {a["table"]: a for a in listing["accounting"]}
    assert acc["public.members"]["source_rows"] == len(members)
    assert acc["public.members"]["mapped"] == len(people)
    assert acc["public.members"]["dead_lettered"] == len(rejected)
    assert acc["public.members"]["filtered"] == len(expect["filtered"])
    assert {g["rule"] for g in listing["by_rule"]} == {*want_dead, "crm.notes.person_id:references"}

    # streaming: a child before its parent is deferred, then applied when the parent arrives
    stack.sql("INSERT INTO public.notes VALUES (500, 700, 'written before its member')")
    wait_for(
        lambda: 500 in set().union(*_ledger(stack, "deferred").values() or [set()]),
        60,
        "note 500 deferred",
    )
    stack.sql(
        "INSERT INTO public.members VALUES (700, 'Late Parent', 'late@example.com', '020 7946 0700', "
        "'1970-01-01', 'GB', true, '2024-01-01', '2024-01-01 10:00')"
    )
    # a rejected row fixed at the source leaves the dead letters
    bad_email = sorted(want_dead["crm.people.email:transform:email"])[0]
    stack.sql("UPDATE public.members SET email = 'fixed@example.com' WHERE id = %s", (bad_email,))
    # a migrated member that becomes filtered leaves the target
    keep = sorted(set(people) - {n["member_id"] for n in notes})[
        0
    ]  # (its children would dangle: see README)
    stack.sql(
        "UPDATE public.members SET active = false, last_seen = '2001-01-01' WHERE id = %s", (keep,)
    )
    stack.fence()
    wait_for(lambda: not _ledger(stack, "deferred"), 30, "the deferred note to be applied")
    with stack.tgt() as c:
        assert c.execute("SELECT body FROM crm.notes WHERE legacy_id = 500").fetchone() == (
            "written before its member",
        )
        assert c.execute(
            "SELECT email FROM crm.people WHERE legacy_id = %s", (bad_email,)
        ).fetchone() == ("fixed@example.com",)
        assert (
            c.execute("SELECT 1 FROM crm.people WHERE legacy_id = %s", (keep,)).fetchone() is None
        )
    assert bad_email not in _ledger(stack, "dead_letter")["crm.people.email:transform:email"]
    assert keep in _ledger(stack, "filtered")["public.members:filter:inactive-before-2015"]
    assert _dlq_list(stack)["accounting_closes"]

    # relax a rule (unparseable phones become NULL), replay: those dead letters apply now
    stack.procs[-1].stop()
    relaxed = _mapping(window_s=2)
    relaxed["tables"]["public.members"]["targets"][0]["columns"]["phone"]["on_error"] = "null"
    _configure(stack, relaxed)
    r = stack.cli("dlq", "replay", "--rule", "crm.people.phone:transform:phone", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert (
        rep["applied"] == len(want_dead["crm.people.phone:transform:phone"])
        and rep["still_failing"] == 0
    )
    (bad_phone,) = want_dead["crm.people.phone:transform:phone"]
    with stack.tgt() as c:
        assert c.execute(
            "SELECT phone FROM crm.people WHERE legacy_id = %s", (bad_phone,)
        ).fetchone() == (None,)
    after = _dlq_list(stack)
    assert "crm.people.phone:transform:phone" not in {g["rule"] for g in after["by_rule"]}
    assert after["accounting_closes"]

    # verify maps every legacy row itself and compares with the target, accounting included
    stack.start("sync")
    _verify(stack, match=True)
    with stack.tgt() as c:  # plant a wrong value: verify names the key and the column
        c.execute(
            "UPDATE crm.people SET full_name = 'Someone Else' WHERE legacy_id = %s", (bad_phone,)
        )
    rep = _verify(stack, match=False, no_fence=True)
    people = next(t for t in rep["tables"] if t["name"] == "crm.people")
    assert people["different"] == 1 and people["rows"][0]["key"] == {"legacy_id": bad_phone}
    assert "full_name" in people["rows"][0]["columns"]


def _verify(stack: Any, match: bool, no_fence: bool = False) -> dict[str, Any]:
    r = stack.cli("verify", "--json", *(["--no-fence"] if no_fence else []), timeout=300)
    assert r.returncode == (0 if match else 1), r.stdout[-3000:] + r.stderr
    rep = json.loads(r.stdout)
    assert rep["match"] is match, rep
    for t in rep["tables"]:
        assert t["mapping"]["accounting"], t
        if match:
            assert all(a["closes"] for a in t["mapping"]["accounting"]), t
    return rep


def test_replayed_older_change_cannot_reopen_or_undo(stack: Any) -> None:
    """A change re-sent after a capture restart arrives after newer ones, with a lower position:
    the ledger skips it, so a resolved dead letter stays resolved (FAULTS 12/13 for mapped tables)."""
    with stack.src() as c:
        c.execute(LEGACY_DDL)
        c.execute(
            "INSERT INTO public.members VALUES (1, 'Ann Lee', 'bad@', '020 7946 0001', '1980-01-01', 'GB', true, "
            "'2024-01-01', '2024-01-01 10:00')"
        )
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
    _configure(stack, _mapping(window_s=0))
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    assert _ledger(stack, "dead_letter") == {"crm.people.email:transform:email": {1}}
    stack.sql("UPDATE public.members SET email = 'ann@example.com' WHERE id = 1")
    stack.fence()
    assert _ledger(stack, "dead_letter") == {}
    # rewind sync's stored offsets to the start: every change is delivered again, oldest first
    sync.stop()
    with stack.tgt() as c:
        c.execute("UPDATE crossfade.offsets SET next_offset = 0")
    stack.start("sync")
    stack.sql(
        "INSERT INTO public.members VALUES (2, 'Bo Ray', 'bo@example.com', NULL, '1980-01-01', 'GB', true, "
        "'2024-01-01', '2024-01-01 10:00')"
    )
    stack.fence()
    time.sleep(1)
    assert _ledger(stack, "dead_letter") == {}
    with stack.tgt() as c:
        assert c.execute("SELECT email FROM crm.people WHERE legacy_id = 1").fetchone() == (
            "ann@example.com",
        )


def _expected_survivor(members: list[dict[str, Any]], group: set[int]) -> int:
    """survivorship `oldest` by updated_at (then key): the member whose row the group keeps."""
    return min(group, key=lambda i: (next(m for m in members if m["id"] == i)["updated_at"], i))


def test_live_dedup_golden_records_crosswalk_and_children(stack: Any) -> None:
    members, notes, expect = seed(stack)
    mapping = copy.deepcopy(MAPPING)
    mapping["dedup"]["crm.people"]["survivorship"]["survivor"] = "oldest"
    _configure(stack, mapping)
    stack.start("capture")
    stack.start("sync")
    stack.fence()

    rejected = set().union(*(set(v) for v in expect["rules"].values()))
    migrated = {m["id"] for m in members} - rejected - set(expect["filtered"])
    groups = [g for g in expect["groups"] if g <= migrated]
    assert len(groups) == len(expect["groups"]) == 8
    merged_away = {i for g in groups for i in g if i != _expected_survivor(members, g)}
    with stack.tgt() as c:
        people = {r[0] for r in c.execute("SELECT legacy_id FROM crm.people")}
        crosswalk = {
            json.loads(r[0])[0]: json.loads(r[1])[0]
            for r in c.execute(
                "SELECT member_key, survivor_key FROM crossfade.crosswalk WHERE target_table = 'crm.people'"
            )
        }
        note_parents = {r[0] for r in c.execute("SELECT person_id FROM crm.notes")}
    # one golden row per true duplicate group, nobody else merged (the household stays two people)
    assert people == migrated - merged_away
    assert set(crosswalk) == migrated  # every legacy key resolves
    for g in groups:
        s = _expected_survivor(members, g)
        assert all(crosswalk[i] == s for i in g), (g, {i: crosswalk[i] for i in g})
    assert all(crosswalk[i] == i for i in migrated - set().union(*groups))
    # children point at survivors: every note's person is a row of the target
    assert note_parents <= people

    # explain a merge
    dup = sorted(merged_away)[0]
    r = stack.cli("dedup", "explain", str(dup), "--json")
    assert r.returncode == 0, r.stderr
    (exp,) = json.loads(r.stdout)
    assert exp["merged"] and exp["survivor"] == [crosswalk[dup]] and exp["evidence"]
    assert {m["key"][0] for m in exp["members"]} == next(g for g in groups if dup in g)

    # a later change of a merged member updates the golden record (most recent non-empty value)
    g0 = next(g for g in groups if dup in g)
    s0 = crosswalk[dup]
    stack.sql(
        "UPDATE public.members SET dob = '1999-09-09', updated_at = '2030-01-01 00:00' WHERE id = %s",
        (dup,),
    )
    # a member that stops matching leaves its group: two records again
    split = sorted(merged_away - g0)[0]
    stack.sql(
        "UPDATE public.members SET email = 'someone.else@example.com', phone = NULL WHERE id = %s",
        (split,),
    )
    stack.fence()
    with stack.tgt() as c:
        assert c.execute(
            "SELECT birth_date::text FROM crm.people WHERE legacy_id = %s", (s0,)
        ).fetchone() == ("1999-09-09",)
        assert c.execute("SELECT 1 FROM crm.people WHERE legacy_id = %s", (dup,)).fetchone() is None
        assert c.execute(
            "SELECT email FROM crm.people WHERE legacy_id = %s", (split,)
        ).fetchone() == ("someone.else@example.com",)
        cw = c.execute(
            "SELECT survivor_key FROM crossfade.crosswalk WHERE target_table = 'crm.people' AND member_key = %s",
            (json.dumps([split]),),
        ).fetchone()
        assert cw == (json.dumps([split]),)
    rep = _verify(stack, match=True)
    people_rep = next(t for t in rep["tables"] if t["name"] == "crm.people")
    assert (
        people_rep["mapping"]["merged_duplicates"] == len(merged_away) - 1
    )  # the split pair is two people now
    # deleting the survivor hands the group to the next member
    stack.sql("DELETE FROM public.notes WHERE member_id = %s", (s0,))
    stack.sql("DELETE FROM public.members WHERE id = %s", (s0,))
    stack.fence()
    with stack.tgt() as c:
        rest = sorted(g0 - {s0})
        assert c.execute(
            "SELECT count(*) FROM crm.people WHERE legacy_id = ANY(%s)", (rest,)
        ).fetchone() == (1,)
        assert c.execute("SELECT 1 FROM crm.people WHERE legacy_id = %s", (s0,)).fetchone() is None
    _verify(stack, match=True)


CUSTOMERS_DDL = "CREATE TABLE public.customers (id int PRIMARY KEY, name text, email text)"
CUSTOMERS_TARGET = "CREATE SCHEMA crm; CREATE TABLE crm.customers (cid int PRIMARY KEY, name text, email text NOT NULL)"


def _customers_mapping(faulty: bool) -> dict[str, Any]:
    name: dict[str, Any] = (
        {"const": "BROKEN"} if faulty else {"from": "name", "transforms": ["name"]}
    )
    rules = {"email": {"required": True, **({"pattern": "^nobody$"} if faulty else {})}}
    return {
        "tables": {
            "public.customers": {
                "targets": [
                    {
                        "table": "crm.customers",
                        "columns": {
                            "cid": "id",
                            "name": name,
                            "email": {"from": "email", "transforms": ["email"]},
                        },
                        "rules": rules,
                    }
                ]
            }
        }
    }


def test_fault_31_rewind_drill_with_a_faulty_mapping(stack: Any) -> None:
    """FAULTS 31 as it happens: a mapping deploy writes bad rows (and dead-letters good ones);
    rewind to the checkpoint before it, replay with the fixed mapping, verify equal."""
    stack.sql(CUSTOMERS_DDL)
    stack.sql(
        "INSERT INTO customers SELECT g, '  ann   lee ' || g, 'c' || g || '@Example.com' FROM generate_series(1, 400) g"
    )
    with stack.tgt() as c:
        c.execute(CUSTOMERS_TARGET)
    stack.write_config(["public.customers"])

    def configure(faulty: bool) -> None:
        cfg = yaml.safe_load(stack.config_path.read_text())
        cfg["mapping"] = _customers_mapping(faulty)
        stack.config_path.write_text(yaml.safe_dump(cfg))

    configure(faulty=False)
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    _verify(stack, match=True)
    r = stack.cli("checkpoint", "create", "--name", "before-deploy")
    assert r.returncode == 0, r.stderr

    # the faulty deploy: every change from now on is mapped wrong or dead-lettered
    assert sync.stop() == 0
    configure(faulty=True)
    sync = stack.start("sync")
    stack.sql("UPDATE customers SET name = 'bo  ray ' || id WHERE id % 4 = 0")
    stack.sql(
        "INSERT INTO customers SELECT g, 'new ' || g, 'n' || g || '@example.com' FROM generate_series(401, 450) g"
    )
    stack.sql("DELETE FROM customers WHERE id BETWEEN 10 AND 19")
    stack.fence()
    with stack.tgt() as c:
        assert (
            c.execute(
                "SELECT count(*) FROM crossfade.ledger WHERE outcome = 'dead_letter'"
            ).fetchone()[0]
            > 100
        )
    assert sync.stop() == 0
    configure(faulty=False)
    _verify(stack, match=False, no_fence=True)

    # rewind and replay with the fixed mapping
    r = stack.cli("rewind", "--to", "before-deploy", "--json")
    assert r.returncode == 0, r.stderr
    stack.start("sync")
    stack.fence()
    _verify(stack, match=True)
    with stack.tgt() as c:
        assert c.execute(
            "SELECT count(*) FROM crossfade.ledger WHERE outcome = 'dead_letter'"
        ).fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM crm.customers WHERE name = 'BROKEN'").fetchone() == (
            0,
        )
        assert c.execute("SELECT name, email FROM crm.customers WHERE cid = 4").fetchone() == (
            "Bo Ray 4",
            "c4@example.com",
        )
    # and the strict guard again afterwards
    stack.sql("UPDATE customers SET email = 'LATER@example.com' WHERE id = 4")
    stack.fence()
    _verify(stack, match=True)


def test_fault_27_child_before_parent_is_deferred_then_applied(stack: Any) -> None:
    """A child row committed before its parent (no FK in the legacy database) waits, then applies."""
    with stack.src() as c:
        c.execute(LEGACY_DDL)
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
    _configure(stack, _mapping(window_s=120))
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.sql("INSERT INTO public.notes VALUES (1, 42, 'child first')")
    stack.fence()
    assert _ledger(stack, "deferred") == {"crm.notes.person_id:references": {1}}
    with stack.tgt() as c:
        assert c.execute("SELECT count(*) FROM crm.notes").fetchone() == (0,)
    stack.sql(
        "INSERT INTO public.members VALUES (42, 'Pat Doe', 'pat@example.com', NULL, '1970-01-01', 'GB', true, "
        "'2024-01-01', '2024-01-01 10:00')"
    )
    stack.fence()
    wait_for(lambda: not _ledger(stack, "deferred"), 30, "the deferred child to apply")
    with stack.tgt() as c:
        assert c.execute("SELECT person_id, body FROM crm.notes").fetchall() == [
            (42, "child first")
        ]
    assert _ledger(stack, "dead_letter") == {}
    _verify(stack, match=True)


def test_fault_28_validation_failure_is_a_dead_letter_with_its_rule(stack: Any) -> None:
    """A record failing a rule goes to the dead-letter topic with the rule, the source table, key
    and position; sync goes on; the accounting closes."""
    with stack.src() as c:
        c.execute(LEGACY_DDL)
        c.execute(
            "INSERT INTO public.members VALUES (1, 'Ok Person', 'ok@example.com', NULL, '1970-01-01', 'GB', true, "
            "'2024-01-01', '2024-01-01 10:00'), (2, 'No Mail', NULL, NULL, '1970-01-01', 'GB', true, "
            "'2024-01-01', '2024-01-01 10:00')"
        )
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
    _configure(stack, _mapping(window_s=0))
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    assert _ledger(stack, "dead_letter") == {"crm.people.email:required": {2}}
    with stack.tgt() as c:
        assert [r[0] for r in c.execute("SELECT legacy_id FROM crm.people")] == [1]
    s = stack.settings
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {**s.kafka.client_config(), "group.id": "cf-test-dlq", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(s.kafka.dlq_topic, 0, 0)])
        m = consumer.poll(15)
    finally:
        consumer.close()
    assert m is not None and m.error() is None
    headers = {k: v.decode() for k, v in m.headers() or []}
    assert headers["crossfade.dlq.rule"] == "crm.people.email:required"
    assert (
        headers["crossfade.dlq.table"] == "public.members"
        and headers["crossfade.dlq.source_key"] == "[2]"
    )
    assert int(headers["crossfade.dlq.position"]) > 0 and headers[
        "crossfade.dlq.topic"
    ] == s.kafka.table_topic("public.members")
    assert m.value()  # the original event bytes
    listing = _dlq_list(stack)
    assert (
        listing["accounting_closes"]
        and listing["by_rule"][0]["rule"] == "crm.people.email:required"
    )


@pytest.mark.parametrize("initial_load", ["copy", "debezium"])
def test_identity_and_mapped_tables_together_load(stack_factory: Any, initial_load: str) -> None:
    """One mapped and one identity table: the mapping applies per event in sync, so the default
    ``capture.initial_load: copy`` sends every table's rows as snapshot events by COPY (a COPY
    load in this epoch, nothing copied into the target by capture), and ``debezium`` loads them
    through Debezium's snapshot (no COPY load); both ways they arrive whole, mapped and as they
    are; changes follow."""
    stack = stack_factory(initial_load=initial_load)
    stack.sql("CREATE TABLE public.customers (id int PRIMARY KEY, name text, email text)")
    stack.sql("CREATE TABLE public.items (id int PRIMARY KEY, label text)")
    stack.sql(
        "INSERT INTO customers SELECT g, 'c ' || g, 'c' || g || '@example.com' "
        "FROM generate_series(1, 300) g"
    )
    stack.sql("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g")
    with stack.tgt() as c:
        c.execute("CREATE SCHEMA crm; CREATE TABLE crm.customers (cid int PRIMARY KEY, name text)")
    stack.write_config(["public.customers", "public.items"])
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["mapping"] = {
        "tables": {
            "public.customers": {
                "targets": [{"table": "crm.customers", "columns": {"cid": "id", "name": "name"}}]
            }
        }
    }
    stack.config_path.write_text(yaml.safe_dump(cfg))
    capture = stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.sql("UPDATE customers SET name = 'renamed' WHERE id <= 10")
    stack.sql("DELETE FROM items WHERE id > 450")
    stack.fence()
    with stack.tgt() as t:
        assert t.execute(
            "SELECT count(*), count(*) FILTER (WHERE name = 'renamed') FROM crm.customers"
        ).fetchone() == (300, 10)
        assert t.execute("SELECT count(*), max(id) FROM public.items").fetchone() == (450, 450)
    loads = [json.loads(p.read_text()) for p in (stack.dir / "capture").glob("load-*.json")]
    if initial_load == "copy":
        assert "load as snapshot events by COPY" in capture.log.read_text()
        assert len(loads) == 1 and loads[0]["done"], loads
    else:
        assert not loads  # no COPY load ran: Debezium's snapshot
