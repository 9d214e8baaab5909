"""NaN and infinities in legacy rows never stall sync (FAULTS 24).

The target's columns took them already; the bookkeeping's ``jsonb`` (a dedup member's stored
row, a rule failure's value in the ledger) did not: PostgreSQL's ``jsonb`` refuses JSON's bare
``NaN``/``Infinity``, so the batch failed on every retry and sync stalled on its partition. Here
rows with ``NaN``, ``Infinity`` and ``-Infinity`` in ``float8``, ``real`` and ``numeric`` columns
are loaded and then streamed through a deduplicated mapped table (members of one group among
them), a rule that dead-letters an infinity and a NaN, and an identity table: sync reaches the fence, the
target holds the values, the dead letters carry their rule and reason, and verify says equal.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytestmark = pytest.mark.integration

LEGACY = """
CREATE TABLE public.people (id int PRIMARY KEY, email text, score float8, ratio real,
    level float8, amount numeric, updated_at timestamp);
CREATE TABLE public.readings (id int PRIMARY KEY, v float8, r real, n numeric, note text);
"""
TARGET = """
CREATE SCHEMA crm;
CREATE TABLE crm.people (legacy_id int PRIMARY KEY, email text, score float8, ratio real,
    level float8, amount numeric, updated_at timestamp);
"""

MAPPING = {
    "tables": {
        "public.people": {
            "targets": [
                {
                    "table": "crm.people",
                    "columns": {
                        "legacy_id": "id",
                        "email": "email",
                        "score": "score",
                        "ratio": "ratio",
                        "level": "level",
                        "amount": "amount",
                        "updated_at": "updated_at",
                    },
                    "rules": {"level": {"min": 0, "max": 10}},
                }
            ]
        }
    },
    "dedup": {
        "crm.people": {
            "match": [{"name": "same-email", "all": [{"column": "email"}]}],
            "survivorship": {"recency": "updated_at", "columns": {"ratio": "longest"}},
        }
    },
}

# (id, email, score, ratio, level, amount, updated_at): ids 1-3 one group (same email), 4-5
# another; 6 and 7 break the level rule (0..10) with an infinity, 10 with NaN, within no range
# (dead letters; 4's level was NaN and passed the rule, which compared NaN with < and >)
PEOPLE = """
INSERT INTO public.people VALUES
 (1, 'a@example.com', 'NaN', 'NaN', 1, 'NaN', '2024-01-01'),
 (2, 'a@example.com', 'Infinity', 'Infinity', 2, 1.5, '2024-01-02'),
 (3, 'a@example.com', '-Infinity', NULL, 3, 'NaN', '2024-01-03'),
 (4, 'b@example.com', 1.25, 'NaN', 6, 'NaN', '2024-01-01'),
 (5, 'b@example.com', 'NaN', NULL, 4, NULL, '2024-01-02'),
 (6, 'c@example.com', 'NaN', 'NaN', 'Infinity', 'NaN', '2024-01-01'),
 (7, 'd@example.com', 2.5, 1, '-Infinity', 2, '2024-01-01'),
 (10, 'f@example.com', 1, 1, 'NaN', 1, '2024-01-01')
"""
READINGS = """
INSERT INTO public.readings VALUES
 (1, 'NaN', 'NaN', 'NaN', 'n'), (2, 'Infinity', 'Infinity', 1.5, 'i'),
 (3, '-Infinity', '-Infinity', 'NaN', 'm'), (4, 1.5, 2.5, 3.5, 'f')
"""


def _ledger(stack: Any, outcome: str) -> dict[int, tuple[str, str, Any]]:
    """source key (first column) -> (rule, reason, failures) of this outcome."""
    with stack.tgt() as c:
        return {
            key[0]: (rule, reason, failures)
            for key, rule, reason, failures in c.execute(
                "SELECT source_key, rule, reason, failures FROM crossfade.ledger "
                "WHERE outcome = %s",
                (outcome,),
            ).fetchall()
        }


def _verify_equal(stack: Any) -> None:
    r = stack.cli("verify", "--json", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr
    rep = json.loads(r.stdout)
    assert rep["match"] is True, rep
    for t in rep["tables"]:
        if t.get("mapping"):
            assert all(a["closes"] for a in t["mapping"]["accounting"]), t


def _people(stack: Any) -> dict[int, tuple[Any, ...]]:
    with stack.tgt() as c:
        return {
            r[0]: r[1:]
            for r in c.execute(
                "SELECT legacy_id, email, score::text, ratio::text, level::text, amount::text "
                "FROM crm.people"
            )
        }


def test_nan_and_infinity_through_dedup_rules_and_identity(stack: Any) -> None:
    stack.sql(LEGACY)
    stack.sql(PEOPLE)
    stack.sql(READINGS)
    with stack.tgt() as c:
        c.execute(TARGET)
    stack.write_config(["public.people", "public.readings"], mapping=MAPPING)
    stack.start("capture")
    stack.start("sync")
    stack.fence(timeout=120)

    # one golden row per group under its survivor (the oldest: 1 and 4), most recent non-empty
    # values, and ratio's `longest` as when the members were in memory: float('nan') and
    # float('inf') are both 3 characters long, the oldest wins (not the text 'Infinity')
    assert _people(stack) == {
        1: ("a@example.com", "-Infinity", "NaN", "3", "NaN"),
        4: ("b@example.com", "NaN", "NaN", "4", "NaN"),
    }
    dead = _ledger(stack, "dead_letter")
    assert set(dead) == {6, 7, 10}
    for k, said, stored in ((6, "inf", "Infinity"), (7, "-inf", "-Infinity"), (10, "nan", "NaN")):
        rule, reason, failures = dead[k]
        assert rule == "crm.people.level:range" and said in reason, dead[k]
        # stored as PostgreSQL's to_jsonb('Infinity'::float8) spells it
        assert failures[0]["value"] == stored, failures
    with stack.tgt() as c:
        assert c.execute(
            "SELECT id, v::text, r::text, n::text FROM public.readings ORDER BY id"
        ).fetchall() == [
            (1, "NaN", "NaN", "NaN"),
            (2, "Infinity", "Infinity", "1.5"),
            (3, "-Infinity", "-Infinity", "NaN"),
            (4, "1.5", "2.5", "3.5"),
        ]
    _verify_equal(stack)

    # streamed: a new member of group a, a NaN update, a new dead letter, identity changes
    stack.sql(
        "INSERT INTO public.people VALUES "
        "(8, 'a@example.com', 'Infinity', 'Infinity', 5, 'NaN', '2024-02-01'), "
        "(9, 'e@example.com', 'NaN', 'NaN', 'Infinity', 'NaN', '2024-02-01')"
    )
    stack.sql("UPDATE public.people SET score = 'NaN', updated_at = '2024-03-01' WHERE id = 4")
    stack.sql("INSERT INTO public.readings VALUES (5, 'NaN', '-Infinity', 'NaN', 'x')")
    stack.sql("UPDATE public.readings SET v = 'Infinity', n = 'NaN' WHERE id = 4")
    stack.fence(timeout=120)
    # b's survivor is 5 now (4 became the most recent)
    assert _people(stack) == {
        1: ("a@example.com", "Infinity", "NaN", "5", "NaN"),
        5: ("b@example.com", "NaN", "NaN", "6", "NaN"),
    }
    assert set(_ledger(stack, "dead_letter")) == {6, 7, 9, 10}
    with stack.tgt() as c:
        assert c.execute(
            "SELECT v::text, r::text, n::text FROM public.readings WHERE id IN (4, 5) ORDER BY id"
        ).fetchall() == [("Infinity", "2.5", "NaN"), ("NaN", "-Infinity", "NaN")]
    _verify_equal(stack)

    # a wrong value planted in a row holding NaNs: verify names that column alone (NaN equals
    # NaN in the example's columns as in the comparison)
    with stack.tgt() as c:
        c.execute("UPDATE crm.people SET email = 'x@example.com' WHERE legacy_id = 5")
    r = stack.cli("verify", "--json", "--no-fence", timeout=300)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    (people,) = [t for t in json.loads(r.stdout)["tables"] if t["name"] == "crm.people"]
    assert people["different"] == 1 and people["rows"][0]["key"] == {"legacy_id": 5}, people
    assert set(people["rows"][0]["columns"]) == {"email"}, people["rows"]
