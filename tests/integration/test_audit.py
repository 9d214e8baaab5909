"""``crossfade audit`` and ``crossfade dry-run`` on a generated messy legacy CRM.

Every defect is injected on purpose, on its own row, so the test knows exactly what the audit
must report: duplicates differing by case and spacing (same email), duplicates by phone and name
(phones written in five formats), a household sharing a phone (not duplicates), invalid emails,
missing required emails, an invalid phone, an impossible date, orphaned notes, and inactive
members (filtered). Only the legacy database is read; nothing is written to it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

MAPPING = {
    "defaults": {"phone_region": "GB", "date_formats": ["%d/%m/%Y", "%d.%m.%Y"], "dayfirst": True},
    "tables": {
        "public.members": {
            "filters": [
                {
                    "name": "inactive-before-2015",
                    "when": [
                        {"column": "active", "eq": False},
                        {"column": "last_seen", "before": "2015-01-01"},
                    ],
                }
            ],
            "targets": [
                {
                    "table": "crm.people",
                    "columns": {
                        "legacy_id": "id",
                        "full_name": {"from": "full_name", "transforms": ["name"]},
                        "first_name": {
                            "from": "full_name",
                            "transforms": ["name", {"split_name": "first"}],
                        },
                        "last_name": {
                            "from": "full_name",
                            "transforms": ["name", {"split_name": "last"}],
                        },
                        "email": {"from": "email", "transforms": ["email"]},
                        "phone": {"from": "phone", "transforms": ["phone"]},
                        "birth_date": {"from": "dob", "transforms": ["date"]},
                        "country": {"from": "country", "transforms": ["country"]},
                        "updated_at": "updated_at",
                    },
                    "rules": {"email": {"required": True}},
                }
            ],
        },
        "public.notes": {
            "targets": [
                {
                    "table": "crm.notes",
                    "columns": {"legacy_id": "id", "person_id": "member_id", "body": "body"},
                    "rules": {"person_id": {"references": "crm.people.legacy_id"}},
                }
            ],
        },
    },
    "dedup": {
        "crm.people": {
            "match": [
                {"name": "same-email", "all": [{"column": "email"}]},
                {
                    "name": "phone-and-name",
                    "all": [
                        {"column": "phone"},
                        {"column": "full_name", "method": "fuzzy", "threshold": 90},
                    ],
                },
            ],
            "survivorship": {"recency": "updated_at"},
        }
    },
}

TARGET_DDL = """
CREATE SCHEMA crm;
CREATE TABLE crm.people (legacy_id int PRIMARY KEY, full_name text, first_name text, last_name text,
    email text NOT NULL, phone text, birth_date date, country char(2), updated_at timestamp);
CREATE TABLE crm.notes (legacy_id int PRIMARY KEY, person_id int, body text);
"""

FIRST = [
    "Alice",
    "Bruno",
    "Chloe",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ingrid",
    "Jamal",
    "Keiko",
    "Liam",
    "Maya",
    "Nikolai",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Samir",
    "Tess",
    "Umar",
    "Vera",
    "Wanda",
    "Xavier",
]
LAST = [
    "Abbott",
    "Brennan",
    "Castillo",
    "Dubois",
    "Eriksen",
    "Fontaine",
    "Gallagher",
    "Horvath",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quintero",
    "Rasmussen",
    "Santos",
    "Tanaka",
]
PHONE_FORMATS = [
    "020 7946 {n:04d}",
    "+44 20 7946 {n:04d}",
    "(020) 7946-{n:04d}",
    "0207946{n:04d}",
    "0044 20 7946 {n:04d}",
]
DOB_FORMATS = ["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y"]


def generate() -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(members, notes, what the audit must find)."""
    rng = random.Random(3)
    names = rng.sample([f"{f} {last}" for f in FIRST for last in LAST], 80)
    members: list[dict[str, Any]] = []
    expect: dict[str, Any] = {"rules": {}, "filtered": [], "groups": [], "orphans": []}

    def add(**kw: Any) -> int:
        mid = len(members) + 1
        row = {
            "id": mid,
            "full_name": None,
            "email": None,
            "phone": None,
            "dob": "1980-01-01",
            "country": "GB",
            "active": True,
            "last_seen": "2023-06-01",
            "updated_at": f"2023-01-{1 + mid % 27:02d} 10:00",
        }
        row.update(kw)
        members.append(row)
        return mid

    phone_no = iter(range(100, 999, 7))
    clean = []
    for i, name in enumerate(names[:60]):  # distinct people, each with a unique email and phone
        dob = f"19{50 + i % 40:02d}-{1 + i % 12:02d}-{1 + i % 27:02d}"
        import datetime as dt

        d = dt.date.fromisoformat(dob)
        clean.append(
            add(
                full_name=name,
                email=f"{name.lower().replace(' ', '.')}@example.com",
                phone=PHONE_FORMATS[i % 5].format(n=next(phone_no)),
                dob=d.strftime(DOB_FORMATS[i % 3]),
                country=["GB", "gb", "United Kingdom", "UK", "GBR"][i % 5],
            )
        )
    by_id = {m["id"]: m for m in members}
    # duplicates by email: same person typed again, case and spacing differ, phone in another format
    for orig in clean[:5]:
        m = by_id[orig]
        dup = add(
            full_name="  " + m["full_name"].upper().replace(" ", "   ") + " ",
            email=" " + m["email"].upper() + "  ",
            phone=None,
            updated_at="2024-02-01 09:00",
        )
        expect["groups"].append({orig, dup})
    # duplicates by phone + name: new email, same phone written differently, name re-cased
    for k, orig in enumerate(clean[5:8]):
        m = by_id[orig]
        digits = m["phone"][-4:]
        dup = add(
            full_name=m["full_name"].lower(),
            email=f"other{k}@mail.example.org",
            phone=PHONE_FORMATS[(clean.index(orig) + 2) % 5].format(n=int(digits)),
        )
        expect["groups"].append({orig, dup})
    # a household: same phone, different first name -> NOT the same person
    m = by_id[clean[8]]
    first, last = m["full_name"].split(" ")
    other_first = next(f for f in FIRST if f[0] != first[0] and f != first)
    add(full_name=f"{other_first} {last}", email="household@example.net", phone=m["phone"])
    # invalid emails, missing required emails, an invalid phone, an impossible date
    for bad in ["jane@", "no-at-sign.example.com", "two@@example.com", "sp ace@example.com"]:
        mid = add(
            full_name=names[60 + len(expect["rules"].get("crm.people.email:transform:email", []))],
            email=bad,
            phone=PHONE_FORMATS[0].format(n=next(phone_no)),
        )
        expect["rules"].setdefault("crm.people.email:transform:email", []).append(mid)
    for k, missing in enumerate([None, "", "   "]):
        mid = add(
            full_name=names[64 + k], email=missing, phone=PHONE_FORMATS[1].format(n=next(phone_no))
        )
        rule = "crm.people.email:required" if missing is None or not missing.strip() else ""
        if missing == "" or (missing and not missing.strip()):
            rule = "crm.people.email:transform:email"  # blank text is not an address
        expect["rules"].setdefault(rule, []).append(mid)
    mid = add(full_name=names[67], email="bad.phone@example.com", phone="12345")
    expect["rules"]["crm.people.phone:transform:phone"] = [mid]
    mid = add(
        full_name=names[68],
        email="bad.date@example.com",
        phone=PHONE_FORMATS[2].format(n=next(phone_no)),
        dob="31/02/1990",
    )
    expect["rules"]["crm.people.birth_date:transform:date"] = [mid]
    # inactive members: filtered when inactive AND last seen before 2015; the others migrate
    for k in range(4):
        mid = add(
            full_name=names[69 + k],
            email=f"gone{k}@example.com",
            phone=PHONE_FORMATS[3].format(n=next(phone_no)),
            active=False,
            last_seen=f"201{k}-05-01",
        )
        expect["filtered"].append(mid)
    add(
        full_name=names[73],
        email="recent.inactive@example.com",
        phone=PHONE_FORMATS[4].format(n=next(phone_no)),
        active=False,
        last_seen="2020-01-01",
    )
    add(
        full_name=names[74],
        email="old.active@example.com",
        phone=PHONE_FORMATS[4].format(n=next(phone_no)),
        active=True,
        last_seen="2010-01-01",
    )

    notes = []
    for i, mid in enumerate(clean[:20]):
        notes.append({"id": i + 1, "member_id": mid, "body": f"note {i}"})
    for k, ghost in enumerate([9001, 9002, 9003]):
        nid = len(notes) + 1
        notes.append({"id": nid, "member_id": ghost, "body": f"orphan {k}"})
        expect["orphans"].append(nid)
    expect["rows"] = len(members)
    return members, notes, expect


LEGACY_DDL = """
CREATE TABLE public.members (id int PRIMARY KEY, full_name text, email text, phone text, dob text, country text,
    active boolean NOT NULL, last_seen date, updated_at timestamp);
CREATE TABLE public.notes (id int PRIMARY KEY, member_id int, body text);
"""


def seed(stack: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """The generated legacy CRM in the stack's legacy database, the new tables in its target."""
    members, notes, expect = generate()
    with stack.src() as c:
        c.execute(LEGACY_DDL)
        with c.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.members VALUES (%(id)s, %(full_name)s, %(email)s, %(phone)s, %(dob)s, %(country)s, "
                "%(active)s, %(last_seen)s, %(updated_at)s)",
                members,
            )
            cur.executemany(
                "INSERT INTO public.notes VALUES (%(id)s, %(member_id)s, %(body)s)", notes
            )
    with stack.tgt() as c:
        c.execute(TARGET_DDL)
    return members, notes, expect


@pytest.fixture
def crm(stack: Any) -> tuple[Any, dict[str, Any]]:
    _members, _notes, expect = seed(stack)
    stack.write_config(["public.members", "public.notes"], mapping=MAPPING)
    return stack, expect


def _keys(examples_or_rows: list[dict[str, Any]]) -> set[Any]:
    return {e["key"] for e in examples_or_rows}


def test_audit_finds_every_injected_defect(crm: tuple[Any, dict[str, Any]], tmp_path: Path) -> None:
    stack, expect = crm
    html = tmp_path / "audit.html"
    r = stack.cli("audit", "--json", "--html", str(html), "--examples", "50")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    members, notes = report["tables"]  # parents first
    assert members["source"] == "public.members" and notes["source"] == "public.notes"
    assert (
        members["rows"] == expect["rows"]
        and members["accounting_closes"]
        and notes["accounting_closes"]
    )

    rules = {f["rule"]: f for f in members["rules"]}
    assert set(rules) == set(expect["rules"])
    for rule, ids in expect["rules"].items():
        assert rules[rule]["count"] == len(ids), rule
        assert _keys(rules[rule]["examples"]) == set(ids), rule
    assert members["rejected"] == sum(len(v) for v in expect["rules"].values())
    assert members["filtered"] == len(expect["filtered"]) and set(members["filtered_keys"]) == set(
        expect["filtered"]
    )

    assert [o["rule"] for o in notes["orphans"]] == ["crm.notes.person_id:references"]
    assert _keys(notes["orphans"][0]["examples"]) == set(expect["orphans"])
    assert report["summary"]["orphans"] == len(expect["orphans"])

    groups = [
        {m["source_key"][0] for m in g["members"]} for g in report["duplicates"]["crm.people"]
    ]
    assert sorted(map(sorted, groups)) == sorted(
        map(sorted, expect["groups"])
    )  # true duplicates, nothing else

    phone = next(c for c in members["columns"] if c["name"] == "phone")
    assert phone["format_count"] >= 5  # the five ways phones were written
    email = next(c for c in members["columns"] if c["name"] == "email")
    assert email["nulls"] == 1 and email["blanks"] == 2

    text = stack.cli("audit", "--skip-target-check", env={"COLUMNS": "200"})  # the terminal summary
    assert text.returncode == 0, text.stderr
    assert (
        "accounting per source table" in text.stdout and "crm.people.email:required" in text.stdout
    )

    page = html.read_text()
    assert (
        "Legacy data audit" in page
        and "crm.people.email:required" in page
        and "golden record" in page
    )


def test_dry_run_shows_rejects_filters_and_merges(crm: tuple[Any, dict[str, Any]]) -> None:
    stack, expect = crm
    r = stack.cli("dry-run", "--sample", "500", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    members = next(t for t in out["tables"] if t["source"] == "public.members")
    assert members["sampled"] == expect["rows"]
    rejected = {x["key"]: x["rule"] for x in members["rejected"]}
    assert rejected == {k: rule for rule, ids in expect["rules"].items() for k in ids}
    assert {x["key"] for x in members["filtered"]} == set(expect["filtered"])
    notes = next(t for t in out["tables"] if t["source"] == "public.notes")
    assert {x["key"] for x in notes["rejected"]} == set(expect["orphans"])
    groups = [{m["source_key"][0] for m in g["members"]} for g in out["merges"]["crm.people"]]
    assert sorted(map(sorted, groups)) == sorted(map(sorted, expect["groups"]))
    mapped = {m["key"]: m["targets"][0]["values"] for m in members["mapped"]}
    assert all(v["phone"] is None or v["phone"].startswith("+4420") for v in mapped.values())

    small = stack.cli("dry-run", "--sample", "5", "--no-merges")
    assert small.returncode == 0, small.stderr
    assert "public.members" in small.stdout and "crm.people" in small.stdout


def test_audit_names_table_and_column_of_a_misfit(crm: tuple[Any, dict[str, Any]]) -> None:
    stack, _ = crm
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["mapping"]["tables"]["public.members"]["targets"][0]["columns"]["phone"]["from"] = "phon"
    cfg["mapping"]["tables"]["public.members"]["targets"][0]["columns"]["birth_date"] = (
        "dob"  # text into date
    )
    stack.config_path.write_text(yaml.safe_dump(cfg))
    r = stack.cli("audit")
    assert r.returncode == 3
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1
    assert "source column public.members.phon does not exist (did you mean phone?)" in err
    assert (
        "columns.birth_date: source public.members.dob (text) does not fit crm.people.birth_date (date)"
        in err
    )


def _filter(stack: Any, when: list[dict[str, Any]]) -> None:
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["mapping"]["tables"]["public.members"]["filters"][0]["when"] = when
    stack.config_path.write_text(yaml.safe_dump(cfg))


def test_filter_literals_meet_the_column_type(crm: tuple[Any, dict[str, Any]]) -> None:
    """A quoted date against a date column is converted (and said so), never "no match" that
    would migrate every inactive member; a misspelt boolean and a YAML boolean against a text
    column are refused with the column, both types and the fix."""
    stack, expect = crm
    _filter(stack, [{"column": "active", "eq": False}, {"column": "last_seen", "lt": "2015-01-01"}])
    r = stack.cli("audit", "--json", "--skip-target-check")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["tables"][0]["filtered"] == len(expect["filtered"])
    assert any("lt '2015-01-01' is text" in w and "compared as" in w for w in report["warnings"])

    _filter(stack, [{"column": "active", "eq": "flase"}])
    r = stack.cli("audit", "--skip-target-check")
    err = r.stderr.strip()
    assert r.returncode == 3 and len(err.splitlines()) == 1, err
    assert "eq 'flase' is text, but public.members.active is boolean" in err
    assert "write true or false, unquoted" in err

    _filter(stack, [{"column": "country", "in": [False, "GB"]}])  # `in: [NO, GB]` in YAML
    r = stack.cli("dry-run", "--sample", "5", "--skip-target-check")
    assert (
        r.returncode == 3 and "False is a boolean, but public.members.country is text" in r.stderr
    )
    assert "quote a code like 'NO'" in r.stderr


def test_audit_and_dry_run_accept_append_only_tables(crm: tuple[Any, dict[str, Any]]) -> None:
    stack, _ = crm
    stack.sql("CREATE TABLE public.events (at timestamptz, what text)")  # no primary key
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["tables"].append("public.events")
    cfg["sync"]["append_only_tables"] = ["public.events"]
    stack.config_path.write_text(yaml.safe_dump(cfg))
    for cmd in (["audit", "--json"], ["dry-run", "--sample", "3", "--json"]):
        r = stack.cli(*cmd)
        assert r.returncode == 0, (cmd, r.stderr)
