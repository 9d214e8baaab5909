"""Source preparation on the real embedded stack: a least-privileged capture role, its privileges
taken away one at a time (preflight names each one with the SQL that gives it back, and that SQL
does), ``prepare-source --print-sql`` run by a superuser making preflight pass, and real capture
(Debezium) running as that role."""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
import yaml

from crossfade.capture.preflight import check_source
from crossfade.config import load_settings
from crossfade.errors import PreflightError
from tests.conftest import Stack

pytestmark = pytest.mark.integration

ROLE = "cf_cdc"


def _as_role(stack: Stack, role: str = ROLE) -> None:
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["source"]["dsn"] = stack.source_dsn.replace("postgres@", f"{role}@")
    stack.config_path.write_text(yaml.safe_dump(raw))


def _problems(stack: Stack) -> list[str]:
    """The lines preflight reports for the capture role (empty: it passes)."""
    try:
        check_source(load_settings(stack.config_path), create=False)
    except PreflightError as exc:
        text = str(exc)
        assert "prepare-source" in text.splitlines()[0], text
        return [x.strip()[2:] for x in text.splitlines()[1:]]
    return []


def _summary(stack: Stack) -> str:
    """The first line of preflight's error: every missing thing in a few words."""
    try:
        check_source(load_settings(stack.config_path), create=False)
    except PreflightError as exc:
        return str(exc).splitlines()[0]
    return ""


def _fix(stack: Stack, line: str) -> None:
    """Run the SQL a preflight line names, as a superuser (what a DBA would do)."""
    sql = line.split("; fix: ", 1)[1]
    sql = re.sub(r"^run as \S+ or a superuser: ", "", sql)
    sql = sql.split(" (as the tables' owner)")[0].split(" (or create it")[0]
    stack.sql(sql)


def _break_and_fix(stack: Stack, breaking: str, expect: str) -> None:
    stack.sql(breaking)
    lines = _problems(stack)
    summary = _summary(stack)
    assert expect in summary and lines, (
        f"after {breaking!r} preflight said {lines}, nothing about {expect!r}"
    )
    for line in lines:
        _fix(stack, line)
    assert _problems(stack) == [], f"the fixes preflight named did not fix {breaking!r}"


def test_preflight_names_each_missing_privilege_and_prepare_source_grants_them(
    stack_factory: Any,
) -> None:
    stack = stack_factory(append_only_tables=["public.events"])
    stack.sql(
        "CREATE TABLE public.customers (id int PRIMARY KEY, name text);"
        "CREATE TABLE public.events (at timestamptz DEFAULT now(), what text);"
        "INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 50) g;"
        f"DROP ROLE IF EXISTS {ROLE}; CREATE ROLE {ROLE} LOGIN"
    )
    stack.write_config(["public.customers", "public.events"])
    _as_role(stack)

    # the bare role: everything missing is named in one preflight error (exit 3), one line each
    r = stack.cli("preflight", "--wal-sample", "0")
    assert r.returncode == 3, r.stdout + r.stderr
    err = r.stderr
    for needed in (
        "REPLICATION",
        "SELECT on public.customers",
        "SELECT on public.events",
        "crossfade.fence (cannot create it)",
        "CREATE on database",
        "ownership of public.customers",
    ):
        assert needed in err, (needed, err)
    assert "Traceback" not in err and "ALTER ROLE cf_cdc WITH REPLICATION;" in err

    # prepare-source prints the least-privilege setup; a superuser runs it; preflight passes
    r = stack.cli("prepare-source", "--print-sql")
    assert r.returncode == 0, r.stderr
    script = [x for x in r.stdout.splitlines() if x and not x.startswith("--")]
    assert any("REPLICA IDENTITY FULL" in x and "public.events" in x for x in script)
    with stack.src() as c:
        for stmt in script:
            c.execute(stmt)
        c.execute(f"REVOKE CREATE ON SCHEMA public FROM {ROLE}")  # nothing more than it granted
    assert _problems(stack) == []
    r = stack.cli("preflight", "--wal-sample", "0.5")
    assert r.returncode == 0, r.stderr
    assert "preflight: ok" in r.stdout and "WAL headroom: legacy WAL rate" in r.stdout, r.stdout
    print(r.stdout)
    assert "cf_cdc" not in r.stdout or "password" not in r.stdout

    # each privilege taken away alone: named, and its fix (run as a superuser) gives it back
    pub = stack.settings.capture.publication_name
    for breaking, expect in (
        (f"ALTER ROLE {ROLE} NOREPLICATION", "REPLICATION"),
        (f"REVOKE SELECT ON public.customers FROM {ROLE}", "SELECT on public.customers"),
        (
            f"REVOKE USAGE ON SCHEMA public FROM PUBLIC; REVOKE USAGE ON SCHEMA public FROM {ROLE}",
            "USAGE on schema public",
        ),
        (f"REVOKE INSERT ON crossfade.fence FROM {ROLE}", "UPDATE on crossfade.fence"),
        (f"REVOKE UPDATE ON crossfade.fence FROM {ROLE}", "UPDATE on crossfade.fence"),
        (f"REVOKE USAGE ON SCHEMA crossfade FROM {ROLE}", "USAGE on schema crossfade"),
        (f"REVOKE INSERT ON crossfade.debezium_signal FROM {ROLE}", "debezium_signal"),
        (
            f"REVOKE USAGE ON SEQUENCE crossfade.fence_id_seq FROM {ROLE}",
            "crossfade.fence_id_seq",
        ),
        (f"DROP PUBLICATION {pub}", "ownership of public.customers"),
        (f"ALTER PUBLICATION {pub} SET TABLE public.customers", f"ownership of publication {pub}"),
        (f"DROP PUBLICATION {pub}; CREATE PUBLICATION {pub} FOR ALL TABLES", "FOR ALL TABLES"),
        ("DROP TABLE crossfade.fence", "crossfade.fence (cannot create it)"),
    ):
        _break_and_fix(stack, breaking, expect)

    # real capture runs as the role (Debezium: its slot, the DBA's publication, the snapshot)
    # and fences go through end to end
    with stack.src() as c:
        assert c.execute(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.customers'::regclass"
        ).fetchone() == ("postgres",)  # capture never needed to own the tables
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.sql("INSERT INTO customers VALUES (51, 'after'); INSERT INTO events (what) VALUES ('x')")
    stack.fence()
    stack.assert_equal()


def test_prepare_source_runs_it_with_a_privileged_dsn_without_printing_the_password(
    stack: Stack,
) -> None:
    stack.sql(
        f"CREATE TABLE public.accounts (id int PRIMARY KEY, v text);DROP ROLE IF EXISTS {ROLE}_b"
    )
    stack.write_config(["public.accounts"])
    _as_role(stack, f"{ROLE}_b")
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["source"]["dsn"] = raw["source"]["dsn"].replace(f"{ROLE}_b@", f"{ROLE}_b:pw-secret-123@")
    stack.config_path.write_text(yaml.safe_dump(raw))
    privileged = stack.source_dsn.replace("postgres@", "postgres:su-secret-456@")
    r = stack.cli("prepare-source", env={"CROSSFADE_PREPARE_DSN": privileged})
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "pw-secret-123" not in out and "su-secret-456" not in out, out
    assert f"created role {ROLE}_b" in out and f"preflight as {ROLE}_b: ok" in out, out
    with stack.src() as c:
        assert c.execute(
            "SELECT rolreplication, rolcanlogin, rolpassword IS NOT NULL FROM pg_authid "
            "WHERE rolname = %s",
            (f"{ROLE}_b",),
        ).fetchone() == (True, True, True)
    # idempotent: a second run changes nothing and passes again
    r = stack.cli("prepare-source", "--dsn", privileged)
    assert r.returncode == 0 and "created role" not in r.stdout, r.stdout + r.stderr
    with psycopg.connect(stack.source_dsn, autocommit=True) as c:
        c.execute(f"DROP OWNED BY {ROLE}_b")
