"""A record of a dead broker epoch in a log that is still sync's epoch is passed over.

After a broker restarted empty, the capture that had lost its log may still write a few records,
stamped with its old epoch, into the new log before it notices (seen under broker resets with
pgbench load: test_fault_35, 2 runs of 5 under ``capture.converter: jvm``). sync used to replay
its partitions whenever it met another epoch's record; with the broker's epoch unchanged it met
the same record again, for ever, and never caught up (:mod:`crossfade.sync.dead_epoch`).
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import Producer

from crossfade.events.decode import EPOCH_HEADER
from tests.integration.test_dead_letters import first_record

pytestmark = pytest.mark.integration


def test_a_dead_epochs_record_in_this_log_is_passed_over(stack_factory: Any) -> None:
    stack = stack_factory(initial_load="debezium")  # the rows as change events in the topic
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 20) g")
    stack.write_config(["public.t"])
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    s = stack.settings
    topic = s.kafka.table_topic("public.t")
    orig = first_record(s, topic)
    headers = orig.headers() or []
    assert any(k == EPOCH_HEADER for k, _v in headers)
    dead = [(k, b"0" * 32 if k == EPOCH_HEADER else v) for k, v in headers]
    p = Producer(s.kafka.client_config())
    for part in range(s.kafka.partitions):  # one leftover at the end of every partition
        p.produce(topic, key=orig.key(), value=orig.value(), partition=part, headers=dead)
    assert p.flush(30) == 0

    stack.sql("UPDATE public.t SET v = 'after the leftovers' WHERE id IN (3, 4, 5, 6)")
    stack.fence(timeout=60)  # before: sync replayed its partitions for ever, the fence never came
    stack.assert_equal()
    assert sync.alive()
    log = sync.tail(400)
    assert "passed over" in log and "0" * 32 in log, log
