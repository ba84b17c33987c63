"""--early-stopping: Keras's early stopping on a validation metric, driven by hand (the stop, the
best epoch's weights, a resume that stops where an unbroken run would, a warm-up that neither
counts nor can be best), then in a real run."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cvae.callbacks import EarlyStopping, EpochCheckpoint
from keras_cvae.config import RunConfig
from keras_cvae.models.cvae import CVAE
from keras_cvae.run_dir import RunDir


@pytest.fixture
def model():
    model = CVAE(latent_dim=2, hidden_units=(8,), seed=0)
    model.compile(optimizer="adam")
    return model


def mark_weights(model, value: float) -> None:
    """Sets every weight to `value`, so that an epoch's weights can be told apart."""
    model.set_weights([np.full_like(w, value) for w in model.get_weights()])


def run_epochs(stopper, model, values, first_epoch=0):
    """Drives `stopper` and the epoch checkpoints as training does, through epochs with these
    values of its monitored metric, each epoch's weights marked with its number; returns the
    epochs run."""
    checkpoint = EpochCheckpoint(stopper.run_dir, keep=1, also_keep=stopper.best_epoch_number)
    for callback in (stopper, checkpoint):
        callback.set_model(model)
    model.stop_training = False
    stopper.on_train_begin()
    run = []
    for epoch, value in enumerate(values, start=first_epoch):
        mark_weights(model, epoch + 1)
        stopper.on_epoch_end(epoch, {stopper.monitor: value})
        checkpoint.on_epoch_end(epoch)
        run.append(epoch + 1)
        if model.stop_training:
            break
    stopper.on_train_end()
    return run


def has_weights(model, value: float) -> bool:
    return all(np.all(w == value) for w in model.get_weights())


def test_early_stopping_stops_after_patience_and_ends_with_the_best_epochs_weights(tmp_path, model):
    run_dir = RunDir(tmp_path)
    losses = [3.0, 2.0, 2.5, 2.6, 1.0]
    assert run_epochs(EarlyStopping(run_dir, patience=2, monitor="val_loss"), model, losses) == [1, 2, 3, 4]
    assert has_weights(model, 2.0)  # epoch 2's, not the last one's
    # keep=1 keeps the newest checkpoint, and the best epoch's too.
    assert [epoch for epoch, _ in run_dir.checkpoints()] == [2, 4]


def test_a_resumed_early_stopping_stops_where_an_unbroken_run_would(tmp_path, model):
    run_dir = RunDir(tmp_path)
    losses = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0]
    run_epochs(EarlyStopping(run_dir, patience=3, monitor="val_loss"), model, losses[:3])  # interrupted after epoch 3
    history = [{"epoch": e + 1, "val_loss": loss} for e, loss in enumerate(losses[:3])]
    resumed = EarlyStopping(run_dir, patience=3, history=history, monitor="val_loss")
    assert not resumed.exhausted
    assert run_epochs(resumed, model, losses[3:], first_epoch=3) == [4, 5]
    assert has_weights(model, 2.0)
    history += [{"epoch": 4, "val_loss": 2.6}, {"epoch": 5, "val_loss": 2.7}]
    finished = EarlyStopping(run_dir, patience=3, history=history, monitor="val_loss")
    assert finished.exhausted
    mark_weights(model, 0.0)
    finished.restore_best(model)
    assert has_weights(model, 2.0)


def test_the_default_watches_the_validation_elbo_and_keeps_its_highest_epoch(tmp_path, model):
    stopper = EarlyStopping(RunDir(tmp_path), patience=2)
    assert stopper.monitor == "val_elbo"
    assert run_epochs(stopper, model, [-3.0, -2.0, -2.5, -2.6, -1.0]) == [1, 2, 3, 4]
    assert has_weights(model, 2.0)


def test_monitoring_q_accuracy_keeps_its_most_accurate_epoch(tmp_path, model):
    # M2's model selection: the highest val_accuracy, neither the last epoch nor the lowest.
    stopper = EarlyStopping(RunDir(tmp_path), patience=2, monitor="val_accuracy")
    assert run_epochs(stopper, model, [0.60, 0.75, 0.70, 0.72, 0.90]) == [1, 2, 3, 4]
    assert has_weights(model, 2.0)


def test_warm_up_epochs_neither_count_towards_the_patience_nor_can_be_the_best(tmp_path, model):
    # Epoch 1 is in the warm-up (start_from_epoch=1): its ELBO, the highest, is not comparable.
    values = [-1.0, -3.0, -2.0, -2.5, -2.6, -2.7]
    stopper = EarlyStopping(RunDir(tmp_path), patience=2, start_from_epoch=1)
    assert run_epochs(stopper, model, values) == [1, 2, 3, 4, 5]
    assert has_weights(model, 3.0)
    history = [{"epoch": e + 1, "val_elbo": v} for e, v in enumerate(values[:4])]
    resumed = EarlyStopping(RunDir(tmp_path), patience=2, history=history, start_from_epoch=1)
    assert resumed.earlier[0]["epoch"] == 3 and resumed.earlier[1] == 1


def test_an_unknown_monitor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="monitor must be one of val_elbo, val_accuracy, val_loss"):
        EarlyStopping(RunDir(tmp_path), patience=2, monitor="loss")


class SpoilEpoch(keras.callbacks.Callback):
    """Adds large noise to every weight as the given epoch begins: that epoch's validation loss is worse."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            rng = np.random.default_rng(0)
            self.model.set_weights([w + 5.0 * rng.standard_normal(w.shape) for w in self.model.get_weights()])


@pytest.mark.slow
def test_early_stopping_ends_with_the_best_weights_and_a_resume_trains_no_further(tmp_path, fashion_dir):
    from keras_cvae.data import load_dataset
    from keras_cvae.training import train

    config = RunConfig()
    config.data.dataset, config.data.limit, config.model.hidden_units = "fashion_mnist", 600, (16,)
    config.train.epochs, config.train.early_stopping, config.train.export = 5, 1, str(tmp_path / "export")
    config.train.keep_checkpoints = 1
    dataset, run_dir = load_dataset("fashion_mnist"), RunDir(tmp_path / "run")
    result = train(config, dataset, run_dir, callbacks=[SpoilEpoch(1)])
    assert [row["epoch"] for row in result.history] == [1, 2]  # epoch 2 was worse: patience 1 ran out
    assert [epoch for epoch, _ in run_dir.checkpoints()] == [1, 2]  # the newest, and the best
    best = [w.copy() for w in result.model.get_weights()]
    last = keras.saving.load_model(run_dir.checkpoint_path(2))
    assert not all(np.allclose(a, b) for a, b in zip(best, last.get_weights()))
    epoch_1 = keras.saving.load_model(run_dir.checkpoint_path(1))  # kept: the best epoch's checkpoint
    for a, b in zip(best, epoch_1.get_weights()):  # the model that was saved and exported is epoch 1's
        np.testing.assert_array_equal(a, b)

    again = train(config, dataset, run_dir, resume=True)
    assert [row["epoch"] for row in again.history] == [1, 2]
    for a, b in zip(best, again.model.get_weights()):
        np.testing.assert_array_equal(a, b)
