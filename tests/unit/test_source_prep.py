"""The pure parts of source preparation and decommission: quoting, the DBA's script, the
preflight error's shape, the WAL headroom arithmetic, the reverse direction's names."""

from __future__ import annotations

from typing import Any

from crossfade.capture.preflight import privilege_error
from crossfade.capture.source_prep import (
    Missing,
    WalHeadroom,
    capture_role,
    dedupe_statements,
    ident,
    prepare_sql,
    publication_sql,
)
from crossfade.config import Settings


def _settings(**over: Any) -> Settings:
    cfg: dict[str, Any] = {
        "source": {"dsn": "postgresql://cdc:pw-very-secret@db.example:5432/legacy"},
        "target": {"dsn": "postgresql://app@new.example/new"},
        "kafka": {"bootstrap_servers": "k:9092"},
        "tables": ["public.customers", "sales.Orders", "public.events"],
        "sync": {"append_only_tables": ["public.events"]},
    }
    cfg.update(over)
    return Settings(**cfg)


def test_ident_quotes_only_what_needs_it() -> None:
    assert ident("public.customers") == "public.customers"
    assert ident("sales.Orders") == 'sales."Orders"'
    assert ident('we"ird.t t') == '"we""ird"."t t"'


def test_publication_sql_creates_or_sets_exactly_the_tables() -> None:
    s = publication_sql("crossfade", ["public.a", "crossfade.fence"])
    assert "ALTER PUBLICATION crossfade SET TABLE public.a, crossfade.fence;" in s
    assert "ELSE CREATE PUBLICATION crossfade FOR TABLE public.a, crossfade.fence;" in s
    assert s.startswith("DO $$") and s.endswith("END $$;") and "\n" not in s


def test_prepare_sql_is_least_privilege_and_holds_no_password() -> None:
    s = _settings()
    role, db = capture_role(s)
    assert (role, db) == ("cdc", "legacy")
    stmts = dedupe_statements(prepare_sql(s, role, db))
    text = "\n".join(stmts)
    assert "pw-very-secret" not in text
    assert "CREATE ROLE cdc WITH LOGIN REPLICATION" in text
    assert 'GRANT SELECT ON public.customers, sales."Orders", public.events TO cdc;' in stmts
    assert "GRANT USAGE ON SCHEMA public TO cdc;" in stmts
    assert "GRANT USAGE ON SCHEMA sales TO cdc;" in stmts
    assert "GRANT SELECT, INSERT, UPDATE ON crossfade.fence TO cdc;" in stmts
    assert "GRANT SELECT, INSERT ON crossfade.debezium_signal TO cdc;" in stmts
    # only the keyless table gets FULL identity; nothing is owned by or granted CREATE to the role
    assert [x for x in stmts if "REPLICA IDENTITY" in x] == [
        "ALTER TABLE public.events REPLICA IDENTITY FULL;"
    ]
    assert not [x for x in stmts if "OWNER TO" in x or "GRANT CREATE" in x]
    assert stmts[-1].startswith("DO $$") and "crossfade.debezium_signal" in stmts[-1]
    assert len([x for x in stmts if x.startswith("CREATE SCHEMA")]) == 1


def test_prepare_sql_without_fence_and_signal_tables() -> None:
    s = _settings(capture={"fence_table": False, "signal_table": False})
    text = "\n".join(prepare_sql(s, "cdc", "legacy"))
    assert "crossfade." not in text
    assert 'FOR TABLE public.customers, sales."Orders", public.events;' in text


def test_preflight_error_lists_every_missing_thing_one_line_each_with_its_sql() -> None:
    err = privilege_error(
        [
            Missing(
                "REPLICATION", "role cdc has no REPLICATION", "ALTER ROLE cdc WITH REPLICATION;"
            ),
            Missing(
                "SELECT on public.a", "role cdc may not SELECT", "GRANT SELECT ON public.a TO cdc;"
            ),
        ],
        "cdc",
    )
    lines = str(err).splitlines()
    assert err.exit_code == 3
    assert "(REPLICATION, SELECT on public.a)" in lines[0] and "prepare-source" in lines[0]
    assert lines[1:] == [
        "  - role cdc has no REPLICATION; fix: ALTER ROLE cdc WITH REPLICATION;",
        "  - role cdc may not SELECT; fix: GRANT SELECT ON public.a TO cdc;",
    ]


def test_wal_headroom_arithmetic_and_honest_unknowns() -> None:
    gib = 1 << 30
    w = WalHeadroom(1024 * 1024, "sampled", 1 * gib, 10 * gib, None)
    # the retained WAL already takes its room on the disk: the free space is what may pile up
    assert w.seconds == (10 * gib) / (1024 * 1024)
    assert "before the disk fills" in w.describe() and "2.8 h" in w.describe()
    k = WalHeadroom(1024 * 1024, "sampled", 1 * gib, 10 * gib, 3 * gib)
    assert k.room_bytes == 2 * gib and "the slot is invalidated" in k.describe()
    u = WalHeadroom(5000.0, "pg_stat_wal", None, None, None)
    assert u.seconds is None
    assert "free disk unknown (not readable from here)" in u.describe()
    assert "how long capture can stop is unknown" in u.describe()
    r = WalHeadroom(None, "unknown", None, 10 * gib, None)
    assert r.seconds is None and "rate unknown" in r.describe()
    assert set(w.as_dict()) >= {"rate_bytes_s", "free_bytes", "seconds"}


def test_decommission_knows_the_reverse_directions_names() -> None:
    from crossfade.cutover.decommission import _names

    s = _settings(capture={"slot_name": "cf", "publication_name": "cfpub"})
    assert _names(s) == {
        "slot": "cf_fallback",
        "publication": "cfpub_fallback",
        "prefix": "crossfade.fallback",
        "bk": "crossfade_fallback",
    }
