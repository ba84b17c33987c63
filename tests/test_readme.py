"""Every Python snippet of README.md and docs/, run verbatim in a working dir that holds a run made
by `train.py --dataset fashion_mnist` with its defaults (runs/fashion_mnist-mlp and its export)."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow
DOCUMENTS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def python_blocks() -> list[tuple[str, int, str]]:
    """(document, index in it, code) of every ```python block."""
    return [(path.relative_to(REPO_ROOT).as_posix(), index, code) for path in DOCUMENTS
            for index, code in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))]


@pytest.fixture(scope="module")
def trained_cwd(fashion_dir) -> Path:
    """A working dir holding runs/fashion_mnist-mlp and saved_models/fashion_mnist-mlp/1, as
    `python train.py --dataset fashion_mnist` leaves them (FusedAdam, the default optimizer)."""
    cwd = Path(tempfile.mkdtemp(prefix="readme-"))
    done = run_cli("train.py", "--dataset", "fashion_mnist", "--epochs", "1", "--limit", "2000", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd


def test_the_documents_have_the_snippets_this_test_runs():
    where = {document for document, _, _ in python_blocks()}
    assert {"README.md", "docs/python.md", "docs/serving.md"} <= where
    assert any("load_model" in code for _, _, code in python_blocks())


@pytest.mark.parametrize(("document", "index", "code"), python_blocks(),
                         ids=[f"{document}#{index}" for document, index, _ in python_blocks()])
def test_python_snippet_runs_verbatim(trained_cwd, document, index, code):
    done = subprocess.run([sys.executable, "-c", code], cwd=trained_cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{document} snippet {index}:\n{done.stderr[-3000:]}"


def test_importing_a_model_class_registers_every_saved_class(trained_cwd):
    code = ("from keras_cvae import CVAE\nimport keras\n"
            "model = keras.saving.load_model('runs/fashion_mnist-mlp/model.keras', safe_mode=True)\n"
            "assert type(model.optimizer).__name__ == 'FusedAdam', type(model.optimizer)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=trained_cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_project_text_describes_the_software_not_its_history():
    """README, docs, code, tests and benchmarks speak of what the software does; history belongs in
    CHANGELOG.md. The patterns are assembled here so that this file does not match itself."""
    words = ["last " + "session", "this " + "session", "to" + "day", "before the " + "fix",
             "defect " + "[0-9]", "issue " + "#?[0-9]", r"\bI " + "(measured|ran|tried|did)" + r"\b"]
    pattern = re.compile("|".join(words), re.I)
    files = [REPO_ROOT / "README.md", *[p for folder in ("docs", "keras_cvae", "tests", "benchmarks")
                                        for p in (REPO_ROOT / folder).rglob("*")
                                        if p.is_file() and p.suffix in (".md", ".py", ".json", ".sh", ".toml")]]
    found = [f"{p.relative_to(REPO_ROOT)}:{n}: {line.strip()}" for p in files
             for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found[:20])
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 250


def test_relative_links_in_the_documents_resolve():
    documents = [*DOCUMENTS, REPO_ROOT / "CHANGELOG.md", *(REPO_ROOT / "benchmarks" / "results").rglob("*.md")]
    broken = []
    for path in documents:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if not re.match(r"[a-z]+://", target) and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO_ROOT)} → {target}")
    assert not broken, broken
