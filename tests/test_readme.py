"""The README's Python snippets, run verbatim against a run made by `train.py` with its defaults."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO_ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture(scope="module")
def trained_cwd(fashion_dir) -> Path:
    """A working dir holding runs/fashion_mnist-mlp and saved_models/fashion_mnist-mlp/1, as
    `python train.py --dataset fashion_mnist` leaves them (FusedAdam, the default optimizer)."""
    cwd = Path(tempfile.mkdtemp(prefix="readme-"))
    done = run_cli("train.py", "--dataset", "fashion_mnist", "--epochs", "1", "--limit", "2000", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd


def test_readme_has_the_snippets_this_test_runs():
    blocks = readme_python_blocks()
    assert len(blocks) >= 3 and any("load_model" in block for block in blocks)


@pytest.mark.parametrize("index", range(len(readme_python_blocks())))
def test_readme_python_snippet_runs_verbatim(trained_cwd, index):
    done = subprocess.run([sys.executable, "-c", readme_python_blocks()[index]], cwd=trained_cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_importing_a_model_class_registers_every_saved_class(trained_cwd):
    code = ("from keras_cvae import CVAE\nimport keras\n"
            "model = keras.saving.load_model('runs/fashion_mnist-mlp/model.keras', safe_mode=True)\n"
            "assert type(model.optimizer).__name__ == 'FusedAdam', type(model.optimizer)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=trained_cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
