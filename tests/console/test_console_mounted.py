"""The console mounted in a long-running command (ops.console_port): served, and read-only."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from crossfade.embedded import free_port
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def test_run_serves_a_read_only_console_when_configured(stack: Stack) -> None:
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 10) g")
    port = free_port()
    stack.write_config(["public.t"], ops={"console_port": port})
    stack.start("run")  # capture + sync in one process (separate ones would each bind the port)
    stack.fence()
    base = f"http://127.0.0.1:{port}"

    def state() -> dict | None:
        try:
            with urllib.request.urlopen(f"{base}/api/state", timeout=5) as r:
                return json.loads(r.read())
        except OSError:
            return None

    st = wait_for(state, 60, "the mounted console to answer")
    assert "public.t" in json.dumps(st)
    with urllib.request.urlopen(base + "/", timeout=5) as r:
        assert r.status == 200 and b"crossfade" in r.read().lower()
    req = urllib.request.Request(
        f"{base}/api/actions/fence", method="POST", headers={"X-Crossfade-Console": "1"}, data=b"{}"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code in (403, 405)
