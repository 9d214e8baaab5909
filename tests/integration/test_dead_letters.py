"""FAULTS 25: corrupt Avro bytes on a change topic.

The record is dead-lettered with its topic, partition, offset and reason (and counted); the sync
keeps going for every other key; later changes of the *same* key are held back (applying them
over a change crossfade never saw could build a row that never existed at the source) until the
dead letter is resolved: ``crossfade dlq replay`` re-tries it, and ``--drop-undecodable`` gives it
up on the operator's word and releases the held changes in order.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def first_record(settings: Any, topic: str) -> Any:
    c = Consumer(
        {**settings.kafka.client_config(), "group.id": "cf-test-peek", "enable.auto.commit": False}
    )
    try:
        for p in range(settings.kafka.partitions):
            c.assign([TopicPartition(topic, p, 0)])
            m = c.poll(10)
            if m is not None and m.error() is None and m.value():
                return m
    finally:
        c.close()
    raise AssertionError(f"no record on {topic}")


def _rows(stack: Any) -> dict[int, str]:
    with stack.tgt() as c:
        return dict(c.execute("SELECT id, v FROM public.t").fetchall())


def test_fault_25_corrupt_avro_is_dead_lettered_and_holds_its_key(stack_factory: Any) -> None:
    # Debezium's snapshot: the test corrupts a copy of the first change event in the topic, a
    # snapshot row's (a COPY load (initial_load: copy) puts no row event there, only capture's markers)
    stack = stack_factory(initial_load="debezium")
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 20) g")
    stack.write_config(["public.t"])
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    s = stack.settings
    topic = s.kafka.table_topic("public.t")
    orig = first_record(s, topic)
    from crossfade.events.decode import EventDecoder

    key_id = EventDecoder(s.kafka).decode(orig.key(), orig.value(), "public.t").key["id"]

    # corrupt bytes: the right framing and schema fingerprint, a body cut in half
    p = Producer(s.kafka.client_config())
    p.produce(
        topic,
        key=orig.key(),
        value=orig.value()[: len(orig.value()) // 2],
        partition=orig.partition(),
        headers=orig.headers(),
    )
    assert p.flush(30) == 0
    stack.sql("UPDATE public.t SET v = 'after the poison' WHERE id = %s", (key_id,))
    other = 1 if key_id != 1 else 2
    stack.sql("UPDATE public.t SET v = 'other key' WHERE id = %s", (other,))
    stack.fence()
    rows = _rows(stack)
    assert rows[other] == "other key"  # sync kept going
    assert rows[key_id] == f"v{key_id}"  # the later change of the poisoned key waits

    r = stack.cli("dlq", "list", "--json")
    assert r.returncode == 1, r.stderr
    listing = json.loads(r.stdout)
    (g,) = [g for g in listing["by_rule"] if g["rule"] == "decode"]
    assert g["records"] == 1 and g["table"] == "public.t"
    (ex,) = g["examples"]
    assert (
        ex["topic"] == topic
        and ex["partition"] == orig.partition()
        and ex["offset"] > orig.offset()
    )
    assert ex["reason"]
    assert listing["held"] == 1

    # a replay cannot decode it either: nothing moves
    r = stack.cli("dlq", "replay", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["still_failing"] == 1
    assert _rows(stack)[key_id] == f"v{key_id}"

    # given up on the operator's word: the held change applies, in order
    r = stack.cli("dlq", "replay", "--drop-undecodable", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["dropped"] == 1 and rep["released"] == 1
    assert _rows(stack)[key_id] == "after the poison"
    # and the key is free again for sync
    stack.sql("UPDATE public.t SET v = 'later' WHERE id = %s", (key_id,))
    stack.fence()
    wait_for(lambda: _rows(stack)[key_id] == "later", 30, "the released key to sync again")
    stack.assert_equal()
    r = stack.cli("dlq", "list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["held"] == 0, r.stdout
