"""The dependency lock (issue 18, supply chain): every distribution setup, CI and the image
install is pinned to one version and a sha256, the lock satisfies pyproject.toml, and what this
environment has installed is what the lock says. ``scripts/lock_requirements.py`` refreshes it."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from tests.deploy.values_schema import ROOT

LOCKS = ROOT / "requirements"
ENTRY = re.compile(r"^([A-Za-z0-9._-]+)==(\S+) \\\n    --hash=sha256:([0-9a-f]{64})$", re.M)


def _lock(name: str) -> dict[str, tuple[str, str]]:
    text = (LOCKS / name).read_text()
    entries = {m.group(1): (m.group(2), m.group(3)) for m in ENTRY.finditer(text)}
    body = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert len(body) == 2 * len(entries), f"{name} has a line that is not name==version + hash"
    return entries


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(*extras: str) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, project["optional-dependencies"][extra]):
            if _norm(r.name) == "crossfade":
                todo.extend(r.extras)
            else:
                reqs.append(r)
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


@pytest.mark.parametrize(
    ("lock", "extras"), [("dev.lock", ("dev",)), ("runtime.lock", ("registry",))]
)
def test_the_lock_pins_every_requirement_of_pyproject(lock: str, extras: tuple[str, ...]) -> None:
    pins = _lock(lock)
    for req in _requirements(*extras):
        assert _norm(req.name) in pins, f"{req.name} is not in requirements/{lock}: refresh it"
        version = pins[_norm(req.name)][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements/{lock} pins {req.name}=={version}, pyproject wants {req}: refresh it"
        )
    assert {"pip", "setuptools"} <= set(pins)  # the tools setup installs with are pinned too


def test_runtime_lock_is_the_dev_locks_versions() -> None:
    dev, runtime = _lock("dev.lock"), _lock("runtime.lock")
    assert {k: v for k, v in runtime.items() if dev.get(k) != v} == {}


def test_this_environment_was_installed_from_the_lock() -> None:
    """setup.sh installs from requirements/dev.lock: a version that differs means it did not."""
    off = {}
    for name, (version, _) in _lock("dev.lock").items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            off[name] = "missing"
            continue
        if have != version:
            off[name] = have
    assert not off, f"installed versions differ from requirements/dev.lock: {off}"


def test_setup_ci_and_the_image_install_from_the_lock() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "pip install -q --require-hashes -r requirements/dev.lock" in setup
    assert "--no-deps --no-build-isolation -e ." in setup
    assert not re.search(r"pip install[^\n]*(--upgrade|'\.\[)", setup), "an unpinned install"
    assert "./scripts/setup.sh" in (ROOT / ".ci" / "run").read_text()
    assert "--require-hashes -r requirements/runtime.lock" in (ROOT / "Dockerfile").read_text()
    assert (ROOT / "scripts" / "lock_requirements.py").is_file()
    assert "scripts/lock_requirements.py" in (ROOT / "README.md").read_text()
