"""End-to-end training runs on real Fashion-MNIST (slow: each starts TensorFlow and trains)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from conftest import run_cli, write_idx_folder

pytestmark = pytest.mark.slow

HISTORY_HEADER = [
    "epoch", "loss", "reconstruction_loss", "kl_loss", "elbo",
    "val_loss", "val_reconstruction_loss", "val_kl_loss", "val_elbo",
]


def history(run_dir):
    with (run_dir / "history.csv").open() as handle:
        reader = csv.reader(handle)
        header = next(reader)
        return header, [dict(zip(header, map(float, row))) for row in reader]


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


def test_resume_reproduces_the_uninterrupted_run(tmp_path, fashion_dir):
    """Regression (defect 7): after --resume the data order and the noise restarted, so the
    history drifted from the uninterrupted run's. Now 2 epochs + --resume to 4 = 4 epochs straight."""
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
    straight = run_cli(*common, "--run-dir", str(straight_dir), "--epochs", "4")
    assert straight.returncode == 0, straight.stderr[-3000:]
    _, uninterrupted = history(straight_dir)
    for resumed_row, straight_row in zip(after, uninterrupted, strict=True):
        assert resumed_row == pytest.approx(straight_row, rel=1e-5), resumed_row["epoch"]


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
