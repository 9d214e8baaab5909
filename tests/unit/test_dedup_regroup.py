"""The live regroup of a deduplicated target (crossfade.sync.sinks.dedup.DedupWriter) leaves the
groups the batch Deduper (audit, dry-run, verify) finds over all members, also around a block
too large to compare pairwise: a switchboard's phone number shared by thousands of contacts
under a "same phone, similar name" rule gives no match and must not stop sync (it did: the
regroup followed the block to more than MAX_COMPONENT members), and a block that grows past
that size, or shrinks back under it, splits or joins the groups that rested on it."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from crossfade.catalog import read_shape
from crossfade.config.mapping import DedupSpec
from crossfade.mapping.dedup import MAX_FUZZY_BLOCK, Deduper
from crossfade.mapping.engine import Mapper
from crossfade.sync.key_text import key_text
from crossfade.sync.sinks.dedup import MAX_COMPONENT, DedupWriter
from crossfade.sync.sinks.mapped_source import RowChange
from crossfade.target.store import ensure_schema

BK = "dr_crossfade"
T = "dr_app.people"
COLS = ("person_id", "full_name", "phone", "email", "updated_at")
SPEC = DedupSpec.model_validate(
    {
        "match": [
            {"name": "same-email", "all": [{"column": "email"}]},
            {
                "name": "same-phone-similar-name",
                "all": [
                    {"column": "phone"},
                    {"column": "full_name", "method": "fuzzy", "threshold": 90},
                ],
            },
        ],
        "survivorship": {"recency": "updated_at", "survivor": "oldest"},
    }
)
SWITCHBOARD = "+1 555 0100"


@pytest.fixture
def db(dsn: str) -> Iterator[str]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS dr_app CASCADE; DROP SCHEMA IF EXISTS {BK} CASCADE")
        c.execute("CREATE SCHEMA dr_app")
        c.execute(
            "CREATE TABLE dr_app.people (person_id bigint PRIMARY KEY, full_name text, "
            "phone text, email text, updated_at bigint, _cf_pos numeric)"
        )
        ensure_schema(c, BK)
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS dr_app CASCADE; DROP SCHEMA IF EXISTS {BK} CASCADE")


class Live:
    """A DedupWriter over dr_app.people, fed batch by batch, and the rows it was given."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn)
        self.writer = DedupWriter(
            read_shape(self.conn, T),
            ("person_id",),
            COLS,
            SPEC,
            Mapper(None, ["public.people"], {"public.people": ["person_id"]}),
            BK,
        )
        self.rows: dict[int, dict[str, Any]] = {}
        self.pos = 0

    def batch(self, upserts: list[dict[str, Any]], deletes: list[int] = ()) -> None:  # type: ignore[assignment]
        changes = []
        for r in upserts:
            self.pos += 1
            self.rows[r["person_id"]] = r
            changes.append(RowChange((r["person_id"],), dict(r), self.pos))
        for pid in deletes:
            self.pos += 1
            self.rows.pop(pid)
            changes.append(RowChange((pid,), None, self.pos))
        with self.conn.transaction():
            self.writer.apply(self.conn, changes)

    def expected(self) -> tuple[set[int], dict[str, str]]:
        """The batch Deduper over every live row: the target's keys, member -> survivor."""
        d = Deduper(T, SPEC, keep=list(COLS), key_columns=["person_id"])
        for pid in sorted(self.rows):
            d.add((pid,), self.rows[pid], T)
        survivor = {key_text([pid]): key_text([pid]) for pid in self.rows}
        for g in d.groups():
            for m in g.members:
                survivor[key_text(list(m.key))] = key_text(list(g.survivor.key))
        keys = {int(s[1:-1]) for s in survivor.values()}
        return keys, survivor

    def actual(self) -> tuple[set[int], dict[str, str]]:
        keys = {r[0] for r in self.conn.execute("SELECT person_id FROM dr_app.people")}
        survivor = dict(
            self.conn.execute(
                f"SELECT member_key, survivor_key FROM {BK}.crosswalk WHERE target_table = %s",
                (T,),
            ).fetchall()
        )
        self.conn.commit()
        return keys, survivor


@pytest.fixture
def live(db: str) -> Iterator[Live]:
    lv = Live(db)
    yield lv
    lv.conn.close()  # before the schemas are dropped: a failed batch's transaction holds locks


def _name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_lowercase, k=14))


def _person(pid: int, name: str, phone: str | None = SWITCHBOARD, email: str | None = None) -> Any:
    return {"person_id": pid, "full_name": name, "phone": phone, "email": email, "updated_at": pid}


def test_a_switchboard_number_shared_by_more_than_max_component_records_does_not_stop_sync(
    live: Live,
) -> None:
    rng = random.Random(7)
    n = MAX_COMPONENT + 300
    people = [_person(i, _name(rng)) for i in range(1, n + 1)]
    people[10]["full_name"] = people[11]["full_name"]  # same phone, same name: not compared
    people[20]["email"] = people[30]["email"] = "shared@example.org"  # a real match
    for i in range(0, n, 700):
        live.batch(people[i : i + 700])
    live.batch([{**people[20], "full_name": "renamed"}])  # a change inside the big block
    assert live.actual() == live.expected()
    keys, survivor = live.actual()
    assert survivor[key_text([31])] == key_text([21]) and 31 not in keys
    assert survivor[key_text([11])] == key_text([11]) and {11, 12} <= keys


def test_a_block_growing_past_the_pairwise_limit_splits_its_groups_and_joins_them_again(
    live: Live,
) -> None:
    rng = random.Random(11)
    people = [_person(i, _name(rng)) for i in range(1, MAX_FUZZY_BLOCK + 1)]
    people[5]["full_name"] = people[6]["full_name"] + "x"  # similar names, same phone
    # 7 is also the survivor of a group by e-mail, with someone on another number
    people[6]["email"] = "seven@example.org"
    other = _person(10_000, _name(rng), phone="+1 555 0199", email="seven@example.org")
    live.batch([*people[:250], other])
    live.batch(people[250:])
    keys, survivor = live.actual()
    assert (keys, survivor) == live.expected()
    assert survivor[key_text([6])] == survivor[key_text([7])]  # the block is compared
    live.batch([_person(MAX_FUZZY_BLOCK + 1, _name(rng))])  # one more: too large to compare
    keys, survivor = live.actual()
    assert (keys, survivor) == live.expected()
    assert survivor[key_text([6])] != survivor[key_text([7])] and 6 in keys
    assert survivor[key_text([10_000])] == survivor[key_text([7])]  # the e-mail group stays
    live.batch([], deletes=[300])  # back to the limit: compared again
    keys, survivor = live.actual()
    assert (keys, survivor) == live.expected()
    assert survivor[key_text([6])] == survivor[key_text([7])]


def test_a_batch_of_more_than_max_component_unrelated_records_does_not_stop_sync(
    live: Live,
) -> None:
    """A full batch of a load (children held until their parents' snapshot finished: thousands
    of people in one batch, their few duplicates applied by another worker) is not a component
    of matching keys; sync stopped on it (`--sync-procs 2` with snapshot events)."""
    rng = random.Random(5)
    n = MAX_COMPONENT + 200
    people = [
        _person(i, _name(rng), phone=f"+1 555 {i:07d}", email=f"p{i}@example.org")
        for i in range(1, n + 1)
    ]
    twins = [_person(n + i, _name(rng), phone=None, email=f"p{i}@example.org") for i in (1, 2, 3)]
    live.batch(twins)  # applied earlier (by another worker): the batch's records match them
    live.batch(people)
    assert live.actual() == live.expected()
    keys, survivor = live.actual()
    assert survivor[key_text([n + 1])] == survivor[key_text([1])]


def test_block_keys_and_member_rows_are_made_before_the_dedup_lock(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a batch's changes alone make (their block keys, their rows as stored) reads nothing,
    so it is made before the table's dedup lock is taken (issue 22: the lock is held to the
    batch's commit, and two sync processes wait on it); the member positions (the guard) are
    read under it, and the regroup ends the same."""
    from crossfade.sync.sinks import dedup

    held_then: list[tuple[str, bool]] = []

    def holds() -> bool:
        row = live.conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
        ).fetchone()
        return bool(row and row[0])

    matcher, positions, json_row = live.writer.matcher, dedup.member_positions, dedup._json_row

    class Watched:
        columns = matcher.columns

        def __getattr__(self, name: str) -> Any:
            return getattr(matcher, name)

        def block_keys(self, values: Any) -> list[str]:
            held_then.append(("block_keys", holds()))
            return matcher.block_keys(values)

    def watched_row(values: Any) -> Any:
        held_then.append(("json_row", holds()))
        return json_row(values)

    def watched_positions(*a: Any) -> Any:
        held_then.append(("member_positions", holds()))
        return positions(*a)

    monkeypatch.setattr(live.writer, "matcher", Watched())
    monkeypatch.setattr(dedup, "_json_row", watched_row)
    monkeypatch.setattr(dedup, "member_positions", watched_positions)
    live.conn.commit()  # each batch its own transaction (the lock goes at its commit)
    live.batch([_person(1, "Ann Lee", email="a@x.org"), _person(2, "Bo Day", email="a@x.org")])
    live.conn.commit()
    live.batch([_person(2, "Bo Day", email="b@x.org")], deletes=[1])
    made = [held for what, held in held_then if what != "member_positions"]
    assert len(made) == 6 and not any(made)  # 3 upserts: block keys, then their rows
    assert [h for w, h in held_then if w == "member_positions"] == [True, True]
    assert live.actual() == live.expected()
