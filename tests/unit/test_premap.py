"""A batch maps its mapped tables' changes before its first statement (crossfade.sync.sinks.premap,
issue 22): dedup's table lock is held from a deduplicated target's write to the COMMIT, and the
mapping of what came after it in the batch (a second partition's run of the same table, the
children's table, ``follow_parents``' re-runs of this batch's children) ran under it, while the
other sync processes' dedup waited. Against a real PostgreSQL, through the commit step
(crossfade.sync.commit.BatchCommit) with a planner over JSON records: no ``Mapper.map_row`` runs
while the batch holds dedup's lock, and the batch ends exactly as the mapping at its turn left it
(target rows, ledger, child references, crosswalk, dead letters)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from crossfade import metrics
from crossfade.config.mapping import MappingConfig
from crossfade.events.decode import POSITION_HEADER
from crossfade.events.model import ChangeEvent
from crossfade.mapping.engine import Mapper
from crossfade.mapping.schema_check import load_mapper
from crossfade.sync.commit import BatchCommit
from crossfade.sync.dead_letters import DeadLetterTopic
from crossfade.sync.planner import Planner
from crossfade.sync.progress_log import RejectLog
from crossfade.sync.sinks import Tx
from crossfade.sync.sinks.mapped import MappedTables
from crossfade.sync.sinks.mapped_source import build_mapped
from crossfade.target.store import claim_partitions
from tests.sync_records import Msg

BK, GROUP = "pm_bk", "g"
ACCOUNTS, CONTACTS, ADDRESSES = "pm_src.accounts", "pm_src.contacts", "pm_src.addresses"
TOPICS = {f"cf.{t}": t for t in (ACCOUNTS, CONTACTS, ADDRESSES)}
OWNER = {(t, p): "me" for t in TOPICS for p in range(2)}
PEOPLE = "pm_tgt.people"
MAPPING: dict[str, Any] = {
    "tables": {
        ACCOUNTS: {
            "filters": [{"name": "inactive", "when": [{"column": "active", "eq": False}]}],
            "targets": [{"table": "pm_tgt.accounts", "columns": {"account_id": "id"}}],
        },
        CONTACTS: {
            "targets": [
                {
                    "table": PEOPLE,
                    "columns": {
                        "person_id": "id",
                        "account_id": "account_id",
                        "email": {"from": "email", "transforms": ["email"]},
                        "full_name": {"from": "name", "transforms": ["name"]},
                        "updated_at": "updated_at",
                    },
                    "rules": {
                        "email": {"required": True},
                        "account_id": {
                            "references": {
                                "table": "pm_tgt.accounts",
                                "column": "account_id",
                                "window_s": 300,
                            }
                        },
                    },
                }
            ]
        },
        ADDRESSES: {
            "targets": [
                {
                    "table": "pm_tgt.addresses",
                    "columns": {"address_id": "id", "person_id": "contact_id", "line": "line"},
                    "rules": {"person_id": {"references": "pm_tgt.people.person_id"}},
                }
            ]
        },
    },
    "dedup": {
        PEOPLE: {
            "match": [{"name": "same-email", "all": [{"column": "email"}]}],
            "survivorship": {"recency": "updated_at", "survivor": "oldest"},
        }
    },
}
DDL = """
DROP SCHEMA IF EXISTS pm_src CASCADE; DROP SCHEMA IF EXISTS pm_tgt CASCADE;
CREATE SCHEMA pm_src; CREATE SCHEMA pm_tgt;
CREATE TABLE pm_src.accounts (id int PRIMARY KEY, active bool);
CREATE TABLE pm_src.contacts (id int PRIMARY KEY, account_id int, email text, name text,
    updated_at int);
CREATE TABLE pm_src.addresses (id int PRIMARY KEY, contact_id int, line text);
CREATE TABLE pm_tgt.accounts (account_id int PRIMARY KEY);
CREATE TABLE pm_tgt.people (person_id int PRIMARY KEY, account_id int, email text,
    full_name text, updated_at int);
CREATE TABLE pm_tgt.addresses (address_id int PRIMARY KEY, person_id int, line text);
"""


class _JsonDecoder:
    """Decodes the test's records (JSON key and row; op ``d``: no row), for the planner and for
    the ledger's copies that ``follow_parents`` maps again."""

    def decode(
        self, key: bytes, value: bytes, table: str, pos: str | None = None, floor: int = 0
    ) -> ChangeEvent:
        v = json.loads(value)
        op = "d" if v is None else "c"
        return ChangeEvent(table, op, json.loads(key), v, 0, 0, int(pos or 0))


class _Producer:
    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []

    def produce(self, topic: str, **kw: Any) -> None:
        """Kept without the time it was produced at."""
        kw["headers"] = [(k, v) for k, v in kw.get("headers") or [] if k != "crossfade.dlq.ts"]
        self.produced.append(kw)

    def purge(self) -> None:
        pass

    def flush(self, timeout: float) -> int:
        return 0


class _Records:
    """Records of the test's topics, offsets counted per partition."""

    def __init__(self) -> None:
        self.offsets: dict[tuple[str, int], int] = {}

    def __call__(
        self, table: str, pos: int, row: dict[str, Any] | None, partition: int = 0, **key: Any
    ) -> Msg:
        topic = f"cf.{table}"
        off = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = off + 1
        k = key or {"id": row["id"] if row else None}
        headers = [(POSITION_HEADER, str(pos).encode())]
        return Msg(topic, partition, off, json.dumps(k).encode(), json.dumps(row).encode(), headers)


@pytest.fixture
def worker(dsn: str, fresh_bookkeeping: Callable[..., str]) -> Iterator[Callable[[], Any]]:
    """``start()``: (commit step, connection, dead-letter producer) of a worker owning every
    partition of the test's topics, on tables and bookkeeping made afresh."""
    conns: list[psycopg.Connection] = []

    def start() -> Any:
        fresh_bookkeeping(BK)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(DDL)
            mapper, report = load_mapper(
                MappingConfig.model_validate(MAPPING), [ACCOUNTS, CONTACTS, ADDRESSES], c, c
            )
            report.raise_for_errors()
            built = build_mapped(mapper, report, c, BK)
            claim_partitions(c, BK, GROUP, list(OWNER), "e1", "me")
        conn = psycopg.connect(dsn)
        conns.append(conn)
        mapped = MappedTables(*built, [ACCOUNTS, CONTACTS, ADDRESSES], BK)
        mapped.decoder = _JsonDecoder()  # type: ignore[assignment]
        producer = _Producer()
        commit = BatchCommit(
            bookkeeping_schema=BK,
            group_id=GROUP,
            planner=Planner(_JsonDecoder(), TOPICS, list(TOPICS.values())),  # type: ignore[arg-type]
            sinks=mapped.sink,
            mapped=mapped,
            dead_letters=DeadLetterTopic(producer, "dlq", RejectLog()),  # type: ignore[arg-type]
            meter=metrics.SyncMeter(),
        )
        return commit, conn, producer

    yield start
    for conn in conns:
        conn.close()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("DROP SCHEMA IF EXISTS pm_src CASCADE; DROP SCHEMA IF EXISTS pm_tgt CASCADE")


def _batches() -> list[list[Msg]]:
    r = _Records()
    first = [
        r(ACCOUNTS, 10, {"id": 1, "active": True}),
        r(ACCOUNTS, 11, {"id": 2, "active": False}),  # filtered: its people are dead letters
        # two partitions of contacts: two runs of the deduplicated target
        r(
            CONTACTS,
            20,
            {"id": 10, "account_id": 1, "email": "Ann@X.org", "name": "ann lee", "updated_at": 1},
        ),
        r(
            CONTACTS,
            21,
            {"id": 11, "account_id": 2, "email": "bo@x.org", "name": "bo", "updated_at": 1},
        ),
        r(
            CONTACTS,
            22,
            {"id": 12, "account_id": 1, "email": "ann@x.org", "name": "ANN LEE", "updated_at": 2},
            partition=1,
        ),
        r(
            CONTACTS,
            23,
            {"id": 13, "account_id": 3, "email": "cy@x.org", "name": "cy", "updated_at": 1},
            partition=1,
        ),  # its account never comes: deferred
        r(
            CONTACTS,
            24,
            {"id": 14, "account_id": 1, "email": None, "name": "x", "updated_at": 1},
            partition=1,
        ),
        # children of this batch's people (follow_parents maps them again) and of none
        r(ADDRESSES, 30, {"id": 100, "contact_id": 10, "line": "a"}),
        r(ADDRESSES, 31, {"id": 101, "contact_id": 12, "line": "b"}),
        r(ADDRESSES, 32, {"id": 102, "contact_id": 99, "line": "c"}, partition=1),
        r(ADDRESSES, 33, {"id": 100, "contact_id": 10, "line": "a2"}),  # the key's newest
    ]
    second = [
        r(CONTACTS, 40, None, id=10),  # the survivor leaves: the group hands over
        r(
            CONTACTS,
            41,
            {"id": 15, "account_id": 1, "email": "cy@x.org", "name": "cy two", "updated_at": 3},
            partition=1,
        ),
        r(ADDRESSES, 42, {"id": 103, "contact_id": 15, "line": "d"}, partition=1),
        r(ACCOUNTS, 43, {"id": 3, "active": True}),  # contact 13's account arrives
    ]
    return [first, second]


def _held(conn: psycopg.Connection, pid: int) -> bool:
    """Does session ``pid`` hold dedup's lock of the people table?"""
    row = conn.execute(
        "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' AND granted "
        "AND objsubid = 1 AND objid = (hashtext(%s)::bigint & 4294967295)",
        (pid, f"crossfade.dedup:{PEOPLE}"),
    ).fetchone()
    return bool(row and row[0])


def _run(start: Callable[[], Any]) -> tuple[dict[str, Any], list[Any]]:
    commit, conn, producer = start()
    for msgs in _batches():
        commit.run(Tx(conn), msgs, OWNER, [ACCOUNTS, CONTACTS, ADDRESSES])
    state = _state(conn)
    conn.rollback()  # its reads' locks go: the next start drops the tables
    return state, producer.produced


def _state(conn: psycopg.Connection) -> dict[str, Any]:
    def rows(q: str) -> list[Any]:
        return sorted(conn.execute(q).fetchall(), key=repr)

    return {
        "accounts": rows("SELECT * FROM pm_tgt.accounts"),
        "people": rows("SELECT * FROM pm_tgt.people"),
        "addresses": rows("SELECT * FROM pm_tgt.addresses"),
        "ledger": rows(
            f"SELECT source_table, entry, position, outcome, rule, reason, failures "
            f"FROM {BK}.ledger"
        ),
        "refs": rows(f"SELECT * FROM {BK}.child_refs"),
        "crosswalk": rows(f"SELECT member_key, survivor_key, rule FROM {BK}.crosswalk"),
        "members": rows(
            f"SELECT member_key, block_keys, row, position, deleted FROM {BK}.dedup_members"
        ),
        "offsets": rows(f"SELECT topic, partition, next_offset FROM {BK}.offsets"),
    }


def test_no_mapping_runs_while_the_batch_holds_dedups_lock(
    worker: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    commit, conn, _producer = worker()
    pid = conn.info.backend_pid
    watcher = psycopg.connect(conn.info.dsn, autocommit=True)
    held_then: list[tuple[int, str, int, bool]] = []
    map_row = Mapper.map_row
    batch = [0]

    def watched(self: Mapper, source: str, row: Any, **kw: Any) -> Any:
        held_then.append((batch[0], source, row["id"], _held(watcher, pid)))
        return map_row(self, source, row, **kw)

    monkeypatch.setattr(Mapper, "map_row", watched)
    try:
        for batch[0], msgs in enumerate(_batches()):
            commit.run(Tx(conn), msgs, OWNER, [ACCOUNTS, CONTACTS, ADDRESSES])
            assert not _held(watcher, pid)  # committed: released
    finally:
        watcher.close()
    # each change of a batch is mapped first before the batch's statements (before: the second
    # run of contacts, the addresses, and their re-runs once their people arrived, under it)
    changes = {  # rows to map (a delete maps its key only)
        (b, m.topic()[3:], json.loads(m.key())["id"])
        for b, ms in enumerate(_batches())
        for m in ms
        if m.value() != b"null"
    }
    firsts: dict[tuple[int, str, int], bool] = {}
    for b, source, key, held in held_then:
        firsts.setdefault((b, source, key), held)
    assert set(firsts) >= changes and not any(firsts[c] for c in changes)
    # under the lock, only what the database's answer decides: a second pass for a parent that
    # is missing (contact 13's account, address 102's person, contact 11's account filtered,
    # re-run once its account was noted), and the re-runs of earlier batches' children
    assert sorted((b, s, k) for b, s, k, held in held_then if held) == [
        (0, ADDRESSES, 102),
        (0, CONTACTS, 11),
        (0, CONTACTS, 13),
        (1, ADDRESSES, 100),  # its person left, its group handed over: re-run...
        (1, ADDRESSES, 100),  # ...and mapped again with its person missing
        (1, ADDRESSES, 101),
        (1, CONTACTS, 13),  # its account arrived
    ]
    state = _state(conn)
    survivor = {mk: sk for mk, sk, _r in state["crosswalk"]}
    assert survivor[json.dumps([12])] == json.dumps([12])  # 10 left: 12 survives alone
    # 15 joined 13 once 13 came out of its wait: its address points at the group's survivor
    assert [r[:3] for r in state["addresses"]] == [(101, 12, "b"), (103, 13, "d")]


def test_a_premapped_batch_ends_as_one_mapped_at_its_turn(
    worker: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same target rows, ledger (outcomes, rules, reasons), child references, crosswalk,
    members, offsets and dead letters as the mapping made at each change's turn."""
    premapped = _run(worker)
    monkeypatch.setattr(MappedTables, "premap", lambda self, tx, runs: None)
    at_its_turn = _run(worker)
    assert premapped == at_its_turn
    state, dead = premapped
    assert sorted((r[0][7:], r[1], r[3]) for r in state["ledger"]) == [
        ("accounts", "[1]", "mapped"),
        ("accounts", "[2]", "filtered"),
        ("accounts", "[3]", "mapped"),
        ("addresses", "[100]", "deferred"),  # its person left
        ("addresses", "[101]", "mapped"),
        ("addresses", "[102]", "deferred"),  # no such person
        ("addresses", "[103]", "mapped"),
        ("contacts", "[10]", "deleted"),
        ("contacts", "[11]", "dead_letter"),
        ("contacts", "[12]", "mapped"),
        ("contacts", "[13]", "mapped"),  # waited for its account
        ("contacts", "[14]", "dead_letter"),
        ("contacts", "[15]", "mapped"),
    ]
    assert len(dead) == 2  # contact 11 (its account is filtered), 14 (no email)


def _event(table: str, pos: int, **row: Any) -> ChangeEvent:
    return ChangeEvent(table, "c", {"id": row["id"]}, row, 0, 0, pos)


def test_a_rerun_takes_the_premapped_change_only_when_it_is_the_same_record() -> None:
    """follow_parents maps a ledger row again: the batch's premapped change stands in for it only
    for the same record (place, key and value bytes, headers) decoded at the same position."""
    from crossfade.sync.sinks.premap import Premapped, Premaps
    from crossfade.target.store.ledger import Origin

    e = _event(ADDRESSES, 30, id=100, contact_id=10, line="a")
    headers = {POSITION_HEADER: "30"}
    origin = Origin(f"cf.{ADDRESSES}", 0, 5, b"k", b"v", headers)
    store = Premaps()
    store.add([e], [e], [Premapped(e, "[100]", [100], {"id": 100}, origin)])
    place = (f"cf.{ADDRESSES}", 0, 5)
    again = _event(ADDRESSES, 30, id=100, contact_id=10, line="a")
    assert store.record(place, b"k", b"v", headers, again) is e
    assert store.of(e) is not None and store.of(again) is None
    later = _event(ADDRESSES, 31, id=100, contact_id=10, line="a")
    for args in (
        ((f"cf.{ADDRESSES}", 0, 6), b"k", b"v", headers, again),  # another record
        (place, b"k", b"w", headers, again),  # other bytes
        (place, b"k", b"v", {POSITION_HEADER: "31"}, later),  # another position
        (place, b"k", b"v", headers, _event(CONTACTS, 30, id=100)),  # another table
    ):
        assert store.record(*args) is args[-1]


def test_a_run_finds_its_premapped_survivors_only_for_the_same_events() -> None:
    """The commit step builds a partition's runs again to apply them: same events, same order."""
    from crossfade.sync.sinks.premap import Premaps

    a, b = _event(ADDRESSES, 1, id=1), _event(ADDRESSES, 2, id=2)
    store = Premaps()
    store.add([a, b], [b], [])
    assert store.survivors([a, b]) == [b]
    assert store.survivors([a, _event(ADDRESSES, 2, id=2)]) is None
    assert store.survivors([a]) is None and store.survivors([]) is None


def test_a_change_whose_mapping_raises_raises_at_its_turn_only(
    worker: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mapping that raises (a transform's bug) fails the batch as before when the change gets
    its turn; a change the ledger refuses (re-sent after a capture restart) is never mapped at
    its turn, so its batch commits as it did."""
    commit, conn, _producer = worker()
    r = _Records()
    row = {"id": 10, "account_id": None, "email": "a@x.org", "name": "a", "updated_at": 1}
    commit.run(Tx(conn), [r(CONTACTS, 20, row)], OWNER, [ACCOUNTS, CONTACTS, ADDRESSES])
    map_row = Mapper.map_row

    def broken(self: Mapper, source: str, row: Any, **kw: Any) -> Any:
        if row["id"] == 10:
            raise RuntimeError("a transform's bug")
        return map_row(self, source, row, **kw)

    monkeypatch.setattr(Mapper, "map_row", broken)
    resent = [r(CONTACTS, 20, row), r(ACCOUNTS, 21, {"id": 1, "active": True})]
    commit.run(Tx(conn), resent, OWNER, [ACCOUNTS, CONTACTS, ADDRESSES])
    assert _state(conn)["accounts"][0][0] == 1
    conn.rollback()
    with pytest.raises(RuntimeError, match="a transform's bug"):
        commit.run(Tx(conn), [r(CONTACTS, 22, row)], OWNER, [ACCOUNTS, CONTACTS, ADDRESSES])
