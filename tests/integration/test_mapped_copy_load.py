"""Mapped tables loaded by capture's COPY streams as snapshot events (capture/snapshot_events.py)
decode, in sync's decoder, exactly as Debezium's own snapshot of the same rows: key, op, every
value, every column's type (semantic name included) and the position's class; and the stream
continues from the slot after either load.

Each load runs capture alone; the change topic is read back with sync's :class:`EventDecoder`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from crossfade.events.decode import POSITION_HEADER, EventDecoder, header_in
from crossfade.events.kafka import CONTROL_HEADER, Admin, ControlRecord
from crossfade.events.model import SHIFT
from tests.conftest import Stack

pytestmark = pytest.mark.integration

DDL = """
CREATE TABLE public.alltypes (
    id bigint PRIMARY KEY, sm smallint, i int NOT NULL, txt text, vc varchar(10), ch char(3),
    bo boolean, n numeric(30,6), nv numeric, d date, ts timestamp, ts6 timestamp(6),
    tstz timestamptz, t time, u uuid, j jsonb, js json, f4 real, f8 float8, b bytea,
    tarr text[], varr varchar(5)[],
    seq serial, ok boolean NOT NULL DEFAULT true, made timestamptz NOT NULL DEFAULT now(),
    uid uuid NOT NULL DEFAULT gen_random_uuid()
);
CREATE TABLE public.pairs (a bigserial, b text, v text, PRIMARY KEY (b, a));
CREATE TABLE public.nokey (x int, y text);
"""

ROWS = """
INSERT INTO alltypes VALUES
 (1, -32768, -2147483648, 'héllo ☃ 𝄞 emoji 🎉 and ''quotes''', 'vc', 'ab', true, 123456789012345678901234.123456,
  12345678901234567890.123456789012, '2024-02-29', '2024-03-31 02:30:00.123456', '1970-01-01 00:00:00.000001',
  '2024-10-27 01:30:00+01', '23:59:59.999999', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{"a": [1, 2, {"b": null}], "é": "\\u00e9"}', '{"z": 1,  "a": 2}', 3.25, 1.5e300, '\\xdeadbeef00ff',
  '{"a b","c,d",NULL,"q\\"uote","back\\\\slash",""}', '{x,yy}'),
 (2, 32767, 2147483647, '', '', 'x', false, -0.000001, 'NaN', '0001-01-01', '1970-01-01 00:00:00',
  '1999-12-31 23:59:59.999999', '2024-03-10 02:30:00-05', '00:00:00', '00000000-0000-0000-0000-000000000000',
  '[]', 'null', 'Infinity', '-Infinity', '\\x', '{}', '{}'),
 (3, 0, 0, NULL, NULL, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  'NaN', 'NaN', NULL, NULL, NULL),
 (4, 1, 1, 'tab\\there' || repeat('x', 5000), 'ten chars!', 'abc', true, 0, 0.000000000000000000001,
  '1999-12-31', '2262-04-11 23:47:16.854775', '1900-01-01 00:00:00', '1969-12-31 23:59:59.999999+00',
  '12:00:00.5', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{"n": 1e400}', '{"k":[true,false]}', -0.0, 1e-30,
  '\\x00' || repeat('ab', 100)::bytea, '{"\\t tab","new\\nline"}', NULL),
 (5, NULL, 5, 'Ωμέγα', NULL, NULL, NULL, 1e20, 'Infinity', '9999-12-31', '0001-01-01 00:00:00',
  NULL, '0001-01-01 00:00:00+00', '00:00:00.000001', NULL, '{}', '{}', 1.17549435e-38, 2.2250738585072014e-308,
  NULL, NULL, NULL);
INSERT INTO alltypes (id, i, d, ts, tstz) VALUES (6, 6, 'infinity', '-infinity', 'infinity'),
 (7, 7, '-infinity', 'infinity', '-infinity');
INSERT INTO alltypes (id, i, txt, n, f8) SELECT g, g, 'row ' || g, g * 1.5, g / 7.0 FROM generate_series(10, 300) g;
-- the volatile DEFAULTs made alike in both loads' databases
UPDATE alltypes SET made = '2024-01-01 00:00:00+00', uid = md5(id::text)::uuid;
INSERT INTO pairs SELECT g, 'k' || (g % 3), 'v' || g FROM generate_series(1, 20) g;
INSERT INTO nokey VALUES (1, 'one'), (1, 'one'), (2, NULL);
"""

TABLES = ["public.alltypes", "public.pairs", "public.nokey"]

MAPPING = {
    "tables": {
        t: {"targets": [{"table": f"crm.{t.split('.')[1]}", "columns": {"x": "x"}}]} for t in TABLES
    }
}


def _start(stack: Stack) -> Any:
    stack.sql(DDL)
    stack.sql(ROWS)
    stack.write_config(TABLES, mapping=MAPPING)
    stack.start("capture")
    return stack.settings


def _read(stack: Stack, settings: Any, table: str, until: Callable[[list[Any]], bool]) -> list[Any]:
    """Every record of the table's topic (decoded by sync's decoder; control records as such)
    until ``until(records)``."""
    topic = settings.kafka.table_topic(table)
    admin = Admin(settings.kafka.client_config())
    deadline = time.monotonic() + 180
    while not admin.partitions(topic):
        assert time.monotonic() < deadline and not stack.dead_procs(), stack._diag()
        time.sleep(0.5)
    n = admin.partitions(topic)
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"cmp-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(n)])
    decoder = EventDecoder(settings.kafka)
    out: list[Any] = []
    try:
        while not until(out):
            assert time.monotonic() < deadline, f"{len(out)} records read{stack._diag()}"
            assert not stack.dead_procs(), stack._diag()
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            hs = msg.headers() or []
            if header_in(hs, CONTROL_HEADER):
                out.append(ControlRecord.decode(msg.value()))
                continue
            if msg.value() is None:
                continue
            ev = decoder.decode(msg.key(), msg.value(), table, header_in(hs, POSITION_HEADER))
            # the schemas' framing (single-object: marker and fingerprint) of key and value
            out.append((ev, (msg.key() or b"")[:10], msg.value()[:10]))
    finally:
        consumer.close()
    return out


def _sweeps(n: int) -> Callable[[list[Any]], bool]:
    return lambda recs: sum(isinstance(r, ControlRecord) and r.kind == "sweep" for r in recs) >= n


def _view(records: list[Any]) -> dict[str, Any]:
    """What sync decodes, per key (or per row for a table without one), in a form to compare."""
    rows: dict[str, Any] = {}
    for rec in records:
        if isinstance(rec, ControlRecord):
            continue
        ev = rec[0]
        types = {c: ev.row_schema.type_of(c) for c in ev.row_schema.columns}
        key = repr(ev.key) if ev.key is not None else repr(sorted(ev.after.items(), key=str))
        rows.setdefault(key, []).append(
            (
                ev.op,
                ev.after,
                types,
                ev.key_schema.columns if ev.key_schema else None,
                ev.snapshot not in ("false", "incremental"),
                ev.position & ((1 << SHIFT) - 1) == 0,  # a snapshot row's position: (S, 0)
            )
        )
    return rows


def _load(stack: Stack) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    settings = _start(stack)
    parts = stack.partitions
    out = {}
    for table in TABLES:
        snapshot = _read(stack, settings, table, _sweeps(parts))
        out[table] = (_view(snapshot), {})
    # the stream continues from the slot: one change per table after the load
    stack.sql(
        "UPDATE alltypes SET txt = 'after ☃' WHERE id = 1; INSERT INTO pairs VALUES (99, 'z', 'new');"
        "INSERT INTO nokey VALUES (3, 'three')"
    )
    for table in TABLES:
        recs = _read(
            stack,
            settings,
            table,
            lambda rs: any(
                not isinstance(r, ControlRecord) and r[0].snapshot == "false" for r in rs
            ),
        )
        events = [r for r in recs if not isinstance(r, ControlRecord)]
        streamed = [r for r in events if r[0].snapshot == "false"]
        out[table] = (out[table][0], _view(streamed))
        # the snapshot events carry the schemas (Avro fingerprints) Debezium's stream carries
        frames = {r[1:] for r in events}
        assert len(frames) == 1, (table, frames)
    return out


def test_snapshot_events_decode_as_debezium_snapshot(stack_factory: Callable[..., Stack]) -> None:
    dbz = _load(stack_factory(initial_load="debezium", append_only_tables=["public.nokey"]))
    copied_stack = stack_factory(initial_load="copy", append_only_tables=["public.nokey"])
    cop = _load(copied_stack)
    log = next(p for p in copied_stack.procs if p.name == "capture").log.read_text(errors="replace")
    assert "initial load done" in log, log[-3000:]
    assert "goes through Debezium's snapshot" not in log, log[-3000:]
    diffs: list[Any] = []  # every difference at once: a wrong conversion names its column
    for table in TABLES:
        d_snap, d_stream = dbz[table]
        c_snap, c_stream = cop[table]
        assert set(c_snap) == set(d_snap), table
        for key, want in d_snap.items():
            for w, g in zip(want, c_snap[key], strict=True):
                if (g[0], g[3], g[4], g[5]) != (w[0], w[3], w[4], w[5]):
                    diffs.append((table, key, "op/key schema/snapshot/position", w, g))
                for col, value in w[1].items():
                    got = g[1][col]
                    if not (got == value or (value != value and got != got)):  # NaN == NaN
                        diffs.append((table, key, col, value, got))
                    if g[2][col] != w[2][col]:
                        diffs.append((table, key, col, "type", w[2][col], g[2][col]))
        if c_stream != d_stream:
            diffs.append((table, "streamed", d_stream, c_stream))
    assert not diffs, "\n".join(map(repr, diffs))


def test_unsupported_type_falls_back_to_debezium(stack_factory: Callable[..., Stack]) -> None:
    """The default load of a mapped table whose column type the snapshot events do not cover:
    Debezium's snapshot, with one INFO line naming the column and type."""
    stack = stack_factory(initial_load="copy")
    stack.sql("CREATE TABLE public.iv (id int PRIMARY KEY, span interval)")
    stack.sql("INSERT INTO public.iv VALUES (1, '1 day'), (2, NULL)")
    stack.write_config(["public.iv"])
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["mapping"] = {
        "tables": {"public.iv": {"targets": [{"table": "crm.iv", "columns": {"id": "id"}}]}}
    }
    stack.config_path.write_text(yaml.safe_dump(cfg))
    stack.start("capture")
    settings = stack.settings
    recs = _read(stack, settings, "public.iv", _sweeps(stack.partitions))
    rows = [r[0] for r in recs if not isinstance(r, ControlRecord)]
    assert sorted(r.key["id"] for r in rows) == [1, 2]
    log = next(p for p in stack.procs if p.name == "capture").log.read_text(errors="replace")
    assert "public.iv.span is of type interval" in log, log[-3000:]


def test_capture_killed_during_the_mapped_load_loads_again(
    stack_factory: Callable[..., Stack],
) -> None:
    """SIGKILL while the COPY streams send snapshot events: the restart loads again from a new
    slot; rows deleted and changed in between end as the source has them (the re-sent rows win
    by position, the sweep after the second load removes the deleted ones)."""
    stack = stack_factory(initial_load="copy")
    stack.sql("CREATE TABLE public.big (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO big SELECT g, md5(g::text) FROM generate_series(1, 300000) g")
    with stack.tgt() as c:
        c.execute("CREATE SCHEMA crm; CREATE TABLE crm.big (bid int PRIMARY KEY, v text)")
    stack.write_config(["public.big"])
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["mapping"] = {
        "tables": {
            "public.big": {"targets": [{"table": "crm.big", "columns": {"bid": "id", "v": "v"}}]}
        }
    }
    stack.config_path.write_text(yaml.safe_dump(cfg))
    capture = stack.start("capture")
    stack.start("sync")
    deadline = time.monotonic() + 120
    while "initial load by COPY" not in capture.log.read_text(errors="replace"):
        assert time.monotonic() < deadline and capture.alive(), stack._diag()
        time.sleep(0.1)
    time.sleep(1.5)
    capture.kill()
    states = list((stack.dir / "capture").glob("load-*.json"))
    assert states and not any('"done": true' in p.read_text() for p in states), (
        "the load ended before the kill: nothing was interrupted"
    )
    stack.sql("DELETE FROM big WHERE id % 10 = 0")
    stack.sql("UPDATE big SET v = 'changed' WHERE id % 7 = 0")
    stack.start("capture")
    stack.fence()
    with stack.src() as s, stack.tgt() as t:
        want = s.execute(
            "SELECT count(*), count(*) FILTER (WHERE v = 'changed'), sum(id) FROM big"
        ).fetchone()
        got = t.execute(
            "SELECT count(*), count(*) FILTER (WHERE v = 'changed'), sum(bid) FROM crm.big"
        ).fetchone()
    assert got == want, (got, want)
