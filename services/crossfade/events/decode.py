"""Kafka record -> :class:`ChangeEvent`.

Accepts both framings (Avro single-object encoding from embedded capture, Confluent wire format
from Kafka Connect's AvroConverter) and Debezium's change envelope. Anything that is not a
decodable Debezium envelope raises :class:`DecodeError`, which sync dead-letters with the reason.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from crossfade.config import KafkaConfig
from crossfade.errors import DecodeError
from crossfade.events.framing import Decoder
from crossfade.events.model import SHIFT, UNAVAILABLE, ChangeEvent, RowSchema, position
from crossfade.events.schema_store import TopicSchemaResolver

EPOCH_HEADER = "crossfade.epoch"
POSITION_HEADER = "crossfade.pos"
"""Set by crossfade's capture: the guard position, snapshot floor applied. Records produced by
Kafka Connect do not carry it; their position is derived from the envelope alone."""
_UNAVAILABLE_BYTES = UNAVAILABLE.encode()
_NONE: frozenset[str] = frozenset()
_KEY_CACHE = 4096


def header(m: Message, name: str) -> str | None:
    return header_in(m.headers(), name)


def header_in(hs: Any, name: str) -> str | None:
    """The value of header ``name`` in a record's ``headers()`` list (confluent_kafka builds the
    list on a record's first ``headers()`` call and returns it again after)."""
    if not hs:
        return None
    for k, v in hs:
        if k == name:
            if isinstance(v, bytes):  # a header is bytes from anyone: never fail on them
                return v.decode("utf-8", "replace")
            return None if v is None else str(v)
    return None


def _is_placeholder(v: Any) -> bool:
    if isinstance(v, str | bytes):
        return v in (UNAVAILABLE, _UNAVAILABLE_BYTES)
    return (
        isinstance(v, list)
        and len(v) == 1
        and isinstance(v[0], str | bytes)
        and v[0] in (UNAVAILABLE, _UNAVAILABLE_BYTES)
    )


_OPS: frozenset[Any] = frozenset(("c", "u", "d", "r", "t"))
_UPSERT_OPS = frozenset(("c", "u", "r"))


def _is_int(v: Any) -> bool:
    """An int that is not a bool (an Avro long as cavro or fastavro read it)."""
    return isinstance(v, int) and not isinstance(v, bool)


def _has_placeholder(value: bytes) -> bool:
    """Whether the record's bytes hold Debezium's unavailable-value marker (``bytes.find``:
    about a third of the ``in`` operator's CPU on a record's ~200 bytes, every event)."""
    if type(value) is bytes:
        return value.find(_UNAVAILABLE_BYTES) >= 0
    return _UNAVAILABLE_BYTES in value


_MAX_LSN = 2**64  # a PostgreSQL LSN is an unsigned 64-bit number
_MAX_POS = 2**128  # a position is two LSNs (crossfade.events.model.position)


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _whole(v: Any, what: str, bound: int) -> int:
    """``v`` as an int in ``[0, bound)``: an Avro long (or a decimal string for a header)."""
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise DecodeError(f"{what} is not a number (got {type(v).__name__} {_short(v)})")
    try:
        n = int(v)
    except ValueError:
        raise DecodeError(f"{what} is not a number (got {_short(v)})") from None
    if not 0 <= n < bound:
        raise DecodeError(f"{what} is out of range (got {_short(v)})")
    return n


def _position_header(v: str) -> int:
    """The ``crossfade.pos`` header as a position: :func:`_whole`'s rules, its checks only on a
    value it would refuse (this runs for every event)."""
    if type(v) is str:
        try:
            n = int(v)
        except ValueError:
            n = -1
        if 0 <= n < _MAX_POS:
            return n
    return _whole(v, f"header {POSITION_HEADER}", _MAX_POS)


def event_from_envelope(
    env: Any,
    table: str,
    *,
    row_schema: RowSchema | None = None,
    key: Any = None,
    key_schema: RowSchema | None = None,
    pos_header: str | None = None,
    placeholders: bool = False,
    floor: int = 0,
) -> ChangeEvent:
    """The :class:`ChangeEvent` of a decoded Debezium envelope (``key``: the decoded key datum).

    ``pos_header``: the position crossfade's capture computed (``crossfade.pos``). Without it
    (Kafka Connect) the position is derived from the envelope with ``floor``, the LSN of the
    snapshot the stream continues as sync learned it on the record's partition (see
    :func:`crossfade.events.model.position`).

    Anything that is not a well-formed envelope raises :class:`DecodeError` naming what is wrong
    (a ``source`` that is not a record, a ``source.lsn`` that is not a number, a non-numeric
    ``crossfade.pos`` header...): whatever the shape of one record, sync dead-letters that record
    and goes on. ``placeholders``: the record's bytes hold Debezium's unavailable-value marker.
    """
    try:
        return _event(env, table, row_schema, key, key_schema, pos_header, placeholders, floor)
    except DecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - any other shape problem is this record's alone
        raise _wrong_shape(table, exc) from None


def _wrong_shape(table: str, exc: Exception) -> DecodeError:
    return DecodeError(
        f"change event on {table} has the wrong shape ({type(exc).__name__}: {_short(exc)})"
    )


def _event(
    env: Any,
    table: str,
    row_schema: RowSchema | None,
    key: Any,
    key_schema: RowSchema | None,
    pos_header: str | None,
    placeholders: bool,
    floor: int = 0,
) -> ChangeEvent:
    # each check tries the exact type first: it saves ~12 isinstance calls per event
    is_dict = type(env) is dict or isinstance(env, dict)
    if not is_dict or "op" not in env or "source" not in env:
        raise DecodeError(f"record on {table} is not a Debezium change envelope (no op/source)")
    op = env["op"]
    if (type(op) is not str and not isinstance(op, str)) or op not in _OPS:
        raise DecodeError(f"unknown Debezium operation {_short(op)}")
    source = {} if (source := env["source"]) is None else source
    if type(source) is not dict and not isinstance(source, dict):
        raise DecodeError(
            f"the source of a change event on {table} is not a record "
            f"(got {type(source).__name__} {_short(source)})"
        )
    snap_raw = source.get("snapshot")
    if snap_raw is not None and type(snap_raw) is not str and not isinstance(snap_raw, str | bool):
        raise DecodeError(f"source.snapshot is not text (got {_short(snap_raw)})")
    snap = snap_raw if type(snap_raw) is str and snap_raw else str(snap_raw or "false")
    pos = None if pos_header is None else _position_header(pos_header)
    lsn_raw = source.get("lsn")
    if type(lsn_raw) is int and 0 <= lsn_raw < _MAX_LSN:
        lsn = lsn_raw  # what _whole accepts, without its call (every event)
    elif lsn_raw is None and snap == "incremental" and pos is not None:
        lsn = pos >> SHIFT  # incremental snapshot rows carry none: capture placed them
    elif lsn_raw is None:
        raise DecodeError("change event has no source position (source.lsn)")
    elif isinstance(lsn_raw, str):
        raise DecodeError(f"source.lsn is not a number (got text {_short(lsn_raw)})")
    else:
        lsn = _whole(lsn_raw, "source.lsn", _MAX_LSN)
    ts_raw = source.get("ts_ms")
    if type(ts_raw) is not int and ts_raw is not None and not _is_int(ts_raw):
        raise DecodeError(f"source.ts_ms is not a number (got {_short(ts_raw)})")
    tx_id = source.get("txId")
    if type(tx_id) is not int and tx_id is not None and not _is_int(tx_id):
        raise DecodeError(f"source.txId is not a number (got {_short(tx_id)})")
    if op == "t":
        key = None
    elif key is not None and type(key) is not dict and not isinstance(key, dict):
        raise DecodeError(f"key of {table} is not a record")
    upsert = op in _UPSERT_OPS
    after = env.get("after") if upsert else None
    if upsert and after is None:
        raise DecodeError(f"{op!r} change event of {table} has no 'after' row")
    if after is not None and type(after) is not dict and not isinstance(after, dict):
        raise DecodeError(f"the 'after' row of a change event on {table} is not a record")
    # a placeholder value is in the record's bytes as is (Avro strings and bytes are raw):
    # look at each column only when the bytes hold one
    if after and placeholders:
        unavailable = frozenset(c for c, v in after.items() if _is_placeholder(v))
    else:
        unavailable = _NONE
    if pos is None:
        pos = position(lsn, snapshot=snap not in ("false", "incremental"), floor=floor)
    # positional: the fields' order (ChangeEvent's own), cheaper than keywords per event
    return ChangeEvent(
        table,
        op,  # type: ignore[arg-type]  # one of Op's letters (checked on entry), no cast() call
        key,
        after,
        lsn,
        ts_raw or 0,  # an int (checked above) or None
        pos,
        snap,
        tx_id,
        row_schema,
        key_schema,
        unavailable,
    )


class EventDecoder:
    def __init__(self, kafka: KafkaConfig, resolver: Any | None = None) -> None:
        # `is None`, not `or`: an empty in-memory SchemaCache is falsy
        self.resolver = (
            resolver
            if resolver is not None
            else TopicSchemaResolver(
                kafka.client_config(), kafka.schemas_topic, kafka.schema_registry_url
            )
        )
        self.decoder = Decoder(self.resolver)
        self._keys: dict[bytes, tuple[Any, RowSchema]] = {}
        """Key record bytes -> (datum, key schema): a batch repeats the keys of its hot rows
        (pgbench's tellers and branches), and the bytes name their schema (fingerprint or id)."""

    def decode(
        self,
        key: bytes | None,
        value: bytes | None,
        table: str,
        pos_header: str | None = None,
        floor: int = 0,
    ) -> ChangeEvent:
        """One Kafka record's change event (``pos_header``, ``floor``: see
        :func:`event_from_envelope`). Raises :class:`DecodeError` for anything that is
        not one (bytes, schema or shape: see :func:`event_from_envelope`); a schema store that
        cannot be reached raises its transient error (retry, do not dead-letter)."""
        if value is None:
            raise DecodeError("tombstone has no change event")
        env, codec = self.decoder.decode_change_with_schema(value)
        key_datum: Any = None
        key_schema: RowSchema | None = None
        op = env.get("op") if type(env) is dict or isinstance(env, dict) else None
        if op != "t" and key is not None:
            hit = self._keys.get(key)
            if hit is None:
                key_datum, kcodec = self.decoder.decode_with_schema(key)
                key_schema = kcodec.row_schema
                if type(key_datum) is dict:  # shared by the events of one key: never mutated
                    if len(self._keys) >= _KEY_CACHE:
                        self._keys.clear()
                    self._keys[bytes(key)] = (dict(key_datum), key_schema)
            else:
                key_datum, key_schema = dict(hit[0]), hit[1]
        # event_from_envelope's body, without its keyword arguments (this runs for every event)
        try:
            return _event(
                env,
                table,
                codec.row_schema,
                key_datum,
                key_schema,
                pos_header,
                _has_placeholder(value),
                floor,
            )
        except DecodeError:
            raise
        except Exception as exc:  # noqa: BLE001 - any other shape problem is this record's alone
            raise _wrong_shape(table, exc) from None
