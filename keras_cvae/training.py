"""One training run: data pipelines, model (new or resumed), callbacks, fit, final save.

The command line validates everything it can first, then calls `train`; this module is where
TensorFlow gets imported.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import keras

from keras_cvae.callbacks import (
    EpochCheckpoint,
    HistoryWriter,
    KLWarmup,
    SampleGrid,
    StopOnNonFiniteLoss,
    list_checkpoints,
    read_history,
)
from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset, limit_and_split, make_pipeline
from keras_cvae.files import atomic_path
from keras_cvae.model import CVAE


@dataclass
class TrainResult:
    model: CVAE
    history: list[dict[str, float]]
    run_dir: Path


def build_model(config: RunConfig, dataset: LoadedDataset) -> CVAE:
    """A new, compiled CVAE shaped for `dataset` as `config` describes."""
    m = config.model
    model = CVAE(
        image_shape=dataset.x_train.shape[1:],
        num_classes=len(dataset.class_names),
        latent_dim=m.latent_dim,
        arch=m.arch,
        hidden_units=m.resolved_hidden_units(),
        likelihood=m.likelihood,
        beta=m.beta,
        conditional=m.conditional,
        class_names=dataset.class_names,
        seed=config.train.seed,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(config.train.learning_rate),
        jit_compile=config.train.jit_compile,
    )
    return model


def load_checkpoint(path: str | Path) -> CVAE:
    """A compiled CVAE with its optimizer state, from a `.keras` file (safe mode: no code runs)."""
    return keras.saving.load_model(path, safe_mode=True)


def train(config: RunConfig, dataset: LoadedDataset, run_dir: str | Path, resume: bool = False) -> TrainResult:
    """Train (or continue training) into `run_dir` until `config.train.epochs` epochs are done."""
    run_dir = Path(run_dir)
    tc = config.train
    keras.utils.set_random_seed(tc.seed)
    (x_train, y_train), (x_val, y_val) = limit_and_split(
        dataset.x_train, dataset.y_train, config.data.limit, config.data.validation_fraction
    )
    train_data = make_pipeline(x_train, y_train, tc.batch_size, shuffle=True, seed=tc.seed)
    val_data = make_pipeline(x_val, y_val, tc.batch_size, shuffle=False)

    checkpoints = list_checkpoints(run_dir / "checkpoints") if resume else []
    if checkpoints:
        initial_epoch, path = checkpoints[-1]
        model = load_checkpoint(path)
        history = [row for row in read_history(run_dir / "history.csv") if row["epoch"] <= initial_epoch]
        print(f"Resuming from {path} (epoch {initial_epoch} of {tc.epochs})", flush=True)
    else:
        initial_epoch, history = 0, []
        model = build_model(config, dataset)

    callbacks: list[keras.callbacks.Callback] = [StopOnNonFiniteLoss()]
    if tc.kl_warmup:
        callbacks.append(KLWarmup(tc.kl_warmup))
    callbacks.append(HistoryWriter(run_dir, history))
    tensorboard_dir = run_dir / "tensorboard" if tc.tensorboard else None
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), write_graph=False))
    callbacks.append(
        SampleGrid(run_dir, dataset.class_names, model.latent_dim, seed=tc.seed, tensorboard_dir=tensorboard_dir)
    )
    callbacks.append(EpochCheckpoint(run_dir))  # last: the epoch's other files are already written

    if initial_epoch < tc.epochs:
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=tc.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles; Keras cannot shuffle a tf.data.Dataset
            verbose=1 if sys.stdout.isatty() else 2,
        )
    with atomic_path(run_dir / "model.keras") as tmp:
        model.save(tmp)
    history_writer = next(cb for cb in callbacks if isinstance(cb, HistoryWriter))
    return TrainResult(model, history_writer.rows, run_dir)
