"""One COPY stream of the initial load, in a process of its own.

:class:`crossfade.capture.initial_load.CopyLoad` starts ``initial_load_workers`` of these. Relaying
COPY data in Python costs the interpreter ~0.3 µs per row (read from libpq directly, see
:func:`relay`; ~0.75 µs through psycopg's ``Copy`` iterator); done by threads inside
capture, that held capture's interpreter lock for the whole load and starved the thread starting
Debezium beside it (measured: Debezium's start, ~2.5 s on its own, finished only after the load).
In a process of its own each stream has its own interpreter, and Debezium starts during the copy.

It imports nothing but psycopg and speaks JSON lines (stdin: orders, stdout: answers):

- first line in: ``{"source": conninfo, "target": conninfo, "source_timeout": s, "target_timeout": s,
  "snapshot": name, "session": sql}``; it connects to both, imports the exported snapshot in a ``REPEATABLE READ``
  transaction and answers ``{"imported": true}``; no first line (capture starts its streams
  before it knows how many chunks there are): it exits 0 without connecting;
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
import select
import sys
import threading
import time
from typing import Any

import psycopg
from psycopg import pq, sql

_BLOCK = 256 * 1024


def _answer(**msg: Any) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(1)
        time.sleep(0.2)


def _copy_out(src: psycopg.Connection, source_sql: str) -> None:
    """Start ``COPY ... TO STDOUT`` on ``src``'s libpq connection: its rows are then read with
    ``get_copy_data`` (see :func:`relay`)."""
    pg = src.pgconn
    pg.send_query(source_sql.encode())
    res = pg.get_result()  # libpq sends what is queued and waits for the answer
    if res is None or res.status != pq.ExecStatus.COPY_OUT:
        raise _failure(src, res)


def _failure(src: psycopg.Connection, res: pq.abc.PGresult | None) -> psycopg.Error:
    if res is not None and res.status == pq.ExecStatus.FATAL_ERROR:
        return psycopg.errors.error_from_result(res, encoding=src.info.encoding)
    msg = src.pgconn.error_message.decode(errors="replace").strip()
    return psycopg.OperationalError(msg or "the source's COPY ended without a result")


def relay(
    src: psycopg.Connection,
    tgt: psycopg.Connection,
    source_sql: str,
    target_sql: str,
    rate: float = 0.0,
) -> int:
    """One chunk: COPY data passed on in blocks as it comes, in one target transaction. ``rate``
    > 0: at most that many rows per second (``capture.load_rate``'s share of this stream): the
    relay sleeps whenever it is ahead, so the source is read no faster.

    The source's rows are read from libpq directly (``get_copy_data``, one row per call, a
    socket wait only when libpq's buffer is empty) rather than through psycopg's ``Copy``
    iterator: its per-row generator and wait, and the collections of the cyclic garbage
    collector they trigger, cost 2.5 times the relay's CPU (0.37-0.40 s against 0.15 s per
    500k pgbench rows, one process). No row object outlives its read here either (a list of
    them would bring the collector back)."""
    t0, rows, step = time.monotonic(), 0, max(1, int(rate) // 20) if rate > 0 else 0
    pg = src.pgconn
    get = pg.get_copy_data
    with tgt.transaction(), tgt.cursor() as tc:
        with tc.copy(target_sql) as inp:  # noqa: SIM117 - the count is read once it ends
            _copy_out(src, source_sql)
            buf = bytearray()  # one row per read: passed on in blocks
            while True:
                n, data = get(1)
                if n > 0:
                    buf += data
                    rows += 1
                    if step and rows % step == 0:
                        ahead = rows / rate - (time.monotonic() - t0)
                        if ahead > 0:
                            time.sleep(ahead)
                    if len(buf) >= _BLOCK:
                        inp.write(buf)
                        buf = bytearray()
                elif n == 0:  # libpq's buffer is empty: wait for the socket (the GIL let go)
                    select.select([pg.socket], [], [])
                    pg.consume_input()
                else:
                    break
            if buf:
                inp.write(buf)
            res = pg.get_result()  # the source's "COPY n", or its error
            if res is None or res.status != pq.ExecStatus.COMMAND_OK:
                raise _failure(src, res)
            while pg.get_result() is not None:
                pass
        return max(tc.rowcount, 0)  # the target's "COPY n"


def main() -> int:
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    at = "reading its orders"
    try:
        first = sys.stdin.readline()
        if not first:  # started early and given no work (fewer chunks than streams)
            return 0
        order = json.loads(first)
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
