"""Sync's consumer group join on the embedded broker (issue 22, catch-up after an outage): Tansu
0.6 answers a JoinGroup once half the session timeout has passed, so with ``auto`` (2 s there) a
sync start joins in about 1 s, where Kafka's 6 s minimum made every start wait 3 s."""

from __future__ import annotations

import os
import re

import pytest

from tests.conftest import Stack, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(os.environ.get("CROSSFADE_TEST_BOOTSTRAP")),
        reason="the embedded broker's join (another broker gets Kafka's 6 s)",
    ),
]

JOINED = re.compile(r"joined consumer group \S+ in ([0-9.]+) s")


def test_sync_joins_the_embedded_broker_in_about_a_second(stack: Stack) -> None:
    stack.sql("CREATE TABLE public.j (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO public.j VALUES (1, 'a')")
    stack.write_config(["public.j"])
    stack.start("capture")
    sync = stack.start("sync")
    wait_for(lambda: JOINED.search(sync.tail(200)), 120, "sync to join its consumer group")
    log = sync.tail(200)
    assert "joining (session timeout 2000 ms)" in log, log
    m = JOINED.search(log)
    assert m is not None
    # Tansu's own wait is 1 s at 2 s (3 s at 6 s); the rest is librdkafka's round trips
    assert float(m.group(1)) < 2.5, log
    stack.sql("INSERT INTO public.j VALUES (2, 'b')")
    stack.fence()
    stack.assert_equal()
