"""Command-line input validation: one line on stderr and exit status 2, before any training."""

from __future__ import annotations

import pytest

from conftest import project_lines, run_cli


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--dataset", "cifar10"], "invalid choice: 'cifar10'"),
        (["--epochs", "-3"], "--epochs must be at least 1"),
        (["--latent-dim", "0"], "--latent-dim must be at least 1"),
        (["--beta", "-1"], "--beta must be >= 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--hidden-units", "4x0"], "expected integers like 400"),
        (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist: no such file or directory"),
    ],
)
def test_bad_train_input_is_one_line_and_exit_2(tmp_path, args, expected):
    result = run_cli("train.py", *args, "--run-dir", str(tmp_path / "run"))
    lines = project_lines(result.stderr)
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in result.stderr


def test_non_empty_run_dir_is_refused_without_resume(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    result = run_cli("train.py", "--run-dir", str(tmp_path), "--epochs", "1")
    assert result.returncode == 2
    assert project_lines(result.stderr) == [
        f"train.py: error: run dir {tmp_path} is not empty; pass --resume to continue it, or choose another --run-dir"
    ]
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_resume_refuses_to_change_the_model(tmp_path):
    from keras_cvae.config import RunConfig

    RunConfig().save(tmp_path / "config.json")
    result = run_cli("train.py", "--run-dir", str(tmp_path), "--resume", "--latent-dim", "5")
    assert result.returncode == 2
    assert "latent_dim=20; --resume cannot change it to 5" in result.stderr


def test_module_entry_point_requires_a_command():
    result = run_cli("-m", "keras_cvae")
    assert result.returncode == 2 and "expected a command" in result.stderr
