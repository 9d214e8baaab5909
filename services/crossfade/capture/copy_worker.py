"""One COPY stream of the initial load, in a process of its own.

:class:`crossfade.capture.initial_load.CopyLoad` starts ``initial_load_workers`` of these. Relaying
COPY data in Python costs about a microsecond of the interpreter per row; done by threads inside
capture, that held capture's interpreter lock for the whole load and starved the thread starting
Debezium beside it (measured: Debezium's start, ~2.5 s on its own, finished only after the load).
In a process of its own each stream has its own interpreter, and Debezium starts during the copy.

It imports nothing but psycopg and speaks JSON lines (stdin: orders, stdout: answers):

- first line in: ``{"source": conninfo, "target": conninfo, "source_timeout": s, "target_timeout": s,
  "snapshot": name, "session": sql}``; it connects to both, imports the exported snapshot in a ``REPEATABLE READ``
  transaction and answers ``{"imported": true}``;
- then per chunk in: ``{"source_sql": "COPY (...) TO STDOUT", "target_sql": "COPY ... FROM STDIN",
  "rate": rows/s}``; it relays the data (never parsed; at most ``rate`` rows per second when > 0)
  and commits the target's transaction: ``{"rows": n}``;
- or, for tables sync maps (``"topic"`` in the order), ``{"source_sql": "SELECT key, after ...",
  "topic": ..., schemas, frames, headers}``: it produces the rows to the change topic as snapshot
  events (:func:`crossfade.capture.snapshot_events.produce_chunk`, imported then: the Kafka
  client and the Avro encoder load only in streams that need them) and answers ``{"rows": n}``
  once the broker acknowledged every one;
- end of input: it ends the source transaction and exits 0.

Any failure answers ``{"error": "one line", "at": "what it was doing"}`` and exits 1. When its parent
dies it exits at once (its open target transaction rolls back): a capture killed mid-load leaves no
stream copying behind it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg import sql

_BLOCK = 256 * 1024


def _answer(**msg: Any) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.2)


def relay(
    src: psycopg.Connection,
    tgt: psycopg.Connection,
    source_sql: str,
    target_sql: str,
    rate: float = 0.0,
) -> int:
    """One chunk: COPY data passed on in blocks as it comes, in one target transaction. ``rate``
    > 0: at most that many rows per second (``capture.load_rate``'s share of this stream): the
    relay sleeps whenever it is ahead, so the source is read no faster."""
    t0, rows, step = time.monotonic(), 0, max(1, int(rate) // 20) if rate > 0 else 0
    with tgt.transaction(), tgt.cursor() as tc, src.cursor() as sc:
        with sc.copy(source_sql) as out, tc.copy(target_sql) as inp:  # noqa: SIM117
            buf = bytearray()  # psycopg hands over one row per read: pass them on in blocks
            for data in out:
                buf += data
                rows += 1
                if step and rows % step == 0:
                    ahead = rows / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
                if len(buf) >= _BLOCK:
                    inp.write(buf)
                    buf = bytearray()
            if buf:
                inp.write(buf)
        return max(tc.rowcount, 0)  # the target's "COPY n"


def main() -> int:
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    at = "reading its orders"
    try:
        order = json.loads(sys.stdin.readline())
        at = "connecting to the source database"
        src = psycopg.connect(
            order["source"], autocommit=False, connect_timeout=order["source_timeout"]
        )
        at = "connecting to the target database"
        tgt = psycopg.connect(
            order["target"], autocommit=True, connect_timeout=order["target_timeout"]
        )
        at = "importing the exported snapshot"
        src.execute(order["session"])
        src.commit()
        src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        src.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(order["snapshot"])))
        tgt.execute(order["session"])
        _answer(imported=True)
        producer = None
        for line in sys.stdin:
            chunk = json.loads(line)
            at = "copying " + chunk.get("label", "a chunk")
            if "topic" in chunk:
                from confluent_kafka import Producer

                from crossfade.capture.snapshot_events import produce_chunk, producer_config

                if producer is None:
                    producer = Producer(producer_config(order["client_config"]))
                _answer(rows=produce_chunk(src, producer, chunk))
                continue
            _answer(
                rows=relay(
                    src, tgt, chunk["source_sql"], chunk["target_sql"], chunk.get("rate") or 0.0
                )
            )
        src.rollback()
        src.close()
        tgt.close()
        return 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names it
        text = str(exc).strip()
        _answer(error=text.splitlines()[0] if text else type(exc).__name__, at=at)
        return 1


if __name__ == "__main__":
    sys.exit(main())
