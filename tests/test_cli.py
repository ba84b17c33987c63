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


CORRUPT_CONFIGS = {
    "truncated": '{"data": {"dataset": "fashion_mnist"',
    "not-json": "epochs = 3\n",
    "unknown-key": '{"data": {"dataset": "fashion_mnist", "colour": "red"}}',
    "unknown-section": '{"optimiser": {}}',
    "wrong-type": '{"data": 5}',
    "not-an-object": "[1, 2]",
}


@pytest.mark.parametrize("text", CORRUPT_CONFIGS.values(), ids=CORRUPT_CONFIGS.keys())
@pytest.mark.parametrize("command", ["evaluate", "resume"])
def test_corrupt_run_config_is_one_line_naming_the_file(tmp_path, text, command):
    """Regression (defect 3): a truncated, non-JSON or unknown-key config.json gave a traceback."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.keras").write_bytes(b"")
    (run_dir / "config.json").write_text(text)
    if command == "evaluate":
        result = run_cli("evaluate.py", "--model", str(run_dir))
    else:
        result = run_cli("train.py", "--run-dir", str(run_dir), "--resume")
    lines = project_lines(result.stderr)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1 and str(run_dir / "config.json") in lines[0], lines


def completion_run_and_export(root):
    """A tiny image-completion run dir (config.json + model.keras) and its export."""
    from keras_cvae.config import RunConfig
    from keras_cvae.export import export_saved_model
    from keras_cvae.models.completion import StructuredCVAE

    model = StructuredCVAE(latent_dim=2, hidden_units=(8,))
    run_dir = root / "run"
    run_dir.mkdir()
    config = RunConfig()
    config.data.task, config.data.dataset = "quadrants", "fashion_mnist"
    config.save(run_dir / "config.json")
    model.save(run_dir / "model.keras")
    return run_dir, export_saved_model(model, root / "export", dataset="fashion_mnist")


def test_commands_refuse_a_completion_model_in_one_line(tmp_path):
    """Regression (defect 2): generate and evaluate.py ended in KeyError: 'num_classes'."""
    run_dir, version = completion_run_and_export(tmp_path)
    results = [
        run_cli("-m", "keras_cvae", "generate", "--model", str(version), "--out", str(tmp_path / "g.png")),
        run_cli("evaluate.py", "--model", str(version)),
        run_cli("evaluate.py", "--model", str(run_dir)),
    ]
    for result in results:
        lines = project_lines(result.stderr)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert len(lines) == 1 and "image-completion model" in lines[0], lines
