"""Nothing silent in the mapping language: one plain line per problem, YAML's booleans named,
literals compared as the column's type, a missing parent deferred by default."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from crossfade.config import validation_messages
from crossfade.config.mapping import Condition, MappingConfig
from crossfade.mapping import literals
from crossfade.mapping.engine import KeySets, Mapper, Rejected
from crossfade.mapping.schema_check import SchemaReport


def _errors(text: str) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        MappingConfig.model_validate(yaml.safe_load(text))
    return validation_messages(exc.value)


TARGET = "tables: {public.a: {targets: [{table: crm.x, columns: COLUMNS}]}}"


@pytest.mark.parametrize(
    ("columns", "want"),
    [
        (
            "{email: {from: email, const: 1}}",
            "tables.public.a.targets.0.columns.email give either `from` or `const`, not both",
        ),
        (
            "{email: {form: email}}",
            "tables.public.a.targets.0.columns.email.form is not a known setting (typo?)",
        ),
        ("{email: 5}", "tables.public.a.targets.0.columns.email expects a mapping or text (got 5)"),
    ],
)
def test_union_errors_read_as_one_line_without_pydantic_internals(columns: str, want: str) -> None:
    assert _errors(TARGET.replace("COLUMNS", columns)) == [want]


def test_a_rule_bound_that_is_neither_number_nor_date() -> None:
    errs = _errors(
        "tables: {public.a: {targets: [{table: crm.x, columns: {n: n}, rules: {n: {min: abc}}}]}}"
    )
    assert errs == [
        "tables.public.a.targets.0.rules.n.min expects a number or a date (YYYY-MM-DD) (got 'abc')"
    ]


def _bound(bound: str) -> str:
    return TARGET.replace("COLUMNS", "{n: n}").replace("}]}}", ", rules: {n: {" + bound + "}}}]}}")


@pytest.mark.parametrize(
    ("bound", "want", "fine"),
    [
        (
            "min: .nan",
            "crm.x.n:min is NaN, which no value compares with (every value would pass)",
            "min: 0",
        ),
        ("max: nan", "crm.x.n:max is NaN", "max: 2024-01-01"),
        ("min: NaN", "crm.x.n:min is NaN", "min: -.inf"),
        ("min: .inf", "crm.x.n:min is inf, which every finite number fails", "max: .inf"),
        ("max: -.inf", "crm.x.n:max is -inf, which every finite number fails", "min: -.inf"),
    ],
)
def test_a_rule_bound_no_value_compares_with_is_refused_at_load(
    bound: str, want: str, fine: str
) -> None:
    """A NaN bound let every value through (every comparison with it is false); a ``min`` of
    +inf or a ``max`` of -inf lets none: both are mistakes, said with the rule's name. A finite
    bound loads, and so does an infinity that refuses only NaN (``max: .inf``)."""
    (err,) = _errors(_bound(bound))
    assert err.startswith("tables.public.a.targets.0 rule crm.x.n:"), err
    assert want in err, err
    which = bound.split(":")[0]
    assert err.endswith(f", or leave {which} out") and "\n" not in err, err
    assert MappingConfig.model_validate(yaml.safe_load(_bound(fine))).tables["public.a"]


@pytest.mark.parametrize(
    ("bounds", "want", "fine"),
    [
        ("min: 10, max: 1", "crm.x.n:min is 10.0, above its max 1.0", "min: 1, max: 1"),
        (
            "min: 2024-02-01, max: 2024-01-01",
            "crm.x.n:min is 2024-02-01, above its max 2024-01-01",
            "min: 2024-01-01, max: 2024-02-01",
        ),
    ],
)
def test_a_rule_whose_min_is_above_its_max_is_refused_at_load(
    bounds: str, want: str, fine: str
) -> None:
    """``min`` above ``max`` (swapped, or one mistyped) is a range every value fails: every row
    would be rejected under the rule. Said when the mapping loads, naming the rule; equal bounds
    (one value allowed) and an open range load."""
    (err,) = _errors(_bound(bounds))
    assert err.startswith("tables.public.a.targets.0 rule crm.x.n:"), err
    assert want in err and "\n" not in err, err
    assert err.endswith("which every value fails: swap them, or correct the one mistyped")
    assert MappingConfig.model_validate(yaml.safe_load(_bound(fine))).tables["public.a"]


def _filter(condition: str) -> str:
    return (
        "tables: {public.a: {filters: [{name: f, when: [{column: x, "
        + condition
        + "}]}], targets: [{table: crm.x, columns: {n: n}}]}}"
    )


@pytest.mark.parametrize(
    ("condition", "want"),
    [
        ("lt: .nan", "condition on x: lt is NaN, which no value compares with"),
        ("ge: .NAN", "condition on x: ge is NaN"),
        ("eq: .NaN", "condition on x: eq is NaN"),
        ("ne: .nan", "condition on x: ne is NaN"),
        ("in: [1, .nan]", "condition on x: in holds NaN"),
        ("not_in: [.nan]", "condition on x: not_in holds NaN"),
    ],
)
def test_a_filter_literal_of_nan_is_refused_at_load(condition: str, want: str) -> None:
    """Every comparison with NaN is false: ``lt: .nan`` would filter no row, ``ne: .nan`` every
    row, silently. Refused when the mapping loads, one line naming the condition."""
    (err,) = _errors(_filter(condition))
    assert err.startswith("tables.public.a.filters.0.when.0 " + want), err
    assert err.endswith("write a number, or leave the condition out") and "\n" not in err, err
    assert MappingConfig.model_validate(yaml.safe_load(_filter("lt: .inf")))


@pytest.mark.parametrize(("test", "value"), [("lt", "NaN"), ("gt", "nan"), ("in", ["1", "NaN"])])
def test_a_filter_literal_read_as_nan_for_a_number_column_is_refused(test: str, value: Any) -> None:
    """Text the schema check converts to the column's number type (``"NaN"`` for a numeric
    column) must not become a NaN literal either; text ``"NaN"`` for a text column is text."""
    c = Condition.model_validate({"column": "x", test: value})
    rep = _report()
    literals.check_condition(c, "numeric", "public.a.x", "numeric", "filters[0].when[0]", rep)
    assert len(rep.errors) == 1, rep.errors
    (err,) = rep.errors
    assert err.lower().startswith("filters[0].when[0]: 'nan' read as numeric: "), err
    assert "NaN, which no value compares with" in err, err
    rep = _report()
    literals.check_condition(c, "text", "public.a.x", "text", "filters[0].when[0]", rep)
    assert not rep.errors, rep.errors


def test_a_region_code_yaml_reads_as_a_boolean_gets_a_hint() -> None:
    (err,) = _errors("defaults: {phone_region: NO}")
    assert err.startswith("defaults.phone_region expects text (got False")
    assert 'quote a code like that, e.g. "NO" for Norway' in err
    assert MappingConfig.model_validate(yaml.safe_load('defaults: {phone_region: "NO"}'))


def _report() -> SchemaReport:
    return SchemaReport()


@pytest.mark.parametrize(
    ("test", "value", "category", "type_sql", "converted"),
    [
        ("lt", "2019-01-01", "date", "date", dt.date(2019, 1, 1)),
        ("eq", "true", "bool", "boolean", True),
        ("eq", "42", "int", "integer", 42),
        ("in", ["1", 2], "int", "bigint", [1, 2]),
        (
            "ge",
            "2019-01-01 10:00",
            "timestamp",
            "timestamp without time zone",
            dt.datetime(2019, 1, 1, 10),
        ),
    ],
)
def test_filter_literals_convert_to_the_column_type_and_say_so(
    test: str, value: Any, category: str, type_sql: str, converted: Any
) -> None:
    c = Condition.model_validate({"column": "x", test: value})
    rep = _report()
    out = literals.check_condition(c, category, "public.a.x", type_sql, "filters[0].when[0]", rep)
    assert not rep.errors
    assert getattr(out, "in_" if test == "in" else test) == converted
    assert len(rep.warnings) >= 1 and "compared as" in rep.warnings[0]


@pytest.mark.parametrize(
    ("test", "value", "category", "type_sql", "needle"),
    [
        ("eq", "flase", "bool", "boolean", "eq 'flase' is text, but public.a.x is boolean"),
        ("eq", False, "text", "text", "quote a code like 'NO'"),
        ("lt", "yesterday", "date", "date", "write the date unquoted"),
        ("eq", 5, "text", "text", "5 is a number, but public.a.x is text"),
        ("matches", "^A", "int", "integer", "matches tests text, but public.a.x is integer"),
        ("before", "2019-01-01", "int", "integer", "before tests dates"),
    ],
)
def test_filter_literals_that_cannot_compare_are_refused(
    test: str, value: Any, category: str, type_sql: str, needle: str
) -> None:
    c = Condition.model_validate({"column": "x", test: value})
    rep = _report()
    literals.check_condition(c, category, "public.a.x", type_sql, "filters[0].when[0]", rep)
    assert len(rep.errors) == 1 and needle in rep.errors[0], rep.errors


def test_rule_literals_that_cannot_compare_are_refused() -> None:
    from crossfade.config.mapping import ColumnRules

    rep = _report()
    literals.check_rules(
        ColumnRules(min=dt.date(2000, 1, 1)), "int", "crm.x.n", "integer", "r", rep
    )
    literals.check_rules(ColumnRules(enum=["1", "2"]), "int", "crm.x.n", "integer", "r", rep)
    literals.check_rules(ColumnRules(max=10), "text", "crm.x.t", "text", "r", rep)
    literals.check_rules(ColumnRules(min=1, max=2, enum=[1]), "int", "crm.x.n", "integer", "r", rep)
    assert len(rep.errors) == 4, rep.errors  # min, two enum values, max: the last rule is fine
    assert "use min_length/max_length for text" in rep.errors[-1]


def test_a_filter_that_cannot_compare_at_run_time_rejects_the_row() -> None:
    """After a transform of unknown output type the schema check cannot know: the row is
    rejected under the filter's rule, never filtered or migrated as if the filter did not hold."""
    cfg = MappingConfig.model_validate(
        yaml.safe_load(
            """
tables:
  public.a:
    filters: [{name: old, when: [{column: joined, transforms: [{lookup: {x: 1}}], lt: "2019-01-01"}]}]
    targets: [{table: crm.a, columns: {id: id}}]
"""
        )
    )
    mapper = Mapper(cfg, [], {"public.a": ["id"]})
    out = mapper.map_row("public.a", {"id": 1, "joined": "x"})
    assert isinstance(out, Rejected) and out.rule == "public.a:filter:old"
    assert "compares it with text '2019-01-01'" in out.failures[0].message


def test_a_reference_without_a_window_waits_the_default() -> None:
    text = """
defaults: {references_window_s: 120, on_parent_left: delete}
tables:
  public.c:
    targets:
      - table: crm.c
        columns: {id: id, p: p, q: q}
        rules:
          p: {references: crm.p.id}
          q: {references: {table: crm.p, column: id, window_s: 0, on_parent_left: keep}}
"""
    mapper = Mapper(MappingConfig.model_validate(yaml.safe_load(text)), [], {"public.c": ["id"]})
    keys = KeySets()
    keys.track("crm.p", "id")
    out = mapper.map_row("public.c", {"id": 1, "p": 7, "q": 8}, parents=keys)
    assert isinstance(out, Rejected)
    p, q = out.failures
    assert (p.window_s, p.deferrable, p.on_parent_left, p.parent) == (
        120,
        True,
        "delete",
        ("crm.p", "id"),
    )
    assert (q.window_s, q.deferrable, q.on_parent_left) == (0, False, "keep")
    assert not out.deferrable  # one of them cannot wait
    assert out.rows[0].values == {"id": 1, "p": 7, "q": 8}  # what the child would be
