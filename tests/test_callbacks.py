"""The generic training callbacks, each driven by hand on a tiny model: history and ELBO curve,
checkpoints (the newest two kept), KL warm-up, the pipeline's epoch, and the NaN stop
(early stopping has its own file)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_cvae.callbacks import (
    CyclicalKL,
    EpochCheckpoint,
    HistoryWriter,
    KLWarmup,
    PipelineEpoch,
    StopOnNonFiniteLoss,
    cyclical_kl_weight,
)
from keras_cvae.errors import NonFiniteLossError
from keras_cvae.models.cvae import CVAE
from keras_cvae.run_dir import RunDir


@pytest.fixture
def model():
    model = CVAE(latent_dim=2, hidden_units=(8,), seed=0)
    model.compile(optimizer="adam")
    return model


def attached(callback, model):
    callback.set_model(model)
    return callback


def test_history_rows_replace_rows_past_a_resumed_epoch_and_draw_the_curve(tmp_path, model):
    run_dir = RunDir(tmp_path)
    writer = attached(HistoryWriter(run_dir, [{"epoch": 1, "loss": 5.0}, {"epoch": 2, "loss": 4.0}]), model)
    writer.on_epoch_end(1, {"loss": 3.0, "elbo": -3.0, "val_elbo": -3.5, "unrelated": 1.0})  # epoch 2 again
    assert run_dir.read_history() == [{"epoch": 1, "loss": 5.0}, {"epoch": 2, "loss": 3.0, "elbo": -3.0, "val_elbo": -3.5}]
    assert run_dir.elbo_curve_path.is_file()


def test_checkpoints_keep_the_newest_two(tmp_path, model):
    run_dir = RunDir(tmp_path)
    checkpoint = attached(EpochCheckpoint(run_dir), model)
    for epoch in range(3):
        checkpoint.on_epoch_end(epoch)
    assert [epoch for epoch, _ in run_dir.checkpoints()] == [2, 3]
    assert isinstance(keras.saving.load_model(run_dir.checkpoint_path(3), safe_mode=True), CVAE)


def test_kl_warmup_rises_linearly_to_one(model):
    warmup = attached(KLWarmup(4), model)
    weights = []
    for epoch in range(6):
        warmup.on_epoch_begin(epoch)
        weights.append(float(model.kl_weight.numpy()))
    np.testing.assert_allclose(weights, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_the_cyclical_schedule_matches_fu_et_al():
    # 2 cycles over 8 steps: each period of 4 rises over its first half (0, 0.5), then holds 1.
    assert [cyclical_kl_weight(step, 8, 2) for step in range(8)] == [0.0, 0.5, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0]
    # 4 cycles over 2 epochs of 10 steps (Fu et al.'s default rising share, 0.5): period 5, rise 2.5 steps.
    np.testing.assert_allclose([cyclical_kl_weight(s, 20, 4) for s in (0, 1, 2, 3, 5, 6, 19)],
                               [0.0, 0.4, 0.8, 1.0, 0.0, 0.4, 1.0])


def test_the_cyclical_callback_follows_the_optimizer_step(model):
    callback = attached(CyclicalKL(epochs=2, cycles=2), model)
    callback.set_params({"steps": 4})
    model.optimizer.build(model.trainable_variables)
    weights = []
    for step in (0, 1, 2, 4, 5):
        model.optimizer.iterations.assign(step)
        callback.on_train_batch_begin(0)
        weights.append(float(model.kl_weight.numpy()))
    np.testing.assert_allclose(weights, [0.0, 0.5, 1.0, 0.0, 0.5])


def test_pipeline_epoch_is_set_before_each_epoch():
    epoch = tf.Variable(0, dtype=tf.int64)
    callback = PipelineEpoch(epoch)
    callback.on_epoch_begin(7)
    assert int(epoch.numpy()) == 7


def test_a_non_finite_loss_stops_at_once_naming_epoch_and_batches(model):
    stop = attached(StopOnNonFiniteLoss(), model)
    stop.on_epoch_begin(2)
    stop.on_train_batch_begin(0)
    stop.on_train_batch_end(0, {"loss": 1.5})
    stop.on_train_batch_begin(32)
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at epoch 3, batches 33-64;"):
        stop.on_train_batch_end(63, {"loss": float("nan")})
