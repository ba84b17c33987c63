"""The package metadata: every runtime import declared, one version, every subpackage shipped
(`tests/check_wheel.sh` installs the built wheel and runs it)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib

import keras_cvae
from conftest import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


def third_party_imports() -> set[str]:
    """Top-level names of the non-standard-library modules that keras_cvae's code imports."""
    names = set()
    for path in (REPO_ROOT / "keras_cvae").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in ("keras_cvae", "__future__")}


def requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_runtime_import_is_a_declared_dependency():
    declared = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    providers = importlib.metadata.packages_distributions()
    imported = third_party_imports()
    assert {"tensorflow", "keras", "numpy", "PIL", "matplotlib"} <= imported
    for module in sorted(imported):
        distributions = {d.lower().replace("_", "-") for d in providers.get(module, [])}
        assert distributions & declared, f"{module} is imported but none of {distributions} is in [project.dependencies]"


def test_requirements_pin_every_declared_dependency():
    pinned = {requirement_name(line) for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]} <= pinned


def test_one_version_and_discovered_packages():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "keras_cvae.__version__"}
    packages = PYPROJECT["tool"]["setuptools"]["packages"]
    assert packages == {"find": {"include": ["keras_cvae*"]}}, "list no packages by hand: they are discovered"
    assert re.fullmatch(r"\d+\.\d+\.\d+", keras_cvae.__version__)
    assert PYPROJECT["project"]["scripts"] == {"keras-cvae": "keras_cvae.cli:dispatch"}
    assert (REPO_ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
