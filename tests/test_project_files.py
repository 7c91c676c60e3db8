"""What users look for beside the code: one version, true classifiers, the
changelog, the security policy, and every environment variable on one page."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import greenbridge

ROOT = Path(__file__).resolve().parents[1]
ENV_PAGE = ROOT / "docs" / "environment.md"


def pyproject() -> dict[str, Any]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return data


def test_the_version_is_defined_once() -> None:
    project = pyproject()["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    source = pyproject()["tool"]["hatch"]["version"]["path"]
    text = (ROOT / source).read_text()
    assert re.findall(r'^__version__ = "([^"]+)"$', text, re.MULTILINE) == [greenbridge.__version__]


def test_the_classifiers_say_what_is_true() -> None:
    project = pyproject()["project"]
    classifiers = set(project["classifiers"])
    # Green I/O refuses Windows' default (Proactor) loop: not "OS Independent".
    assert "Operating System :: OS Independent" not in classifiers
    assert "Operating System :: POSIX" in classifiers
    assert {"Typing :: Typed", "Framework :: AsyncIO", "Framework :: Trio"} <= classifiers
    assert (ROOT / "src" / "greenbridge" / "py.typed").exists()
    # The Python versions are those CI runs, and agree with requires-python.
    ci = (ROOT / ".ci" / "run").read_text()
    match = re.search(r"^PYTHONS=\(([^)]*)\)", ci, re.MULTILINE)
    assert match is not None
    tested = match.group(1).split()
    listed = sorted(
        (c.rpartition(" :: ")[2] for c in classifiers if re.match(r".*Python :: 3\.\d+$", c)),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert listed == tested
    assert project["requires-python"] == f">={tested[0]}"


def test_changelog_and_security_policy() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert changelog.startswith("# Changelog")
    assert "Keep a Changelog" in changelog
    assert "\n## Unreleased\n" in changelog
    assert (ROOT / "SECURITY.md").read_text().startswith("# Security policy")
    # The docs show the repository's file itself (pymdownx.snippets), not a copy.
    assert (ROOT / "docs" / "changelog.md").read_text().strip() == '--8<-- "CHANGELOG.md"'
    nav = (ROOT / "mkdocs.yml").read_text()
    assert "Environment variables: environment.md" in nav
    assert "Changelog: changelog.md" in nav
    assert "pymdownx.snippets" in nav


def _variables(text: str) -> set[str]:
    return set(re.findall(r"\b(?:GREENBRIDGE|GB_EXAMPLE)_[A-Z0-9_]+\b", text))


def test_every_environment_variable_is_on_one_page() -> None:
    documented = _variables(ENV_PAGE.read_text())
    read: dict[str, set[str]] = {}
    for folder in ("src", "tests", "stress", "benchmarks", "examples", "conformance"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in _variables(path.read_text()):
                read.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert "GREENBRIDGE_DETECT_BLOCKING" in read
    missing = {name: sorted(paths) for name, paths in read.items() if name not in documented}
    assert not missing, f"environment variables missing from docs/environment.md: {missing}"


def test_the_package_reads_the_environment_only_where_the_page_says() -> None:
    # Any new os.environ / getenv in the package must come with its row on the page.
    readers = set()
    for path in (ROOT / "src" / "greenbridge").rglob("*.py"):
        if re.search(r"os\.environ\b|getenv\(", path.read_text()):
            readers.add(path.relative_to(ROOT / "src").as_posix())
    assert readers == {"greenbridge/__init__.py", "greenbridge/_detector.py"}, readers
