"""training.py: the speed settings a run gets, and end-to-end runs on real Fashion-MNIST (the slow
ones start TensorFlow and train): every file written, exact resume, kill -9 and NaN."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import cli_command, cli_env, run_cli, write_idx_folder
from keras_cvae.config import ConfigError
from keras_cvae.errors import NonFiniteLossError
from keras_cvae.training import has_gpu, precision_policy, resolve_jit_compile

HISTORY_HEADER = [
    "epoch", "loss", "reconstruction_loss", "kl_loss", "elbo",
    "val_loss", "val_reconstruction_loss", "val_kl_loss", "val_elbo",
]


def history(run_dir):
    with (run_dir / "history.csv").open() as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [dict(zip(header, map(float, row))) for row in reader]


@pytest.mark.slow
def test_three_epochs_improve_and_write_every_file(tmp_path, fashion_dir):
    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py", "--dataset", "fashion_mnist", "--epochs", "3", "--limit", "5000",
        "--run-dir", str(run_dir), "--export", str(tmp_path / "export"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    header, rows = history(run_dir)
    assert header == HISTORY_HEADER
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["val_elbo"] > rows[0]["val_elbo"]
    for row in rows:
        assert row["elbo"] == pytest.approx(-(row["reconstruction_loss"] + row["kl_loss"]), rel=1e-5)
    for name in ("config.json", "elbo_curve.png", "model.keras", *(f"samples/epoch_00{i}.png" for i in (1, 2, 3))):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["epoch_002.keras", "epoch_003.keras"]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["data"]["dataset"] == "fashion_mnist" and config["train"]["epochs"] == 3
    assert "final validation ELBO" in result.stdout.splitlines()[-1]
    assert (tmp_path / "export" / "1" / "saved_model.pb").is_file()
    assert f"SavedModel {tmp_path / 'export' / '1'}" in result.stdout

    again = run_cli("-m", "keras_cvae", "export", "--run-dir", str(run_dir))  # to the run's --export
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "export" / "2" / "saved_model.pb").is_file()


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path, fashion_dir):
    """The data order and the noise depend only on the seed and the epoch, so 2 epochs and
    --resume to 4 give the history of 4 epochs straight."""
    run_dir, straight_dir = tmp_path / "run", tmp_path / "straight"
    common = ["train.py", "--dataset", "fashion_mnist", "--limit", "2000", "--hidden-units", "64"]
    first = run_cli(*common, "--run-dir", str(run_dir), "--epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    _, before = history(run_dir)
    second = run_cli(*common, "--run-dir", str(run_dir), "--epochs", "4", "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming from" in second.stdout
    _, after = history(run_dir)
    assert [r["epoch"] for r in after] == [1, 2, 3, 4]
    assert after[:2] == before  # the first two rows are kept as they were
    assert (run_dir / "samples" / "epoch_004.png").is_file()
    # The uninterrupted run, in this process (one TensorFlow start fewer), from the run's own config.
    from keras_cvae.data import load_dataset
    from keras_cvae.run_dir import RunDir
    from keras_cvae.training import train

    config = RunDir(run_dir).load_config()
    config.train.epochs, config.train.export = 4, str(tmp_path / "straight_export")
    train(config, load_dataset("fashion_mnist"), straight_dir)
    _, uninterrupted = history(straight_dir)
    for resumed_row, straight_row in zip(after, uninterrupted, strict=True):
        assert resumed_row == pytest.approx(straight_row, rel=1e-5), resumed_row["epoch"]


@pytest.mark.slow
def test_mnist_from_a_folder_of_idx_files(tmp_path):
    """--dataset mnist --data-dir D reads the four standard .gz files (here written by the test)."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (600, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 600).astype(np.uint8)
    data_dir = write_idx_folder(tmp_path / "mnist", images[:500], labels[:500], images[500:], labels[500:])
    run_dir = tmp_path / "run"
    result = run_cli(
        "train.py", "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1",
        "--run-dir", str(run_dir), "--arch", "conv", "--tensorboard",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"from {data_dir}" in result.stdout
    assert (run_dir / "samples" / "epoch_001.png").is_file() and (run_dir / "model.keras").is_file()
    for writer in ("train", "validation", "samples"):  # scalars and the sample grid for TensorBoard
        assert list((run_dir / "tensorboard" / writer).glob("events.out.tfevents.*")), writer


def test_xla_by_default_where_it_was_measured_faster():
    assert resolve_jit_compile(None, "mlp") is True
    assert resolve_jit_compile(None, "conv") is has_gpu()  # oneDNN's CPU convolutions beat XLA's
    assert resolve_jit_compile(False, "mlp") is False and resolve_jit_compile(True, "conv") is True
    # bfloat16 on a CPU: oneDNN's AMX matmuls beat XLA's float32-bound ones.
    assert resolve_jit_compile(None, "mlp", mixed_precision=True) is has_gpu()
    assert resolve_jit_compile(True, "mlp", mixed_precision=True) is True


def test_mixed_precision_is_bfloat16_on_a_cpu_and_restored_after():
    before = keras.mixed_precision.global_policy().name
    with precision_policy(True):
        assert keras.mixed_precision.global_policy().name == ("mixed_float16" if has_gpu() else "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == before
    with precision_policy(False):
        assert keras.mixed_precision.global_policy().name == before


def test_no_xla_for_several_cpu_replicas():
    if has_gpu():
        pytest.skip("GPUs have XLA collectives")
    assert resolve_jit_compile(None, "mlp", replicas=2) is False
    with pytest.raises(ConfigError, match="XLA cannot compile the all-reduce of 2 CPU replicas"):
        resolve_jit_compile(True, "mlp", replicas=2)


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

    from keras_cvae.tasks import base as task_base

    real_pipeline = task_base.make_pipeline

    def poisoned(images, labels, batch_size, shuffle, **options):  # the training pipeline; validation stays clean
        dataset = real_pipeline(images, labels, batch_size, shuffle, **options)
        return dataset.enumerate().map(
            lambda i, b: (tf.where(i == 2, np.nan, tf.cast(b[0], tf.float32) / 255.0), b[1]))

    monkeypatch.setattr(task_base, "make_pipeline", poisoned)
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
