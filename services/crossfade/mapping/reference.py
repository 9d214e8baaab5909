"""docs/mapping.md, the reference of the mapping language, built from the model itself.

Every section is generated: the fields of each model with their type, default and the docstring
under them (:mod:`crossfade.config.mapping`), every value of every option list with its sentence
(``model.OPTION_DOCS``), every built-in transform with its arguments, its docstring and examples
whose outputs are computed by running it (``transforms.EXAMPLES``), and the casts. The prose
between them says how the pieces behave in sync, verify and audit. ``tests/unit/
test_mapping_reference.py`` fails when the committed file differs from :func:`render`, or when an
option or a transform has no description. Regenerate with::

    .venv/bin/python -m crossfade.mapping.reference > docs/mapping.md
"""

from __future__ import annotations

import datetime as dt
import decimal
import inspect
import sys
import textwrap
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

from crossfade.config import mapping as m
from crossfade.mapping.transforms import BUILTINS, CASTS, EXAMPLES, Registry, TransformError

_SECTIONS: list[tuple[type[BaseModel], str]] = [
    (m.MappingConfig, "mapping"),
    (m.MappingDefaults, "mapping.defaults"),
    (m.TableMapping, "mapping.tables.<source table>"),
    (m.FilterSpec, "filters[]"),
    (m.Condition, "filters[].when[]"),
    (m.TargetSpec, "targets[]"),
    (m.ColumnSpec, "targets[].columns.<column>"),
    (m.ColumnRules, "targets[].rules.<column>"),
    (m.Reference, "rules.<column>.references"),
    (m.RowRule, "targets[].row_rules[]"),
    (m.DedupSpec, "mapping.dedup.<target table>"),
    (m.MatchRule, "dedup.match[]"),
    (m.MatchCondition, "dedup.match[].all[]"),
    (m.Survivorship, "dedup.survivorship"),
    (m.ColumnSurvivorship, "dedup.survivorship.columns.<column>"),
]
_FIELD_OPTIONS = {
    ("ColumnSpec", "on_error"): "on_error",
    ("ColumnRules", "severity"): "severity",
    ("RowRule", "severity"): "severity",
    ("Reference", "on_parent_left"): "on_parent_left",
    ("MappingDefaults", "on_parent_left"): "on_parent_left",
    ("MatchCondition", "method"): "method",
    ("Survivorship", "survivor"): "survivor",
    ("Survivorship", "default"): "survivorship",
    ("ColumnSurvivorship", "rule"): "survivorship",
}
"""(model, field) -> the option list (``model.OPTION_DOCS``) whose values it takes."""


def _anchor(name: str) -> str:
    return name.lower()


def _type(t: Any) -> str:
    """A field's annotation in words."""
    origin = typing.get_origin(t)
    args = typing.get_args(t)
    if t is type(None):
        return "null"
    if t is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_type(a) for a in args if a is not type(None)))
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"mapping of name to {_type(args[1])}"
    if isinstance(t, type) and issubclass(t, BaseModel):
        return f"[{t.__name__}](#{_anchor(t.__name__)})"
    return {
        str: "text",
        int: "whole number",
        float: "number",
        bool: "`true` / `false`",
        dt.date: "date",
        dt.datetime: "timestamp",
    }.get(t, getattr(t, "__name__", str(t)))


def _default(f: Any) -> str:
    if f.is_required():
        return "required"
    if f.default_factory is not None:
        v = f.default_factory()
        return "`[]`" if v == [] else "`{}`" if v == {} else f"`{v}`"
    d = f.default
    if d is None:
        return "unset"
    if isinstance(d, BaseModel):
        return "(its defaults)"
    return f"`{str(d).lower() if isinstance(d, bool) else d}`"


def _cell(text: str | None) -> str:
    return " ".join((text or "").replace("``", "`").replace("|", "\\|").split())


def _model(cls: type[BaseModel], where: str) -> list[str]:
    doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0]
    if cls is m.MappingConfig:
        doc = "The `mapping:` section of the config (or the YAML file it names)."
    out = [
        f"### {cls.__name__}",
        "",
        f"`{where}` — {_cell(doc)}",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, f in cls.model_fields.items():
        key = f.alias or name
        desc = f.description or ""
        opts = _FIELD_OPTIONS.get((cls.__name__, name))
        if opts:
            desc += " " + "; ".join(f"`{k}`: {v}" for k, v in m.OPTION_DOCS[opts].items()) + "."
        out.append(f"| `{key}` | {_type(f.annotation)} | {_default(f)} | {_cell(desc)} |")
    return [*out, ""]


def _show(v: Any) -> str:
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return str(v)
    return repr(v)


def _yaml(spec: Any) -> str:
    import json

    if isinstance(spec, str):
        return spec
    return json.dumps(spec, ensure_ascii=False).replace('"', "")


def _transforms() -> list[str]:
    reg = Registry()
    out = [
        "## Transforms",
        "",
        "Under `transforms:` of a column (or of a filter condition, or a match condition's "
        "`normalise`), applied left to right. Written as a name (`email`), a name with its "
        "arguments (`{phone: {region: GB}}`), or a name with its main argument "
        "(`{split_name: first}`). NULL passes through unless the transform says otherwise. A "
        "value a transform cannot handle is a failure of the column (see `on_error`). "
        "`mapping.defaults` fills `region` (phone), `formats` and `dayfirst` (date, datetime) "
        "where a spec leaves them out. The outputs below are computed by running the transform.",
        "",
    ]
    for name, factory in BUILTINS.items():
        sig = inspect.signature(factory)
        args = ", ".join(
            f"`{p.name}`" + ("" if p.default is inspect.Parameter.empty else f" = `{p.default!r}`")
            for p in sig.parameters.values()
        )
        doc = inspect.cleandoc(factory.__doc__ or "").replace("``", "`")
        out += [f"### `{name}`", "", doc, ""]
        out += [f"Arguments: {args or 'none'}.", ""]
        out += ["| spec | input | output |", "|---|---|---|"]
        for spec, value in EXAMPLES[name]:
            _n, fn = reg.build(spec)
            try:
                got = _show(fn(value))
            except TransformError as exc:
                got = f"failure: {exc}"
            out.append(f"| `{_yaml(spec)}` | `{_show(value)}` | {_cell(got)} |")
        out.append("")
    out += [
        "### Casts",
        "",
        "`cast:` of a column (after its transforms) or the `cast` transform: "
        + ", ".join(f"`{c}`" for c in CASTS)
        + ". A value that is not of the type is a failure of the column "
        "(`<table>.<column>:cast:<type>`).",
        "",
    ]
    return out


_INTRO = """# The mapping language

*Generated from crossfade's mapping model by `python -m crossfade.mapping.reference`; do not
edit by hand (`tests/unit/test_mapping_reference.py` compares this file with the model).*

The `mapping:` section of the config says what each legacy row becomes in the new database:
renames, cleansing transforms, filters, validation rules, parents and children, deduplication.
It is one YAML tree, under `mapping:` in the config file or in a file of its own
(`mapping: crm-mapping.yaml`, relative to the config file). A source table listed under `tables:`
without an entry here is copied as it is. The same mapping is a pure function of a row, used by
`crossfade audit`, `crossfade dry-run`, the live sync and `crossfade verify`, so what audit
predicts is what sync does and what verify checks. Example: `examples/crm-mapping.yaml`.

{example}

Every key is checked when the config loads: an unknown key, a wrong type or a transform that does
not exist is one line naming its path. With the databases at hand (every command that reads
them) the mapping is also checked against both catalogs: columns exist, types fit (`cast:`
where they do not), target keys are computable from the legacy primary key, and every literal
of a filter or rule can be compared with its column (see "Literals" below).

## What happens to a row

Each legacy row has exactly one outcome, recorded per key by sync (`crossfade.ledger`), counted
by `crossfade dlq list` and checked by `crossfade verify`, so the accounting closes:
`legacy rows = mapped + dead letters + filtered + deferred + parent_left`.

| outcome | when | where it shows |
|---|---|---|
| `mapped` | every `reject` rule passes | one row per target (golden record for dedup targets) |
| `filtered` | a filter holds | `dlq list` (by filter), audit, verify; its target rows are removed |
| `dead_letter` | a rule failed (the first failing rule names it) | the dead-letter topic with the original bytes, `dlq list`, `dlq replay` after a fix |
| `deferred` | only `references` rules failed and the parent may still come | `dlq list`; applied when the parent arrives, a dead letter when the window ends |
| `parent_left` | under `on_parent_left: delete`, the parent is known gone | `dlq list`; back when the parent is |

Rule names (what dead letters and the audit group by): `<target>.<column>:required`,
`:pattern`, `:range`, `:enum`, `:length`, `:references`, `:not_null` (a NOT NULL target column
left empty), `:too_long` (a text longer than its `varchar(n)`/`char(n)` target column, or a bit
string longer than its `bit varying(n)`/`bit(n)` one), `:too_large` (a number too large for its
`numeric(p,s)` target column), `:transform:<name>`, `:cast:<type>`,
`:source` (a source column missing), a row rule `<target>:<name>`, a filter that cannot
compare its literal `<source>:filter:<name>`, and `target`: the mapping passed the row but the new
database refused it (a CHECK, a domain, a unique index on a non-key column, a value its type
refuses; the reason names the constraint or column, docs/operations.md).

Nothing is cut to fit: a value longer than its target column is a `:too_long` dead letter whose
reason names the table, the column, its type and the value's length, on every path (a golden
record of a deduplicated target too; `crossfade dlq replay` after shortening it or widening the
column). As PostgreSQL does on INSERT, spaces past the limit are dropped, not refused. A number
too large for its `numeric(p,s)` column is a `:too_large` dead letter the same way. A value whose
text only the database makes (a date or decimal into a `varchar(n)`, a float into a
`numeric(p,s)`) is refused by the database instead: sync stops with its message. PostgreSQL
rounds a value to its column's `numeric(p,s)` scale and `timestamp(p)` precision the same way on
every path (sync, dedup, COPY load, verify's expected rows), so verify does not report it: give
the column the legacy column's scale where rounding is not acceptable.

## Parents and children

A `references` rule makes its target a child of the parent target it names. In the live sync
changes of different tables travel in different topics, so a child can be seen before the
parent it was committed with, and a parent's later fate reaches sync after its children:

* **A missing parent defers the child** (`deferred`) for the rule's `window_s`, or
  `mapping.defaults.references_window_s` (300 s) when it sets none. The child is applied the
  moment the parent arrives, in the same transaction that applies the parent. It becomes a dead
  letter only when the window ends ("parent did not arrive within its window"), or at once when
  the parent is known to be filtered or a dead letter ("parent left: its parent ... is filtered").
  A parent deleted at the source lets the child wait out its window first (the child's own
  delete is usually on its way through its topic), then "parent left: ... was deleted at the
  source". `window_s: 0` dead-letters at once: use it only for parents loaded beforehand.
* **A parent that leaves the target** (deleted at the source, filtered, dead-lettered) takes its
  children with it by `on_parent_left`: `dead_letter` (default: deferred, then a dead letter
  with the reason "parent left"), `delete` (out of the target as `parent_left`, not a dead
  letter), or `keep` (left as they are). When the parent comes back (fixed, reactivated,
  re-inserted) its children come back with it.
* **Children of a deduplicated parent point at the survivor** of their member's group. sync keeps,
  per child and reference column, the member the child refers to at the source
  (`crossfade.child_refs`), so whenever a member's group changes (a duplicate arrives, a member
  moves to another group, a group splits, the survivor is deleted, dead-lettered or handed over
  to another member by recency) the children of every member concerned are mapped again and
  pointed at the new survivor, in the same transaction, whatever the order in which children and
  merges arrive.
* **A member deleted at the source is a parent deleted**: its own children follow
  `on_parent_left` even when its group's golden record lives on under another member (at the
  source they point at a row that no longer exists); the other members' children stay with the
  golden record.
* Parents are known by the ledger when the referenced column is the parent target's key and
  renames the legacy primary key (`account_id: id`), the usual case; other parents are waited
  for until the window ends.

`crossfade verify` computes the same from the legacy rows: a child whose parent is not mapped
is expected out of the target (and in the ledger as deferred, a dead letter or `parent_left`),
children of deduplicated parents point at survivors, and children kept under `keep` are
compared without their reference columns.

## Literals

A literal in a filter or rule is compared with the column's type. YAML decides the literal's
type: `2019-01-01` is a date but `"2019-01-01"` is text; `true` is a boolean but `flase` is
text; unquoted `yes`, `no`, `on`, `off`, `y`, `n` (any case) are booleans, so a country or
region code like Norway's must be quoted: `phone_region: "NO"`, `eq: "NO"`. When the literal
converts unambiguously to the column's type (ISO date text for a date column, a number written
as text for a number column, `"true"` for a boolean, UUID text for a uuid) it is converted and
a warning says so; otherwise the mapping is refused, naming the column, both types and the fix.
A literal that still cannot be compared at run time (after a transform of unknown output type)
rejects the row under the filter's rule instead of quietly not matching.

## Sections
"""


def _example() -> str:
    """The example of the model's module docstring (its ``code-block:: yaml``), as Markdown."""
    doc = inspect.getdoc(m) or ""
    block = doc.split(".. code-block:: yaml", 1)[1].split("\n\n", 2)[1]
    return "```yaml\n" + textwrap.dedent(block).strip("\n") + "\n```"


_DEDUP = """## Deduplication

`mapping.dedup.<target table>` merges records of one target into golden records. Matching runs on
mapped values (a normalised email, an E.164 phone). Two records are the same entity when every
condition of some match rule holds; groups are transitive. Each merge keeps its rule and the
evidence (values, fuzzy scores): `crossfade dedup explain KEY`. The golden record is built by
survivorship and keeps the survivor's key; every member's key resolves to it in the crosswalk.
`audit` lists the groups, `dry-run` the merges of its sample; sync regroups live on every change of
a member and verify recomputes the groups from the legacy rows.

A rule with a fuzzy condition compares the records of a block (the values of its exact
conditions) pair by pair. A block of more than 500 records (a company switchboard's phone number
under "same phone, similar name", a placeholder value) is not compared at all, in audit, dry-run,
verify and sync alike: it gives no match, audit reports it, and sync's live regroup does not load
its records (only those it had grouped while the block was smaller, to split their groups). An
exact rule's block is one group whatever its size; sync stops on a group of more than 5,000
records (see docs/operations.md).
"""


def render() -> str:
    """The whole reference (Markdown)."""
    missing = [
        f"{(cls.__name__, f)}"
        for (cls_name, f), opts in _FIELD_OPTIONS.items()
        for cls in [getattr(m, cls_name)]
        for v in typing.get_args(cls.model_fields[f].annotation)
        if isinstance(v, str) and v not in m.OPTION_DOCS[opts]
    ]
    if missing:
        raise ValueError(f"options without a description in model.OPTION_DOCS: {missing}")
    lines = [_INTRO.replace("{example}", _example())]
    for cls, where in _SECTIONS:
        if cls is m.DedupSpec:
            lines += [_DEDUP]
        lines += _model(cls, where)
    lines += _transforms()
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
