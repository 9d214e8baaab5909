"""Fallback's plan: which mappings invert, the refusal lines, and the reversed configuration."""

from __future__ import annotations

from typing import Any

import pytest

from crossfade.config import Settings
from crossfade.errors import ConfigError, NotInvertible
from crossfade.mapping.inverse import EXCLUDED_COLUMNS, plan, reverse_settings, reversed_for


def _settings(mapping: dict[str, Any] | None = None, **extra: Any) -> Settings:
    tables = ["public.a", "public.b", "public.c", "public.d"]
    return Settings.model_validate(
        {
            "source": {"dsn": "postgresql://u:legacy-secret@legacy/crm"},
            "target": {"dsn": "postgresql://u:new-secret@new/crm"},
            "kafka": {"bootstrap_servers": "k:9092", "topic_prefix": "cf"},
            "tables": tables,
            "capture": {
                "slot_name": "cf",
                "publication_name": "cfpub",
                "state_dir": "/var/cf/capture",
                "properties": {"database.hostname": "legacy-only"},
            },
            **({"mapping": mapping} if mapping else {}),
            **extra,
        }
    )


def _target(table: str, columns: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"targets": [{"table": table, "columns": columns, **kw}]}


def test_identity_and_renames_with_casts_invert() -> None:
    s = _settings(
        {
            "tables": {
                "public.a": _target(
                    "app.a", {"a_id": "id", "n": {"from": "num", "cast": "integer"}}
                )
            }
        }
    )
    p = plan(s)
    assert p.refused == {}
    by = {i.legacy: i for i in p.inverses}
    assert by["public.b"].identity and by["public.b"].new == "public.b"
    a = by["public.a"]
    assert (a.new, a.columns, a.casts, a.identity) == (
        "app.a",
        {"a_id": "id", "n": "num"},
        {"n": "integer"},
        False,
    )
    assert a.legacy_column("a_id") == "id" and a.legacy_column("extra_in_new") is None
    inc = plan(
        _settings({"tables": {"public.a": _target("app.a", {"a_id": "id"}, include_unmapped=True)}})
    )
    assert inc.by_new()["app.a"].legacy_column("name") == "name"
    assert inc.by_new()["app.a"].legacy_column("id") is None  # renamed away: not also by name


@pytest.mark.parametrize(
    ("mapping", "reason"),
    [
        (
            {
                "tables": {
                    "public.a": {
                        "filters": [{"name": "inactive", "when": [{"column": "x", "eq": 1}]}],
                        **_target("app.a", {"id": "id"}),
                    }
                }
            },
            "filter inactive keeps rows out of the new database",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "targets": [
                            {"table": "app.a", "columns": {"id": "id"}},
                            {"table": "app.a2", "columns": {"id": "id"}},
                        ]
                    }
                }
            },
            "it maps to 2 target tables (1->n)",
        ),
        (
            {
                "tables": {
                    "public.a": _target("app.x", {"id": "id"}),
                    "public.b": _target("app.x", {"id": "id"}),
                }
            },
            "app.x is also written by public.b (n->1)",
        ),
        (
            {
                "tables": {
                    "public.a": _target(
                        "app.a", {"id": "id", "email": {"from": "email", "transforms": ["email"]}}
                    )
                }
            },
            "column app.a.email is transformed (email), which has no inverse",
        ),
        (
            {"tables": {"public.a": _target("app.a", {"id": "id", "src": {"const": "legacy"}})}},
            "column app.a.src is a constant, not a legacy column",
        ),
        (
            {
                "tables": {
                    "public.a": _target(
                        "app.a",
                        {
                            "id": "id",
                            "line": {"from": ["street", "city"], "transforms": ["concat"]},
                        },
                    )
                }
            },
            "column app.a.line is derived from street, city",
        ),
        (
            {
                "tables": {
                    "public.a": _target(
                        "app.a", {"id": "id", "k": {"from": "k", "default": "none"}}
                    )
                }
            },
            "column app.a.k replaces NULL by a default",
        ),
        (
            {
                "tables": {
                    "public.a": _target(
                        "app.a",
                        {"id": "id", "n": {"from": "n", "cast": "integer", "on_error": "null"}},
                    )
                }
            },
            "column app.a.n casts with on_error: null",
        ),
        (
            {"tables": {"public.a": _target("app.a", {"id": "id", "id2": "id"})}},
            "legacy column id feeds both app.a.id and app.a.id2",
        ),
        (
            {
                "tables": {"public.a": _target("app.a", {"id": "id", "email": "email"})},
                "dedup": {
                    "app.a": {"match": [{"name": "same-email", "all": [{"column": "email"}]}]}
                },
            },
            "app.a is deduplicated",
        ),
    ],
)
def test_non_invertible_mappings_are_refused_naming_the_reason(
    mapping: dict[str, Any], reason: str
) -> None:
    p = plan(_settings(mapping))
    assert reason in p.refused["public.a"]
    err = p.refusal()
    assert isinstance(err, ConfigError) and err.exit_code == 2
    assert err.message.splitlines()[0].startswith("public.a cannot fall back: ")
    with pytest.raises(NotInvertible):
        reversed_for(_settings(mapping))
    rev, sub = reversed_for(_settings(mapping), subset=True)  # --tables invertible: the others go
    assert "public.a" not in [i.legacy for i in sub.inverses] and "public.c" in rev.tables


def test_append_only_tables_are_refused() -> None:
    p = plan(_settings(sync={"append_only_tables": ["public.d"]}))
    assert "no primary key" in p.refused["public.d"]


def test_reverse_settings_swap_roles_and_own_every_name() -> None:
    s = _settings(
        {"tables": {"public.a": _target("app.a", {"a_id": "id"})}},
        fallback={"tables": ["public.a", "public.b"]},
    )
    rev, p = reversed_for(s)
    assert rev.source.conninfo == s.target.conninfo and rev.target.conninfo == s.source.conninfo
    assert rev.tables == ["app.a", "public.b"] and rev.mapping is None
    assert rev.kafka.topic_prefix == "cf.fallback" and rev.kafka.bootstrap_servers == "k:9092"
    assert (rev.capture.slot_name, rev.capture.publication_name) == (
        "cf_fallback",
        "cfpub_fallback",
    )
    assert str(rev.capture.state_dir) == "/var/cf/capture-fallback"
    # the forward capture's properties name the legacy database: none of them carry over
    assert rev.capture.properties == {"column.exclude.list": EXCLUDED_COLUMNS}
    assert not rev.capture.signal_table and rev.capture.fence_table
    assert (
        rev.sync.group_id == "crossfade-sync-fallback"
        and rev.sync.bookkeeping_schema == "crossfade_fallback"
    )
    assert not rev.sync.create_tables and rev.sync.tag_origin
    assert rev.ops.metrics_port is None and rev.ops.console_port is None
    named = reverse_settings(
        s.model_copy(
            update={
                "fallback": s.fallback.model_copy(
                    update={"topic_prefix": "back", "slot_name": "back_slot", "group_id": "g-back"}
                )
            }
        ),
        p,
    )
    assert (named.kafka.topic_prefix, named.capture.slot_name, named.sync.group_id) == (
        "back",
        "back_slot",
        "g-back",
    )


def test_the_reverse_capture_stops_within_the_forward_bound() -> None:
    """``capture.stop_timeout_s`` bounds ``fallback start``'s stop as ``run``'s (the pod's grace
    is the same): the reversed capture was built with the default 45 s whatever the config said."""
    s = _settings()
    s = s.model_copy(update={"capture": s.capture.model_copy(update={"stop_timeout_s": 20.0})})
    rev, _ = reversed_for(s)
    assert rev.capture.stop_timeout_s == 20.0


def test_reverse_settings_ignore_the_forward_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = _settings()
    monkeypatch.setenv("CROSSFADE_SOURCE__DSN", "postgresql://u:x@elsewhere/crm")
    rev, _ = reversed_for(s)
    assert rev.source.conninfo == s.target.conninfo


def test_fallback_tables_must_be_known() -> None:
    with pytest.raises(ValueError, match="fallback.tables names public.zzz"):
        _settings(fallback={"tables": ["public.zzz"]})


def test_events_are_renamed_to_legacy_columns_and_unknown_columns_kept() -> None:
    from crossfade.events.model import ChangeEvent, FieldType, RowSchema
    from crossfade.sync.reverse import renamed as _renamed

    t = FieldType("string")
    rs = RowSchema(
        "v",
        (
            ("person_id", FieldType("int32")),
            ("full_name", t),
            ("created_in_new", t),
            ("added_later", t),
        ),
    )
    ks = RowSchema("k", (("person_id", FieldType("int32")),))
    e = ChangeEvent(
        "app.persons",
        "u",
        {"person_id": 7},
        {"person_id": 7, "full_name": "Ada", "created_in_new": "x", "added_later": "y"},
        lsn=1,
        source_ts_ms=0,
        row_schema=rs,
        key_schema=ks,
        unavailable=frozenset({"full_name"}),
    )
    out = _renamed(e, {"person_id": "id", "full_name": "name"}, frozenset({"created_in_new"}))
    assert out.key == {"id": 7}
    # a column the inverse leaves out is dropped; one unknown at setup stays (sync then stops on it)
    assert out.after == {"id": 7, "name": "Ada", "added_later": "y"}
    assert out.row_schema is not None and out.row_schema.columns == ("id", "name", "added_later")
    assert out.key_schema is not None and out.key_schema.columns == ("id",)
    assert out.unavailable == frozenset({"name"}) and (out.lsn, out.table) == (1, "app.persons")
