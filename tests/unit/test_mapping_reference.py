"""docs/mapping.md is generated from the mapping model: it cannot drift from the code."""

from __future__ import annotations

import typing
from pathlib import Path

from crossfade.config import mapping as model
from crossfade.mapping import reference
from crossfade.mapping.transforms import BUILTINS, CASTS, EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "mapping.md"


def test_the_committed_reference_is_the_generated_one() -> None:
    assert DOC.read_text() == reference.render(), (
        "docs/mapping.md is stale (the mapping model changed?): regenerate it with "
        "`.venv/bin/python -m crossfade.mapping.reference > docs/mapping.md`"
    )


def test_the_reference_covers_every_key_option_transform_and_cast() -> None:
    text = reference.render()
    for cls, _where in reference._SECTIONS:
        assert f"### {cls.__name__}" in text
        for name, f in cls.model_fields.items():
            assert f"| `{f.alias or name}` |" in text, (cls.__name__, name)
            assert f.description, f"{cls.__name__}.{name} has no docstring (its description)"
    for name in BUILTINS:
        assert f"### `{name}`" in text and EXAMPLES.get(name), name
    for c in CASTS:
        assert f"`{c}`" in text
    for options in model.OPTION_DOCS.values():
        for value in options:
            assert f"`{value}`:" in text, value
    # every value of every option list has its sentence
    for (cls_name, field), opts in reference._FIELD_OPTIONS.items():
        ann = getattr(model, cls_name).model_fields[field].annotation
        values = {a for a in typing.get_args(ann) if isinstance(a, str)} | {
            a for t in typing.get_args(ann) for a in typing.get_args(t) if isinstance(a, str)
        }
        assert values and values <= set(model.OPTION_DOCS[opts]), (cls_name, field)


def test_the_readme_links_the_reference() -> None:
    assert "(docs/mapping.md)" in (ROOT / "README.md").read_text()
