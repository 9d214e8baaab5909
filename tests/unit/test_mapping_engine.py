"""The mapping as a pure function of a row: targets, rejects with the rule, filters, keys."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from crossfade.config import load_settings
from crossfade.config.mapping import MappingConfig
from crossfade.errors import ConfigError
from crossfade.mapping.engine import Filtered, KeySets, Mapped, Mapper, Rejected
from crossfade.mapping.target_fit import require_not_null

ROOT = Path(__file__).resolve().parents[2]

MAPPING = """
defaults: {phone_region: GB, date_formats: ["%d/%m/%Y"]}
tables:
  public.members:
    filters:
      - name: inactive-before-2015
        when: [{column: active, eq: false}, {column: last_seen, before: 2015-01-01}]
    targets:
      - table: crm.people
        columns:
          legacy_id: id
          full_name: {from: full_name, transforms: [name]}
          first_name: {from: full_name, transforms: [name, {split_name: first}]}
          email: {from: email, transforms: [email]}
          phone: {from: phone, transforms: [phone]}
          birth_date: {from: dob, transforms: [date]}
          status: {from: status, transforms: [{lookup: {A: active, I: inactive}}], on_error: "null", default: unknown}
          score: {from: score, cast: integer}
          source_system: {const: legacy}
        rules:
          email: {required: true, pattern: '.+@.+'}
          score: {min: 0, max: 100}
          status: {enum: [active, inactive, unknown]}
          full_name: {max_length: 20, severity: warn}
        row_rules:
          - {name: contactable, require_any: [email, phone]}
      - table: crm.contact_points
        key: [member_id]
        columns:
          member_id: id
          address: {from: [street, city], transforms: [{concat: ", "}]}
  public.notes:
    targets:
      - table: crm.notes
        include_unmapped: true
        columns:
          person_id: member_id
        rules:
          person_id: {references: {table: crm.people, column: legacy_id, window_s: 60}}
"""

ROW: dict[str, Any] = {
    "id": 7,
    "full_name": "  SMITH,  JOHN ",
    "email": " John.Smith@Example.COM",
    "phone": "(020) 7946-0123",
    "dob": "12/03/1985",
    "status": "a",
    "score": "42",
    "active": True,
    "last_seen": dt.date(2010, 1, 1),
    "street": "1 High St",
    "city": "London",
}


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    cfg = MappingConfig.model_validate(yaml.safe_load(MAPPING))
    return Mapper(
        cfg, ["public.members", "public.notes"], {"public.members": ["id"], "public.notes": ["id"]}
    )


def test_maps_one_row_into_two_targets(mapper: Mapper) -> None:
    out = mapper.map_row("public.members", ROW)
    assert isinstance(out, Mapped) and out.source_key == (7,)
    people, points = out.rows
    assert people.table == "crm.people" and people.key == (7,)
    assert people.values == {
        "legacy_id": 7,
        "full_name": "Smith, John",
        "first_name": "John",
        "email": "john.smith@example.com",
        "phone": "+442079460123",
        "birth_date": dt.date(1985, 3, 12),
        "status": "active",
        "score": 42,
        "source_system": "legacy",
    }
    assert points.values == {"member_id": 7, "address": "1 High St, London"} and points.key == (7,)
    assert mapper.map_row("public.members", dict(ROW)) == out  # pure: same row, same outcome


def test_rejects_name_every_failed_rule(mapper: Mapper) -> None:
    out = mapper.map_row("public.members", {**ROW, "email": "bad@", "phone": "123", "score": "150"})
    assert isinstance(out, Rejected)
    assert [f.rule for f in out.failures] == [
        "crm.people.email:transform:email",
        "crm.people.phone:transform:phone",
        "crm.people.score:range",
    ]
    assert out.rule == "crm.people.email:transform:email"
    assert out.failures[0].value == "bad@" and "not a valid email" in out.failures[0].message
    assert not out.deferrable

    missing = mapper.map_row("public.members", {**ROW, "email": "  ", "phone": None})
    assert isinstance(missing, Rejected)
    assert {f.rule for f in missing.failures} == {"crm.people.email:transform:email"}
    nothing = mapper.map_row("public.members", {**ROW, "email": None, "phone": None})
    assert isinstance(nothing, Rejected)
    assert [f.rule for f in nothing.failures] == [
        "crm.people.email:required",
        "crm.people:contactable",
    ]
    none = mapper.map_row("public.members", {**ROW, "email": None})
    assert isinstance(none, Rejected) and none.rule == "crm.people.email:required"


def test_on_error_null_default_and_warn(mapper: Mapper) -> None:
    out = mapper.map_row(
        "public.members",
        {**ROW, "status": "zz", "full_name": "Bartholomew Maximilian-Featherstonehaugh"},
    )
    assert isinstance(out, Mapped)
    assert out.rows[0].values["status"] == "unknown"  # lookup failed -> NULL -> default
    assert [w.rule for w in out.warnings] == ["crm.people.full_name:length"]


def test_filters_match_all_conditions(mapper: Mapper) -> None:
    out = mapper.map_row("public.members", {**ROW, "active": False})
    assert isinstance(out, Filtered)
    assert out.filter == "public.members:filter:inactive-before-2015"
    assert "last_seen 2010-01-01 is before 2015-01-01" in out.reason
    assert isinstance(
        mapper.map_row(
            "public.members", {**ROW, "active": False, "last_seen": dt.date(2020, 1, 1)}
        ),
        Mapped,
    )
    assert isinstance(
        mapper.map_row("public.members", {**ROW, "active": False, "last_seen": None}), Mapped
    )
    ts = dt.datetime(2014, 5, 1, tzinfo=dt.UTC)
    assert isinstance(
        mapper.map_row("public.members", {**ROW, "active": False, "last_seen": ts}), Filtered
    )


def test_references_against_key_sets(mapper: Mapper) -> None:
    note = {"id": 1, "member_id": 7, "body": "hi"}
    keys = KeySets()
    keys.track("crm.people", "legacy_id")
    out = mapper.map_row("public.notes", note, parents=keys)
    assert isinstance(out, Rejected) and out.rule == "crm.notes.person_id:references"
    assert out.deferrable and out.failures[0].window_s == 60
    keys.add("crm.people", "legacy_id", 7)
    ok = mapper.map_row("public.notes", note, parents=keys)
    assert isinstance(ok, Mapped) and ok.rows[0].values == {"person_id": 7, "id": 1, "body": "hi"}
    assert isinstance(
        mapper.map_row("public.notes", note), Mapped
    )  # no parents given: not evaluated


def test_map_key_for_deletes(mapper: Mapper) -> None:
    assert mapper.map_key("public.members", {"id": 7}) == [
        ("crm.people", (7,)),
        ("crm.contact_points", (7,)),
    ]
    assert mapper.map_key("public.notes", {"id": 3}) == [("crm.notes", (3,))]


def test_unavailable_columns_are_not_guessed(mapper: Mapper) -> None:
    out = mapper.map_row("public.members", {**ROW, "email": None}, unavailable=frozenset({"email"}))
    assert isinstance(out, Mapped)  # the required rule does not fire on a value that was not sent
    assert out.rows[0].unavailable == frozenset({"email"})


def test_identity_for_tables_without_mapping() -> None:
    m = Mapper(None, ["public.accounts"], {"public.accounts": ["id"]})
    row = {"id": 1, "name": "x", "revenue": decimal.Decimal("1.50")}
    out = m.map_row("public.accounts", row)
    assert (
        isinstance(out, Mapped)
        and out.rows[0].values == row
        and out.rows[0].table == "public.accounts"
    )
    assert out.rows[0].key == (1,)


def test_missing_source_column_is_a_reject(mapper: Mapper) -> None:
    row = dict(ROW)
    del row["phone"]
    out = mapper.map_row("public.members", row)
    assert isinstance(out, Rejected) and out.rule == "crm.people.phone:source"


def test_not_null_of_the_target_becomes_a_rule() -> None:
    cfg = MappingConfig.model_validate(
        {"tables": {"public.a": {"targets": [{"table": "x.a", "columns": {"id": "id", "v": "v"}}]}}}
    )
    m = Mapper(cfg, ["public.a"], {"public.a": ["id"]})
    require_not_null(m, "x.a", {"v"})
    out = m.map_row("public.a", {"id": 1, "v": None})
    assert isinstance(out, Rejected) and out.rule == "x.a.v:not_null"


@pytest.mark.parametrize(
    ("snippet", "complaint"),
    [
        (
            {
                "tables": {
                    "public.a": {
                        "targets": [
                            {
                                "table": "x.a",
                                "columns": {"v": {"from": "v", "transforms": ["emial"]}},
                            }
                        ]
                    }
                }
            },
            "mapping.tables.public.a.targets[0].columns.v.transforms[0]: unknown transform 'emial'",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "targets": [{"table": "x.a", "columns": {"v": {"from": "v", "const": 1}}}]
                    }
                }
            },
            "either `from` or `const`",
        ),
        (
            {
                "tables": {
                    "public.a": {"targets": [{"table": "x.a", "columns": {"v": {"form": "v"}}}]}
                }
            },
            "form",
        ),
        (
            {"tables": {"public.a": {"targets": [{"table": "xa", "columns": {}}]}}},
            "not schema.table",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "targets": [
                            {
                                "table": "x.a",
                                "columns": {"v": "v"},
                                "rules": {"w": {"required": True}},
                            }
                        ]
                    }
                }
            },
            "gets no column w",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "targets": [
                            {"table": "x.a", "rules": {}, "columns": {"v": {"from": ["a", "b"]}}}
                        ]
                    }
                }
            },
            "add a transform that combines them",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "filters": [{"name": "f", "when": [{"column": "c", "eq": 1, "ne": 2}]}],
                        "targets": [{"table": "x.a"}],
                    }
                }
            },
            "exactly one test",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "targets": [
                            {
                                "table": "x.a",
                                "columns": {"v": "v"},
                                "rules": {"v": {"pattern": "("}},
                            }
                        ]
                    }
                }
            },
            "not a valid regular expression",
        ),
        (
            {
                "dedup": {
                    "x.a": {"match": [{"name": "fz", "all": [{"column": "n", "method": "fuzzy"}]}]}
                }
            },
            "at least one exact",
        ),
        (
            {
                "tables": {
                    "public.a": {
                        "targets": [
                            {
                                "table": "x.a",
                                "columns": {"v": "v"},
                                "rules": {"v": {"references": "x.b"}},
                            }
                        ]
                    }
                }
            },
            "not schema.table.column",
        ),
    ],
)
def test_config_errors_name_the_field(snippet: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError) as err:
        MappingConfig.model_validate(snippet)
    assert complaint in str(err.value)


def _base(tmp_path: Path, **extra: Any) -> Path:
    cfg = {
        "source": {"dsn": "postgresql://u:p@h/db"},
        "target": {"dsn": "postgresql://u:p@h/db2"},
        "kafka": {"bootstrap_servers": "k:9092"},
        "tables": ["public.members", "public.notes"],
        **extra,
    }
    p = tmp_path / "crossfade.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_settings_keep_tables_as_identity_and_take_a_mapping(tmp_path: Path) -> None:
    assert load_settings(_base(tmp_path)).mapping is None
    s = load_settings(_base(tmp_path, mapping=yaml.safe_load(MAPPING)))
    assert s.mapping is not None and "public.members" in s.mapping.tables
    (tmp_path / "m.yaml").write_text(MAPPING)
    s2 = load_settings(_base(tmp_path, mapping="m.yaml"))  # a file next to the config
    assert s2.mapping == s.mapping


def test_settings_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"mapping.tables names public.other, which is not under `tables:`"
    ):
        load_settings(
            _base(tmp_path, mapping={"tables": {"public.other": {"targets": [{"table": "x.o"}]}}})
        )
    with pytest.raises(ConfigError, match=r"unknown transform 'phon'"):
        load_settings(
            _base(
                tmp_path,
                mapping={
                    "tables": {
                        "public.members": {
                            "targets": [
                                {
                                    "table": "x.o",
                                    "columns": {"p": {"from": "phone", "transforms": ["phon"]}},
                                }
                            ]
                        }
                    }
                },
            )
        )
    with pytest.raises(ConfigError, match="mapping file .*nope.yaml cannot be read"):
        load_settings(_base(tmp_path, mapping="nope.yaml"))


def test_the_demo_mapping_compiles() -> None:
    from crossfade.embedded.crm import TABLES

    raw = yaml.safe_load((ROOT / "examples" / "crm-mapping.yaml").read_text())
    cfg = MappingConfig.model_validate(raw)
    m = Mapper(
        cfg,
        TABLES,
        {"public.accounts": ["id"], "public.contacts": ["id"], "public.addresses": ["id"]},
    )
    assert set(m.tables) == set(TABLES) and cfg.dedup
