"""Security: nothing unsafe is loaded or executed."""

from __future__ import annotations

import re

import keras
import pytest

from conftest import REPO_ROOT


def test_no_pickle_eval_exec_or_unsafe_loading_in_the_package():
    pattern = re.compile(r"\b(pickle|eval|exec)\s*\(|import pickle|safe_mode\s*=\s*False|allow_pickle\s*=\s*True")
    offenders = [
        f"{path.name}:{n}" for path in (REPO_ROOT / "keras_cvae").rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
    ]
    assert offenders == []


def test_keras_files_with_code_are_refused(tmp_path):
    from keras_cvae.training import load_checkpoint

    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="(?i)safe_mode|lambda"):
        load_checkpoint(tmp_path / "lambda.keras")
