"""Reliability: every class of bad input gets one line and exit 2; kill -9 and NaN leave the last
good files; fuzzed IDX bytes and serving labels never crash; nothing unsafe is loaded."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO_ROOT, cli_command, cli_env, idx_bytes, project_lines, run_cli, write_idx_folder
from keras_cvae.data import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC, NPZ_KEYS, DataError, parse_idx
from keras_cvae.errors import NonFiniteLossError


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
    result = run_cli("evaluate.py", "--model", str(tmp_path), "--dataset", "svhn")
    assert_one_line_exit_2(result, "invalid choice: 'svhn'")


def test_model_path_that_is_not_a_model(tmp_path):
    result = run_cli("-m", "keras_cvae", "generate", "--model", str(tmp_path), "--out", str(tmp_path / "g.png"))
    assert_one_line_exit_2(result, "is not a SavedModel version dir")


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


# ------------------------------------------------------------------------------------------
# Crashes and numbers


@pytest.mark.slow
def test_kill_9_then_resume_gives_the_full_history(tmp_path, fashion_dir):
    run_dir = tmp_path / "run"
    command = ["train.py", "--dataset", "fashion_mnist", "--limit", "3000", "--epochs", "4", "--run-dir", str(run_dir)]
    process = subprocess.Popen(cli_command(*command), cwd=tmp_path, env=cli_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_checkpoint = run_dir / "checkpoints" / "epoch_001.keras"
    deadline = time.time() + 300
    while not first_checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first_checkpoint.exists()

    resumed = run_cli(*command, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history] == ["epoch", "1", "2", "3", "4"]
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]  # no temporary leftovers


@pytest.mark.slow
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, fashion_dir, monkeypatch):
    from keras_cvae import training
    from keras_cvae.config import RunConfig
    from keras_cvae.data import load_dataset

    dataset = load_dataset("fashion_mnist")
    config = RunConfig()
    config.data.limit, config.train.epochs, config.train.batch_size = 1000, 1, 100
    run_dir = tmp_path / "run"
    training.train(config, dataset, run_dir)
    good = (run_dir / "checkpoints" / "epoch_001.keras").read_bytes()
    model_file = (run_dir / "model.keras").read_bytes()

    real_pipeline = training.make_pipeline

    def poisoned(images, labels, batch_size, shuffle, **options):
        dataset = real_pipeline(images, labels, batch_size, shuffle, **options)
        if not shuffle:
            return dataset  # validation stays clean
        return dataset.enumerate().map(
            lambda i, b: (tf.where(i == 2, np.nan, tf.cast(b[0], tf.float32) / 255.0), b[1]))

    monkeypatch.setattr(training, "make_pipeline", poisoned)
    config.train.epochs = 2
    # One batch per compiled call names the batch; four per call name the call's batches.
    config.train.steps_per_execution = 4
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, batches 1-4;"):
        training.train(config, dataset, run_dir, resume=True)
    config.train.steps_per_execution = 1
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 2, batch 3;"):
        training.train(config, dataset, run_dir, resume=True)
    assert (run_dir / "checkpoints" / "epoch_001.keras").read_bytes() == good
    assert not (run_dir / "checkpoints" / "epoch_002.keras").exists()
    assert (run_dir / "model.keras").read_bytes() == model_file
    assert len((run_dir / "history.csv").read_text().splitlines()) == 2  # header + epoch 1


# ------------------------------------------------------------------------------------------
# Fuzzing


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), magic=st.sampled_from([IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC]))
def test_idx_parser_never_crashes_on_random_bytes(data, magic):
    try:
        array = parse_idx(data, magic, "fuzz")
    except DataError:
        return
    assert array.dtype == np.uint8 and array.ndim == magic & 0xFF


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0, max_value=60 * 28 * 28 + 15))
def test_idx_parser_on_every_truncation(cut):
    blob = idx_bytes(np.zeros((60, 28, 28), np.uint8))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(blob[:cut], IDX_IMAGES_MAGIC, "fuzz")


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    from keras_cvae.export import export_saved_model
    from keras_cvae.models.cvae import CVAE

    path = export_saved_model(CVAE(latent_dim=2, hidden_units=(8,)), tmp_path_factory.mktemp("export"))
    return tf.saved_model.load(str(path)).signatures["serving_default"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(st.integers(min_value=-(2**31), max_value=2**31 - 1), max_size=8))
def test_serving_labels_are_checked_in_the_graph(serving, labels):
    try:
        images = serving(labels=tf.constant(labels, tf.int32, shape=[len(labels)]))["images"].numpy()
    except tf.errors.InvalidArgumentError as err:
        assert any(not 0 <= v < 10 for v in labels)
        assert "labels must be integers in [0, 10)" in str(err)
        return
    assert all(0 <= v < 10 for v in labels)
    assert images.shape == (len(labels), 28, 28, 1)


# ------------------------------------------------------------------------------------------
# Security


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
