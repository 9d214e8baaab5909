"""Fixtures of the fault stacks (``fault_stack.py``): servers that tests crash, brokers they reset."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.integration.fault_stack import FaultServers, FaultStack, external_bootstrap

_brokers = itertools.count(1)


@pytest.fixture(scope="session")
def fault_servers(work_root: Path) -> Iterator[FaultServers]:
    """Two PostgreSQL servers (legacy, new) for the whole session, started on first use: the
    tests that crash or restart a database do it here, never on the suite's main server."""
    legacy = EmbeddedPostgres(log_to=work_root / "pg-fault-legacy.log").start()
    target = EmbeddedPostgres(log_to=work_root / "pg-fault-target.log").start()
    yield FaultServers(legacy, target)
    legacy.stop()
    target.stop()


@pytest.fixture
def fault_stack_factory(
    fault_servers: FaultServers, work_root: Path
) -> Iterator[Callable[..., FaultStack]]:
    """Makes :class:`FaultStack` s, each with a broker of its own (the external Kafka of
    ``CROSSFADE_TEST_BOOTSTRAP`` when set); closes them and their brokers after the test."""
    made: list[FaultStack] = []

    def make(**kw: Any) -> FaultStack:
        external = external_bootstrap()
        broker = None
        if external is None:
            log = work_root / f"tansu-fault-{next(_brokers)}.log"
            broker = EmbeddedBroker(log_to=log).start()
        s = FaultStack(fault_servers, work_root, broker=broker, bootstrap=external, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        try:
            s.close()
        finally:
            if s.broker is not None:
                s.broker.stop()
