"""capture's handler produces the same Kafka records, byte for byte, as the code it replaced.

``capture_handle_golden.json`` holds what :meth:`ChangeProducer.handle` produced (topic, key,
value, headers, partition, in order) for the batches below before its per-record path was cut
down for CPU (issue 22): the pgbench mix (UPDATEs of accounts/tellers/branches, INSERTs into
history), snapshot rows (``true`` then ``last``: the floor, the position header of a snapshot
row, the end-of-snapshot sweep markers), a delete with a ``before``, a tombstone (no value), a
truncate (no key: partition 0), an echo of crossfade's own sync (not produced), a heartbeat and a
fence (control records), and the record of ``debezium_record.json`` (every column type the
encoder tests cover) both with its schema beside it and in its ``{"schema", "payload"}`` envelope.

Regenerate only on purpose (a deliberate change of the bytes):
``.venv/bin/python -m tests.unit.test_capture_handle_bytes``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.capture_handler_cpu import key_schema, row_payload, value_schema

from crossfade import metrics
from crossfade.capture.connector import FENCE_TABLE
from crossfade.capture.service import ChangeProducer
from crossfade.config import Settings
from crossfade.events.framing import SchemaCache

GOLDEN = Path(__file__).with_name("capture_handle_golden.json")
RECORD = json.loads(Path(__file__).with_name("debezium_record.json").read_text())
PREFIX = "cf"
TABLES = ("pgbench_accounts", "pgbench_tellers", "pgbench_branches", "pgbench_history", "t")


class _Publisher:
    def __init__(self) -> None:
        self.cache = SchemaCache()

    def publish(self, avro_schema: dict[str, Any]) -> Any:
        return self.cache.add(json.dumps(avro_schema))


class _Msg:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._t, self._p, self._o = topic, partition, offset

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o


class _Producer:
    """Keeps what is produced; delivers at poll/flush with rising offsets per partition."""

    def __init__(self) -> None:
        self.out: list[list[Any]] = []
        self._pending: list[tuple[Any, _Msg]] = []
        self._offsets: dict[tuple[str, int], int] = {}

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int = -1,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        hdrs = [[k, v.hex()] for k, v in (headers or [])]
        self.out.append(
            [topic, key and key.hex(), value and value.hex(), hdrs, partition, timestamp]
        )
        p = max(partition, 0)
        off = self._offsets[(topic, p)] = self._offsets.get((topic, p), -1) + 1
        self._pending.append((on_delivery, _Msg(topic, p, off)))

    def poll(self, _timeout: float = 0) -> int:
        pending, self._pending = self._pending, []
        for cb, msg in pending:
            if cb is not None:
                cb(None, msg)
        return len(pending)

    def flush(self, _timeout: float = 0) -> int:
        self.poll()
        return 0


class _Reader:
    def read(self, records: Any) -> Any:
        return records


def _row(table: str, key: Any, payload: Any, *, schemas: bool = True) -> tuple[Any, ...]:
    topic = f"{PREFIX}.public.{table}"
    key_text = None if key is None else json.dumps(key).encode()
    value_text = None if payload is None else json.dumps(payload).encode()
    ks, vs = key_schema(table), value_schema(table)
    return (
        topic,
        key_text,
        value_text,
        None if ks is None or key is None else json.dumps(ks),
        None if payload is None else json.dumps(vs),
    )


def _batches() -> list[list[tuple[Any, ...]]]:
    snap: list[tuple[Any, ...]] = []
    for i, flag in enumerate(("true", "true", "last")):
        key, p = row_payload("pgbench_accounts", 10 + i)
        p["op"], p["source"]["snapshot"], p["source"]["lsn"] = "r", flag, 5_000_000
        snap.append(_row("pgbench_accounts", key, p))
    stream = [_row(TABLES[i % 4], *row_payload(TABLES[i % 4], i)) for i in range(1, 41)]
    key, p = row_payload("pgbench_accounts", 99)
    p["op"], p["before"], p["after"] = "d", p["after"], None
    stream.append(_row("pgbench_accounts", key, p))
    stream.append(_row("pgbench_accounts", key, None))  # the delete's tombstone
    _, p = row_payload("pgbench_accounts", 100)
    p["op"], p["after"] = "t", None
    stream.append(_row("pgbench_accounts", None, p))  # truncate: no key
    key, p = row_payload("pgbench_accounts", 101)
    p["source"]["origin"] = "crossfade_sync_1"  # written by crossfade's own sync: skipped
    stream.append(_row("pgbench_accounts", key, p))
    stream.append(("__debezium-heartbeat.cf", None, b'{"ts_ms":1}', None, None))
    fence = {"op": "c", "after": {"token": "tok-1"}, "source": {"lsn": 99_999_999, "ts_ms": 7}}
    stream.append((f"{PREFIX}.{FENCE_TABLE}", None, json.dumps(fence).encode(), None, "{}"))
    key_doc, value_doc = json.loads(RECORD["key"]), json.loads(RECORD["value"])
    value_doc["payload"]["source"]["snapshot"] = "false"
    t = f"{PREFIX}.public.t"
    stream.append(
        (
            t,
            json.dumps(key_doc["payload"]).encode(),
            json.dumps(value_doc["payload"]).encode(),
            json.dumps(key_doc["schema"]),
            json.dumps(value_doc["schema"]),
        )
    )
    stream.append((t, RECORD["key"].encode(), json.dumps(value_doc).encode(), None, None))
    return [snap, stream]


def _produced(tmp: Path) -> list[list[Any]]:
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1", "topic_prefix": PREFIX},
        tables=[f"public.{t}" for t in TABLES],
        capture={"converter": "python"},  # the JSON path these records take
    )
    partitions = {f"{PREFIX}.public.{t}": 2 for t in TABLES}
    prod = ChangeProducer(settings, _Publisher(), partitions)  # type: ignore[arg-type]
    fake = _Producer()
    prod.producer = fake  # type: ignore[assignment]
    prod._reader = _Reader()
    prod.set_epoch("golden", tmp)
    for batch in _batches():
        prod.handle(batch)
    assert prod.stats.echoes_skipped == 1 and prod.stats.fences == 1
    return fake.out


def test_handle_produces_the_golden_records(tmp_path: Path) -> None:
    want = json.loads(GOLDEN.read_text())
    got = _produced(tmp_path)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"record {i} differs"


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(json.dumps(_produced(Path(d)), indent=0) + "\n")
    print(f"wrote {GOLDEN}")


def test_handle_counts_its_threads_cpu(tmp_path: Path) -> None:
    """The handler's CPU metric is the CPU of the thread inside ``handle`` (bench.run cdc splits
    the handler thread's CPU with it): more than nothing, no more than the thread spent."""
    counter = metrics.CAPTURE_HANDLER_CPU
    before, cpu0 = counter._value.get(), time.thread_time()
    _produced(tmp_path)
    spent, counted = time.thread_time() - cpu0, counter._value.get() - before
    assert 0 < counted <= spent
