"""The check the issue names: a standard benchmark client's tables and load (pgbench, TPC-B-like),
with sync and capture killed at random moments, then every row compared.

pgbench_history has no primary key: it is configured append-only (insert-only, each row identified
by its source position and content).
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TABLES = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
]


def test_pgbench_load_with_random_kills(stack_factory: Callable[..., Stack]) -> None:
    seed = int(os.environ.get("CROSSFADE_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    stack = stack_factory(partitions=3, append_only_tables=["public.pgbench_history"])
    pgbench = stack.pg.binaries.tool("pgbench")
    subprocess.run(
        [pgbench, "-i", "-s", "1", "-q", stack.source_dsn], check=True, capture_output=True
    )
    stack.write_config(TABLES)
    procs = {"capture": stack.start("capture"), "sync": stack.start("sync")}
    stack.fence()
    load = subprocess.Popen(
        [pgbench, "-c", "2", "-T", "40", "-n", stack.source_dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    kills = []
    t0 = time.monotonic()
    while load.poll() is None:
        time.sleep(rng.uniform(3, 8))
        victim = rng.choice(["capture", "sync", "sync", "both"])
        for name in ["capture", "sync"] if victim == "both" else [victim]:
            procs[name].kill()
            procs[name] = stack.start(name)
        kills.append((round(time.monotonic() - t0, 1), victim))
    out = load.stdout.read() if load.stdout else ""
    assert load.returncode == 0, out
    stack.fence(timeout=300)
    try:
        stack.assert_equal()
    except AssertionError as exc:
        raise AssertionError(f"seed={seed} kills={kills}: {exc}") from None
    with stack.src() as c:
        history = c.execute("SELECT count(*) FROM pgbench_history").fetchone()[0]  # type: ignore[index]
    assert history > 100, f"pgbench wrote only {history} transactions: {out}"
