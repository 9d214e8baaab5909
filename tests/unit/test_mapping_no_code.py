"""A mapping is data: validating it runs no code, and it runs only the transforms the operator
allows (issue 18, finding 1: ``transforms: [{"os:system": "touch /tmp/x"}]`` in a mapping made
``crossfade config show`` create the file)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from crossfade.config import load_settings
from crossfade.errors import ConfigError
from crossfade.mapping.engine import compile_mapping

CALLS: list[str] = []


def marker(path: str = "") -> object:
    """A user transform factory that leaves a trace when it is called."""
    CALLS.append(path)
    return lambda v: v


def _config(tmp_path: Path, mapping: dict, **top: object) -> Path:
    cfg = {
        "source": {"dsn": "postgresql://u:pw@legacy/crm"},
        "target": {"dsn": "postgresql://u:pw@new/crm"},
        "kafka": {"bootstrap_servers": "k:9092"},
        "tables": ["public.a"],
        "mapping": mapping,
        **top,
    }
    p = tmp_path / "crossfade.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _column(transform: object, **extra: object) -> dict:
    return {
        "tables": {
            "public.a": {
                "targets": [
                    {
                        "table": "public.a",
                        "columns": {"id": {"from": "id", "transforms": [transform]}},
                    }
                ]
            }
        },
        **extra,
    }


def test_config_show_with_code_in_the_mapping_runs_nothing_and_refuses(tmp_path: Path) -> None:
    """The review's reproduction, through the real CLI."""
    touched = tmp_path / "pwned"
    for transform, extra in (
        ({"os:system": f"touch {touched}"}, {}),
        ({"shell": f"touch {touched}"}, {"transforms": {"shell": "os:system"}}),
        ({"subprocess:getoutput": f"touch {touched}"}, {}),
    ):
        cfg = _config(tmp_path, _column(transform, **extra))
        cp = subprocess.run(
            [sys.executable, "-m", "crossfade.ops.cli", "config", "show", "-c", str(cfg)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert not touched.exists(), "validating the mapping ran code from it"
        assert cp.returncode == 2, cp.stdout + cp.stderr
        (line,) = cp.stderr.strip().splitlines()
        assert "not allowed" in line and "transform_modules" in line, line


def test_validation_never_imports_or_calls_a_user_transform(tmp_path: Path) -> None:
    """Even an allowed module is neither imported nor called while the config is validated."""
    mod = tmp_path / "cf_probe_transforms.py"
    mod.write_text(
        textwrap.dedent(
            """
            import pathlib
            pathlib.Path(__file__).with_name("imported").touch()

            def probe(tag=""):
                pathlib.Path(__file__).with_name("called").touch()
                return lambda v: v
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        cfg = _config(
            tmp_path,
            _column({"probe": {"tag": "x"}}, transforms={"probe": "cf_probe_transforms:probe"}),
            transform_modules=["cf_probe_transforms"],
        )
        s = load_settings(cfg)
        assert not (tmp_path / "imported").exists() and not (tmp_path / "called").exists()
        assert s.mapping is not None
        # running the mapping (sync, audit, verify) loads it: the operator allowed it
        compile_mapping(s.mapping, s.tables)
        assert (tmp_path / "imported").exists() and (tmp_path / "called").exists()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("cf_probe_transforms", None)


def test_allowed_prefixes_are_the_operators_not_the_mappings(tmp_path: Path) -> None:
    # under an allowed prefix: validates, builds, runs
    cfg = _config(
        tmp_path,
        _column({f"{__name__}:marker": "p"}),
        transform_modules=["tests.unit"],
    )
    CALLS.clear()
    s = load_settings(cfg)
    assert CALLS == []
    assert s.mapping is not None
    compile_mapping(s.mapping, s.tables)
    assert CALLS == ["p"]
    # a sibling that only shares the prefix's spelling is not under it
    cfg = _config(tmp_path, _column({f"{__name__}:marker": "p"}), transform_modules=["tests.uni"])
    with pytest.raises(ConfigError, match="not allowed"):
        load_settings(cfg)
    # the mapping cannot allow itself: transform_modules is not a mapping key
    cfg = _config(tmp_path, _column("trim", transform_modules=["os"]))
    with pytest.raises(ConfigError, match="mapping.transform_modules is not a known setting"):
        load_settings(cfg)
    # nor can the operator allow the standard library
    cfg = _config(tmp_path, _column("trim"), transform_modules=["os"])
    with pytest.raises(ConfigError, match="standard library"):
        load_settings(cfg)


def test_a_mapping_built_outside_the_config_imports_nothing_unlisted() -> None:
    """Defence in depth: a MappingConfig no configuration vouched for runs no import path."""
    from crossfade.config.mapping import MappingConfig

    m = MappingConfig.model_validate(_column({f"{__name__}:marker": "p"}))
    assert m.user_transform_paths == (f"{__name__}:marker",)
    CALLS.clear()
    with pytest.raises(ConfigError, match="not allowed"):
        compile_mapping(m, ["public.a"])
    assert CALLS == []


def test_unknown_names_and_bad_builtin_arguments_still_fail_at_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown transform 'emial'"):
        load_settings(_config(tmp_path, _column("emial")))
    with pytest.raises(ConfigError, match="transform phone"):
        load_settings(_config(tmp_path, _column({"phone": {"format": "SMOKE"}})))
    with pytest.raises(ConfigError, match="not an import path"):
        load_settings(_config(tmp_path, _column("trim", transforms={"x": "os system"})))


def test_the_config_package_imports_no_engine_and_the_engine_still_refuses(tmp_path: Path) -> None:
    """config is the ground floor: loading a configuration imports nothing of crossfade.mapping.
    A library caller that never imports the engine gets the shape checked at load, and the names
    checked by the engine when it compiles."""
    cfg = _config(tmp_path, _column("emial"))
    code = (
        "import sys\n"
        "from crossfade.config import load_settings\n"
        f"s = load_settings({str(cfg)!r})\n"
        "assert not any(m.startswith('crossfade.mapping') for m in sys.modules), 'engine imported'\n"
        "from crossfade.errors import ConfigError\n"
        "from crossfade.mapping.engine import compile_mapping\n"
        "try:\n"
        "    compile_mapping(s.mapping)\n"
        "except ConfigError as exc:\n"
        "    assert 'unknown transform' in str(exc), exc\n"
        "else:\n"
        "    raise SystemExit('the engine compiled an unknown transform')\n"
    )
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stdout + cp.stderr
