"""A ``min``/``max`` rule and the non-finite values: NaN is within no range (it was let through:
every comparison with a float NaN is false, and a numeric NaN, ``Decimal('NaN')``, raised
InvalidOperation out of the rule); the infinities compare as they are.

The rule is evaluated by :meth:`Mapper.map_row` for live sync, audit, dry-run and verify's expected
rows alike, so the Mapper is what is tested here."""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Any

import pytest
import yaml

from crossfade.config.mapping import MappingConfig
from crossfade.mapping.engine import Mapped, Mapper, Rejected

MAPPING = """
tables:
  public.m:
    targets:
      - table: app.m
        columns: {id: id, level: level, amount: amount, low: low}
        rules:
          level: {min: 0, max: 10}
          amount: {min: 0.5}
          low: {max: 3}
"""
ROW: dict[str, Any] = {"id": 1, "level": 5.0, "amount": Decimal("1.25"), "low": 2}


@pytest.fixture(scope="module")
def mapper() -> Mapper:
    cfg = MappingConfig.model_validate(yaml.safe_load(MAPPING))
    return Mapper(cfg, ["public.m"], {"public.m": ["id"]})


def _failures(mapper: Mapper, **values: Any) -> list[tuple[str, str]]:
    out = mapper.map_row("public.m", {**ROW, **values})
    if isinstance(out, Mapped):
        return []
    assert isinstance(out, Rejected), out
    return [(f.rule, f.message) for f in out.failures]


def test_a_value_within_the_range_passes(mapper: Mapper) -> None:
    assert _failures(mapper) == []


@pytest.mark.parametrize(
    ("column", "nan"),
    [
        ("level", float("nan")),  # float8 / real NaN
        ("level", -float("nan")),
        ("amount", Decimal("NaN")),  # numeric 'NaN' as the decoder gives it
        ("amount", Decimal("-NaN")),
        ("amount", Decimal("sNaN")),  # signalling: raises on any comparison
        ("low", float("nan")),  # a max alone
    ],
)
def test_nan_fails_a_min_or_max_rule_with_the_rules_name(
    mapper: Mapper, column: str, nan: Any
) -> None:
    (failure,) = _failures(mapper, **{column: nan})
    assert failure[0] == f"app.m.{column}:range", failure
    assert "NaN" in failure[1] and "within no min/max range" in failure[1], failure


def test_a_decimal_nan_fails_too_where_comparing_it_does_not_raise(mapper: Mapper) -> None:
    """Without the InvalidOperation trap a quiet Decimal NaN compares False, like a float's."""
    with decimal.localcontext() as ctx:
        ctx.traps[decimal.InvalidOperation] = False
        assert [r for r, _ in _failures(mapper, amount=Decimal("NaN"))] == ["app.m.amount:range"]


@pytest.mark.parametrize(
    ("values", "rule", "said"),
    [
        ({"level": float("inf")}, "app.m.level:range", "above the maximum 10"),
        ({"level": float("-inf")}, "app.m.level:range", "below the minimum 0"),
        ({"amount": Decimal("-Infinity")}, "app.m.amount:range", "below the minimum 0.5"),
        ({"low": float("-inf"), "amount": Decimal("Infinity")}, None, None),  # no bound that side
    ],
)
def test_the_infinities_compare_as_they_are(
    mapper: Mapper, values: dict[str, Any], rule: str | None, said: str | None
) -> None:
    failures = _failures(mapper, **values)
    if rule is None:
        assert failures == []
    else:
        assert len(failures) == 1 and failures[0][0] == rule and said in failures[0][1], failures
