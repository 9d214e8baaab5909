"""The console on a running crossfade (embedded stack): its protections over HTTP, and the page
in a real browser (Debian's headless Chromium driven by playwright-core, tests/console/*.mjs).

Needs: Debian ``chromium``, Node.js, and ``npm ci`` in tests/console (playwright-core). Without
them the browser test skips, naming what is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossfade.config import redact_dsn
from crossfade.embedded._proc import free_port
from tests.conftest import Proc, Stack, wait_for

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
TOKEN = "test-token-0123456789abcdef"


def _req(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(
        url, method=method, headers=headers or {}, data=b"" if method == "POST" else None
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, ""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _console(
    st: Stack, *args: str, token: str | None = TOKEN, env_extra: dict[str, str] | None = None
) -> tuple[Proc, str]:
    port = free_port()
    env = {**st._env(), **(env_extra or {})}
    env.pop("CROSSFADE_CONSOLE_TOKEN", None)
    if token:
        env["CROSSFADE_CONSOLE_TOKEN"] = token
    p = Proc(
        f"console{port}",
        ["console", "--port", str(port), "--interval", "1", *args],
        env,
        st.dir / f"console-{port}.log",
    )
    st.procs.append(p)
    base = f"http://127.0.0.1:{port}"
    wait_for(
        lambda: _req(base + "/healthz")[0] == 200 or not p.alive(), 30, "the console to listen"
    )
    assert p.alive(), p.tail()
    return p, base


FENCE_FRESH_S = 15
"""The browser test's console and dry run judge the fence gate by this freshness limit."""

MAPPING = {
    "tables": {
        "public.customers": {
            "targets": [
                {
                    "table": "crm.clients",
                    "columns": {"client_id": "id", "name": "name", "email": "email"},
                    "rules": {"email": {"required": True}},
                }
            ]
        }
    }
}


@pytest.fixture(scope="module")
def running(pg_server: Any, bootstrap: str, work_root: Path) -> Iterator[Stack]:
    """orders copied as they are; customers mapped into crm.clients, one of them a dead letter."""
    st = Stack(pg_server, bootstrap, work_root, heartbeat_interval_s=1)
    st.sql(
        "CREATE TABLE public.orders (id int PRIMARY KEY, item text NOT NULL, qty int);"
        "CREATE TABLE public.customers (id int PRIMARY KEY, name text, email text);"
        "INSERT INTO orders SELECT g, 'item ' || g, g % 9 FROM generate_series(1, 1200) g;"
        "INSERT INTO customers SELECT g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 240) g;"
        "UPDATE customers SET email = NULL WHERE id = 17;"
    )
    with st.tgt() as c:
        c.execute(
            "CREATE SCHEMA crm; CREATE TABLE crm.clients (client_id int PRIMARY KEY, name text, email text)"
        )
    st.write_config(["public.orders", "public.customers"], mapping=MAPPING)
    st.start("run")
    try:
        st.fence()
        yield st
    finally:
        st.close()


def test_refuses_to_listen_beyond_loopback_without_a_token(running: Stack) -> None:
    env = {k: v for k, v in running._env().items() if k != "CROSSFADE_CONSOLE_TOKEN"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossfade.ops.cli",
            "console",
            "--host",
            "0.0.0.0",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "refusing to serve the console on 0.0.0.0 without a token" in r.stderr


def test_token_csrf_host_and_read_only_protections(running: Stack) -> None:
    _p, base = _console(running)  # read-only, token required
    assert _req(base + "/api/state")[0] == 401
    assert _req(base + "/")[0] == 401
    code, body = _req(base + "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})
    assert code == 200
    state = wait_for(
        lambda: (
            (
                s := json.loads(
                    _req(base + "/api/state", headers={"Authorization": f"Bearer {TOKEN}"})[1]
                )
            )["collected_at"]
            and s
        ),
        30,
        "the first collection",
    )
    assert [(t["table"], t["kind"]) for t in state["tables"]] == [
        ("public.orders", "identity"),
        ("public.customers", "source"),
        ("crm.clients", "target"),
    ]
    assert state["tables"][0]["legacy_rows"] == 1200
    assert state["allow_actions"] is False
    raw = json.dumps(state)
    assert TOKEN not in raw
    for dsn in (running.source_dsn, running.target_dsn):
        assert redact_dsn(dsn) in raw  # shown with any password masked
    # ?token= sets an HttpOnly cookie and drops the token from the address
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        opener.open(base + f"/?token={TOKEN}", timeout=10)
        raise AssertionError("expected a redirect")
    except urllib.error.HTTPError as e:
        assert e.code == 303 and e.headers["Location"] == "/"
        assert (
            "HttpOnly" in e.headers["Set-Cookie"] and "SameSite=Strict" in e.headers["Set-Cookie"]
        )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # CSRF: a POST without the console's header is refused; read-only refuses actions
    assert _req(base + "/api/actions/fence", "POST", auth)[0] == 403
    code, body = _req(base + "/api/actions/fence", "POST", {**auth, "X-Crossfade-Console": "1"})
    assert code == 403 and "--allow-actions" in body
    # DNS rebinding: a loopback console answers loopback Host names only
    assert _req(base + "/api/state", headers={**auth, "Host": "evil.example:80"})[0] == 421
    code, text = _req(base + "/metrics", headers=auth)
    assert code == 200 and 'crossfade_cutover_gate_ok{gate="sync_alive"} 1.0' in text
    assert 'crossfade_dead_letters_open{table="public.customers"} 1.0' in text
    # the console exports its own series only (capture's at 0 read as a stopped capture), and
    # the slot it reads (on Kafka Connect nothing else does)
    assert "crossfade_capture_" not in text and "crossfade_sync_" not in text
    assert 'crossfade_replication_slot_active{slot="' in text
    # issue 19: what the page is drawn from
    orders, customers, clients = state["tables"]
    assert orders["new_tables"] == ["public.orders"] and customers["new_tables"] == ["crm.clients"]
    assert set(orders["series"]) == {"legacy", "new", "rate", "lag"}
    assert state["history"]["source"] == "samples" and state["history"]["window_s"] == 900
    # no dry run yet: the latest fence plus the latest verify
    assert set(state["forecast"]) >= {"fence_s", "verify_s", "seconds", "source"}
    assert state["forecast"]["source"] == "measured" and state["forecast"]["steps"] is None
    (rule,) = state["dlq"]["by_rule"]
    assert rule["rule"] == "crm.clients.email:required" and rule["table"] == "public.customers"
    assert [e["key"] for e in rule["examples"]] == ["[17]"]


def _browser_missing() -> str | None:
    if shutil.which("node") is None:
        return "Node.js not installed (Debian: apt-get install nodejs npm)"
    if not Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists():
        return "Chromium not installed (Debian: apt-get install chromium)"
    if not (HERE / "node_modules" / "playwright-core").is_dir():
        return "playwright-core not installed (run: npm ci --prefix tests/console)"
    return None


@pytest.mark.skipif(_browser_missing() is not None, reason=str(_browser_missing()))
def test_console_in_a_real_browser(running: Stack, work_root: Path) -> None:
    """The page as a person uses it: a change reaches both sides; the fence gate goes stale past
    its limit, a fence from the CLI turns it green, so does the page's own button; and after
    ``cutover --dry-run --json`` the page shows the same gates and counts as that output."""
    fresh = {"CROSSFADE_CUTOVER__FENCE_FRESH_S": str(FENCE_FRESH_S)}
    _p, base = _console(running, "--allow-actions", env_extra=fresh)
    r = running.cli("dlq", "ack", "--note", "customer 17 has no email")
    assert r.returncode == 0, r.stderr
    change = running.dir / "change.py"
    change.write_text(
        "import psycopg, sys\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
        "    c.execute(\"INSERT INTO orders SELECT g, 'browser ' || g, 1 FROM generate_series(5001, 5007) g\")\n"
    )
    cli = [sys.executable, "-m", "crossfade.ops.cli"]
    shot = Path(os.environ.get("CROSSFADE_CONSOLE_SCREENSHOT", work_root / "console.png"))
    env = {
        **os.environ,
        **running._env(),
        **fresh,
        "CONSOLE_URL": f"{base}/?token={TOKEN}",
        "CONSOLE_TABLE": "public.orders",
        "CONSOLE_CHANGE_CMD": json.dumps([sys.executable, str(change), running.source_dsn]),
        "CONSOLE_CHANGE_ROWS": "7",
        "CONSOLE_FENCE_CMD": json.dumps([*cli, "fence"]),
        "CONSOLE_DRYRUN_CMD": json.dumps([*cli, "cutover", "--dry-run", "--json"]),
        "CONSOLE_CHECKPOINT_CMD": json.dumps(
            [*cli, "checkpoint", "create", "--name", "cp-browser"]
        ),
        "CONSOLE_SCREENSHOT": str(shot),
    }
    r = subprocess.run(
        ["node", str(HERE / "console.browser.mjs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE,
    )
    assert r.returncode == 0, (
        f"{r.stdout}\n{r.stderr}\n--- console log ---\n{_p.tail()}{running._diag()}"
    )
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["rows"] == 1207
    # what the page showed, against what the dry run printed for the same state
    assert result["gates_page"] == result["gates_dry_run"], result
    assert set(result["gates_page"]) == {
        "sync_alive",
        "dead_letters",
        "fence",
        "row_counts",
        "verify",
        "target_schema",
    }
    assert result["counts_page"] == result["counts_dry_run"], result
    assert result["counts_page"]["public.customers"] == {"legacy": 240, "new": 240, "dead": 1}
    assert result["counts_page"]["crm.clients"] == {"legacy": 239, "new": 239}
    # issue 19: legacy and new names, the verify as a table, the forecast, dead letters by rule
    # with their example key, a checkpoint at an X/Y position, screenshots at three moments
    assert result["new_names"][:2] == ["→ public.orders", "→ crm.clients"], result["new_names"]
    assert {r["table"]: r["result"] for r in result["verify_rows"]} == {
        "public.orders": "equal",
        "crm.clients": "equal",
    }
    # the forecast the page announces is the dry run's, part by part
    said = result["dry_run_forecast"]
    assert said["seconds"] is not None and said["parts"], said
    assert result["forecast_parts"] == said["parts"], result
    shown, unit = result["forecast"].split()
    shown_s = float(shown) / 1000 if unit == "ms" else float(shown) * (60 if unit == "min" else 1)
    assert abs(shown_s - said["seconds"]) <= (0.06 if unit != "min" else 30), (shown, said)
    assert result["dlq_rows"] == [{"rule": "crm.clients.email:required", "keys": ["[17]"]}]
    assert "/" in result["checkpoint_lsn"]
    assert len(result["shots"]) == 3
    for path in [shot, *map(Path, result["shots"])]:
        assert path.stat().st_size > 10_000, path
