"""RunDir: the layout, config and history I/O, checkpoints, backups, the resume rule and default
names; locate(): run dirs, checkpoints and exports told apart without TensorFlow."""

from __future__ import annotations

import json

import pytest

from keras_cvae.config import RunConfig
from keras_cvae.distribute import is_chief
from keras_cvae.errors import UsageError
from keras_cvae.run_dir import (
    HISTORY_COLUMNS,
    RunDir,
    default_export_root,
    default_name,
    default_run_dir,
    locate,
    read_export_config,
)


def test_layout_numbers_epochs_from_one(tmp_path):
    run_dir = RunDir(tmp_path)
    assert run_dir.samples_path(1) == tmp_path / "samples" / "epoch_001.png"
    assert run_dir.checkpoint_path(12) == tmp_path / "checkpoints" / "epoch_012.keras"
    assert (run_dir.config_path, run_dir.history_path, run_dir.model_path) == (
        tmp_path / "config.json", tmp_path / "history.csv", tmp_path / "model.keras")


def test_history_round_trip_keeps_the_contract_columns(tmp_path):
    run_dir = RunDir(tmp_path)
    assert run_dir.read_history() == []
    rows = [{"epoch": 1, "loss": 3.5, "elbo": -3.5, "val_elbo": -3.75}, {"epoch": 2, "loss": 2.25, "elbo": -2.25}]
    run_dir.write_history(rows)
    assert run_dir.history_path.read_text().splitlines()[0] == ",".join(HISTORY_COLUMNS)
    assert run_dir.read_history() == rows


def test_checkpoints_are_listed_oldest_first_and_partial_files_ignored(tmp_path):
    run_dir = RunDir(tmp_path)
    assert run_dir.checkpoints() == []
    run_dir.checkpoint_dir.mkdir()
    for name in ("epoch_010.keras", "epoch_002.keras", ".epoch_011.abc.tmp.keras", "notes.txt"):
        (run_dir.checkpoint_dir / name).write_text("")
    assert [epoch for epoch, _ in run_dir.checkpoints()] == [2, 10]


def test_resume_rule_and_refusing_a_non_empty_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    run_dir = RunDir(tmp_path / "run")
    run_dir.refuse_to_overwrite()  # a missing dir is fine
    assert not run_dir.resumes(False, "auto") and run_dir.resumes(True, "auto")
    run_dir.backup_dir().mkdir(parents=True)
    (run_dir.backup_dir() / "training_metadata.json").write_text("{}")
    assert run_dir.resumes(False, "multi_worker") and not run_dir.resumes(False, "auto")
    with pytest.raises(UsageError, match="is not empty; pass `resume=True`"):
        run_dir.refuse_to_overwrite()


def test_default_names():
    config = RunConfig()
    config.data.dataset = "fashion_mnist"
    assert default_name(config) == "fashion_mnist-mlp"
    assert str(default_run_dir(config)) == "runs/fashion_mnist-mlp"
    config.data.task, config.data.quadrants, config.model.objective = "completion", 2, "gsnn"
    assert default_name(config) == "fashion_mnist-completion2-gsnn"
    assert str(default_export_root(config)) == "saved_models/fashion_mnist-completion2-gsnn"
    config.train.export = "elsewhere"
    assert str(default_export_root(config)) == "elsewhere"


def make_run(tmp_path, task: str = "classes"):
    run_dir = RunDir(tmp_path / "run")
    run_dir.path.mkdir()
    config = RunConfig()
    config.data.dataset, config.data.task = "fashion_mnist", task
    run_dir.save_config(config)
    run_dir.model_path.write_bytes(b"")
    return run_dir


def test_locate_a_run_dir_and_a_checkpoint(tmp_path):
    run_dir = make_run(tmp_path, "completion")
    found = locate(run_dir.path)
    assert (found.kind, found.task, found.dataset) == ("run", "completion", "fashion_mnist")
    assert found.path == run_dir.model_path and found.default_output == run_dir.evaluation_dir
    run_dir.checkpoint_dir.mkdir()
    checkpoint = run_dir.checkpoint_path(3)
    checkpoint.write_bytes(b"")
    found = locate(checkpoint)
    assert (found.kind, found.task, found.run_dir.path) == ("checkpoint", "completion", run_dir.path)


def test_locate_an_export_root_takes_the_newest_version_and_knows_old_exports_task(tmp_path):
    for version, model in ((1, {"num_classes": 10}), (2, {"quadrants": 1})):
        assets = tmp_path / str(version) / "assets"
        assets.mkdir(parents=True)
        (tmp_path / str(version) / "saved_model.pb").write_bytes(b"")
        (assets / "config.json").write_text(json.dumps({"model": model, "dataset": "mnist"}))  # no "task" key
    found = locate(tmp_path)
    assert (found.kind, found.path.name, found.task, found.dataset) == ("export", "2", "completion", "mnist")
    assert read_export_config(tmp_path / "1")["task"] == "classes"


def test_locate_refuses_what_is_no_model(tmp_path):
    with pytest.raises(UsageError, match="is neither a SavedModel version dir"):
        locate(tmp_path)
    orphan = tmp_path / "model.keras"
    orphan.write_bytes(b"")
    (tmp_path / "config.json").unlink(missing_ok=True)
    with pytest.raises(UsageError, match="has no config.json beside it"):
        locate(orphan)


def test_chief_is_worker_zero_and_backups_are_per_worker(monkeypatch, tmp_path):
    run_dir = RunDir(tmp_path)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief() and run_dir.backup_dir() == tmp_path / "backup" / "chief"
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert not is_chief() and run_dir.backup_dir() == tmp_path / "backup" / "worker-1"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {**cluster, "chief": ["c:3"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not is_chief()
    assert not run_dir.has_backup()
    (tmp_path / "backup" / "worker-1").mkdir(parents=True)
    assert not run_dir.has_backup()  # an emptied backup is no reason to resume
    (tmp_path / "backup" / "worker-1" / "training_metadata.json").write_text("{}")
    assert run_dir.has_backup()


