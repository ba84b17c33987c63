"""The command line: every class of bad input gets one line on stderr and exit status 2, before
any training; the flags generated from the config."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import idx_bytes, project_lines, run_cli, write_idx_folder
from keras_cvae.data import NPZ_KEYS


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--dataset", "cifar10"], "unknown dataset 'cifar10'; choose one of: fashion_mnist, mnist"),
        (["--epochs", "-3"], "--epochs must be at least 1"),
        (["--latent-dim", "0"], "--latent-dim must be at least 1"),
        (["--beta", "-1"], "--beta must be >= 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--hidden-units", "4x0"], "expected integers like 400"),
        (["--data-dir", "/nonexistent/mnist"], "/nonexistent/mnist: no such file or directory"),
        (["--image-size", "32y32"], "expected HxW like 32x32"),
        (["--test-fraction", "1.5"], "--test-fraction must be in (0, 1)"),
        (["--dataset", "fashion_mnist", "--conditions", "colour"], "has one categorical condition, labels"),
        # The library names its arguments (`conditional=False`, `task`); the command line shows flags.
        (["--task", "semi_supervised", "--labeled", "10", "--no-conditional"],
         "--no-conditional does not apply to --task semi_supervised"),
        (["--quadrants", "2"], "--quadrants does not apply to --task classes or semi_supervised; drop it"),
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
    """A truncated, non-JSON or unknown-key config.json is one line naming the file, not a traceback."""
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
    from keras_cvae.models.completion import CompletionCVAE

    model = CompletionCVAE(latent_dim=2, hidden_units=(8,))
    run_dir = root / "run"
    run_dir.mkdir()
    config = RunConfig()
    config.data.task, config.data.dataset = "completion", "fashion_mnist"
    config.save(run_dir / "config.json")
    model.save(run_dir / "model.keras")
    return run_dir, export_saved_model(model, root / "export", dataset="fashion_mnist")


def test_completion_models_work_or_are_refused_in_one_line(tmp_path, fashion_dir):
    """generate and evaluate.py take an image-completion export (tests/test_tasks_completion.py
    runs every command on a trained one), and a flag that needs classes is one line."""
    _, version = completion_run_and_export(tmp_path)
    refused = run_cli("-m", "keras_cvae", "generate", "--model", str(version), "--out", str(tmp_path / "g.png"))
    lines = project_lines(refused.stderr)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(lines) == 1 and "pass --from-test N" in lines[0], lines
    done = run_cli("evaluate.py", "--model", str(version), "--limit", "20", "--iw-samples", "2",
                   "--output", str(tmp_path / "evaluation"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["task"] == "completion"



def assert_one_line_exit_2(result, expected: str) -> None:
    lines = project_lines(result.stderr)
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and expected in lines[0], lines
    assert "Traceback" not in result.stderr


@pytest.fixture
def idx_dir(tmp_path, tiny_arrays):
    return write_idx_folder(tmp_path / "data", *tiny_arrays)


@pytest.mark.parametrize(
    "damage,expected",
    [
        (lambda d: (d / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((60, 28, 28), np.uint8))[:-5]),
         "IDX file is truncated"),
        (lambda d: (d / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros((60, 28, 28), np.uint8))),
         "magic number 0x00000803, expected 0x00000801"),
        (lambda d: (d / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(19, np.uint8))),
         "20 test images but 19 test labels"),
    ],
    ids=["truncated", "wrong-magic", "count-mismatch"],
)
def test_bad_idx_files(tmp_path, tiny_arrays, damage, expected):
    folder = write_idx_folder(tmp_path / "data", *tiny_arrays, gz=False)
    damage(folder)
    result = run_cli("train.py", "--data-dir", str(folder), "--run-dir", str(tmp_path / "run"))
    assert_one_line_exit_2(result, expected)


def test_npz_missing_keys(tmp_path, tiny_arrays):
    np.savez(tmp_path / "d.npz", **dict(zip(NPZ_KEYS[:3], tiny_arrays[:3])))
    result = run_cli("train.py", "--data-dir", str(tmp_path / "d.npz"), "--run-dir", str(tmp_path / "run"))
    assert_one_line_exit_2(result, "missing key(s) y_test")


def test_unwritable_output_dir(tmp_path, idx_dir):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    result = run_cli("train.py", "--data-dir", str(idx_dir), "--run-dir", str(blocker / "run"))
    assert_one_line_exit_2(result, f"run dir {blocker / 'run'} is not writable")


def test_unknown_dataset_on_evaluate(tmp_path):
    run_dir, _ = completion_run_and_export(tmp_path)
    result = run_cli("evaluate.py", "--model", str(run_dir), "--dataset", "svhn")
    assert_one_line_exit_2(result, "unknown dataset 'svhn'; choose one of: fashion_mnist, mnist, or pass --data-dir")


def test_model_path_that_is_not_a_model(tmp_path):
    result = run_cli("-m", "keras_cvae", "generate", "--model", str(tmp_path), "--out", str(tmp_path / "g.png"))
    assert_one_line_exit_2(result, "is neither a SavedModel version dir (saved_model.pb), a run dir (model.keras)")


@pytest.mark.slow
def test_images_of_the_wrong_size_for_a_loaded_model(tmp_path, idx_dir):
    from keras_cvae.export import export_saved_model
    from keras_cvae.models.cvae import CVAE

    export_saved_model(CVAE(image_shape=(16, 16, 1), latent_dim=2, hidden_units=(8,)), tmp_path / "export")
    result = run_cli(
        "evaluate.py", "--model", str(tmp_path / "export" / "1"), "--dataset", "mnist", "--data-dir", str(idx_dir),
        "--output", str(tmp_path / "out"), "--iw-samples", "1",
    )
    assert_one_line_exit_2(result, "the model takes (16, 16, 1) images but")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("train.py", "--data-dir", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "r"), "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr
