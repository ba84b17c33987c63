"""One training run: data pipelines, the task's model (new or resumed), callbacks, fit, and a
complete run dir and export.

`train(config, dataset, run_dir)` is what `train.py` calls, and what a Python user calls: both
get the same run dir (config.json, history.csv, samples/, elbo_curve.png, checkpoints/,
model.keras) and a SavedModel under the config's export root. This module is where TensorFlow
gets imported.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from keras_cvae.atomic import atomic_path, atomic_write_text
from keras_cvae.callbacks import (
    CyclicalKL,
    EarlyStopping,
    EpochCheckpoint,
    HistoryWriter,
    KLWarmup,
    PipelineEpoch,
    StopOnNonFiniteLoss,
)
from keras_cvae.config import ConfigError, RunConfig
from keras_cvae.data import LoadedDataset, binarize, dataset_name, make_pipeline, split_training_set
from keras_cvae.distribute import is_chief, make_strategy
from keras_cvae.export import export_saved_model
from keras_cvae.hardware import cpu_has_bfloat16, warn_slow
from keras_cvae.models.base import VariationalModel, global_dtype_policy
from keras_cvae.models.optimizers import FusedAdam
from keras_cvae.run_dir import RunDir, default_export_root
from keras_cvae.tasks import get_task


@dataclass
class TrainResult:
    """What `train` made: the trained model, one history row per epoch, the run dir, the
    SavedModel version dir (None on a worker that is not the chief) and the config it ran with."""

    model: VariationalModel
    history: list[dict[str, float]]
    run_dir: RunDir
    export_dir: Path | None
    config: RunConfig


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolve_jit_compile(setting: bool | None, arch: str, replicas: int = 1, mixed_precision: bool = False) -> bool:
    """XLA for the train step: the given setting, else on for a GPU and, on a CPU, for the MLP
    trained in float32 on one replica.

    On a CPU, XLA speeds up the float32 MLP but its convolutions are slower than oneDNN's and it
    has no bfloat16 matrix kernels of oneDNN's kind (benchmarks/results/train_speed_ablation.md).
    XLA cannot compile the all-reduce of several CPU replicas at all.
    """
    gpu = has_gpu()
    if setting and replicas > 1 and not gpu:
        raise ConfigError(f"`jit_compile=True`: XLA cannot compile the all-reduce of {replicas} CPU replicas; drop it")
    if setting and not gpu and (arch != "mlp" or mixed_precision):
        slower = f"`arch={arch}`'s convolutions" if arch != "mlp" else "bfloat16 matrix products"
        warn_slow(f"`jit_compile=True` on a CPU: XLA computes {slower} slower than oneDNN does without it; "
                  "leave `jit_compile` unset to let the run choose")
    if setting is not None:
        return setting
    return gpu or (arch == "mlp" and replicas == 1 and not mixed_precision)


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """Build and train under mixed precision: bfloat16 on a CPU, float16 on a GPU.

    The networks' weights stay float32; the model casts their outputs to float32, so the
    distributions, KL and losses are float32. The previous global policy is restored after.
    """
    if not mixed:
        yield
        return
    if not has_gpu() and not cpu_has_bfloat16():
        warn_slow("`mixed_precision=True` on a CPU without bfloat16 instructions (AVX512_BF16 or AMX): every "
                  "bfloat16 operation is emulated, several times slower than float32; drop `mixed_precision`")
    with global_dtype_policy("mixed_float16" if has_gpu() else "mixed_bfloat16"):
        yield


def build_model(config: RunConfig, dataset: LoadedDataset) -> VariationalModel:
    """A new model for `config`'s task, shaped for `dataset`, compiled with FusedAdam and the
    run's speed settings. Build it in the strategy's scope: the number of replicas decides
    whether the step is XLA-compiled."""
    model = get_task(config.data.task).build_model(config, dataset)
    compile_for_run(model, config, FusedAdam(config.train.learning_rate,
                                             normalize_gradients=config.train.normalize_gradients))
    return model


def compile_for_run(model: VariationalModel, config: RunConfig, optimizer: keras.optimizers.Optimizer) -> None:
    """Compile `model` with `optimizer` and the run's speed settings: XLA where
    `resolve_jit_compile` chooses it for the current strategy's replicas, and the steps per
    compiled call."""
    tc = config.train
    model.compile(
        optimizer=optimizer,
        jit_compile=resolve_jit_compile(
            tc.jit_compile, config.model.arch, tf.distribute.get_strategy().num_replicas_in_sync, tc.mixed_precision
        ),
        steps_per_execution=tc.steps_per_execution,
    )


def load_checkpoint(path: str | Path) -> VariationalModel:
    """A compiled model with its optimizer state, from a `.keras` file (safe mode: no code runs)."""
    return keras.saving.load_model(path, safe_mode=True)


def train(config: RunConfig, dataset: LoadedDataset, run_dir: str | Path | RunDir, resume: bool = False,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Train (or, with `resume`, continue) into `run_dir` until `config.train.epochs` epochs are
    done, then save model.keras and export a SavedModel to the config's export root (default
    saved_models/<name>). The chief writes config.json first, so the run dir is complete from
    the first epoch on. `callbacks` run after the run's own. `config` is not changed: the
    config the run used (its dataset named) is `TrainResult.config` and the run dir's config.json.

    Example:
        >>> config = RunConfig(data=DataConfig(dataset="fashion_mnist", limit=2000),
        ...                    train=TrainConfig(epochs=1, export="saved_models/from-python"))
        >>> result = train(config, load_dataset("fashion_mnist"), "runs/from-python")
        >>> result.export_dir
        PosixPath('saved_models/from-python/1')
    """
    config = copy.deepcopy(config)
    config.validate()
    config.data.dataset = dataset_name(config.data.dataset, config.data.data_dir)
    get_task(config.data.task).check(config, dataset)
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = make_strategy(config.train.strategy)
    if is_chief():
        run_dir.save_config(config)
        if dataset.test_files is not None:
            atomic_write_text(run_dir.test_files_path, "\n".join(dataset.test_files) + "\n")
    with precision_policy(config.train.mixed_precision):
        return _train(config, dataset, run_dir, resume, strategy, list(callbacks))


def _train(
    config: RunConfig, dataset: LoadedDataset, run_dir: RunDir, resume: bool, strategy: tf.distribute.Strategy,
    extra_callbacks: list[keras.callbacks.Callback],
) -> TrainResult:
    if strategy.num_replicas_in_sync > 1 and config.train.steps_per_execution > 1:
        # Keras 3.15 fails to run steps_per_execution > 1 under a multi-replica strategy
        # ("You must feed a value for placeholder tensor …while/cond/Placeholder").
        print(f"{strategy.num_replicas_in_sync} replicas: one train step per call (steps_per_execution 1)", flush=True)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, steps_per_execution=1))
    tc = config.train
    keras.utils.set_random_seed(tc.seed)
    (x_train, y_train), (x_val, y_val) = split_training_set(dataset.x_train, dataset.y_train, config.data)
    if config.data.dynamic_binarization:
        x_val = binarize(x_val)  # once, like the test set: validation numbers stay comparable
    pipeline_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="pipeline_epoch")
    train_data = get_task(config.data.task).train_pipeline(x_train, y_train, dataset.conditions, config,
                                                           pipeline_epoch)
    val_data = make_pipeline(x_val, get_task(config.data.task).validation_rows(y_val, dataset.conditions, config),
                             tc.batch_size, shuffle=False)

    chief = is_chief()
    # Multi-worker runs resume through BackupAndRestore (each worker from its own backup), so a
    # restarted worker needs no --resume; other runs resume from the newest checkpoint.
    backup = run_dir.backup_dir() if tc.strategy == "multi_worker" else None
    checkpoints = run_dir.checkpoints() if resume and backup is None else []
    with strategy.scope():
        if checkpoints:
            initial_epoch, path = checkpoints[-1]
            model = load_checkpoint(path)
            # What the checkpoint's compile config holds is replaced by this run's speed settings.
            compile_for_run(model, config, model.optimizer)
            history = [row for row in run_dir.read_history() if row["epoch"] <= initial_epoch]
            print(f"Resuming from {path} (epoch {initial_epoch} of {tc.epochs})", flush=True)
        else:
            initial_epoch = 0
            history = run_dir.read_history() if run_dir.has_backup() else []
            model = build_model(config, dataset)
            model.optimizer.build(model.trainable_variables)  # so a backup can restore its state

    callbacks: list[keras.callbacks.Callback] = [PipelineEpoch(pipeline_epoch), StopOnNonFiniteLoss()]
    if backup is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(str(backup)))
    if tc.resolved_kl_schedule == "linear":
        callbacks.append(KLWarmup(tc.kl_warmup))
    elif tc.resolved_kl_schedule == "cyclical":
        callbacks.append(CyclicalKL(tc.epochs, tc.kl_cycles))
    stopper = EarlyStopping(run_dir, tc.early_stopping, history, monitor=tc.monitor,
                            start_from_epoch=tc.warmup_epochs) if tc.early_stopping else None
    if stopper is not None:  # before EpochCheckpoint, which keeps the best epoch's checkpoint
        callbacks.append(stopper)
    history_writer = HistoryWriter(run_dir, history)
    if chief:  # the run dir's files come from the chief alone
        callbacks.append(history_writer)
        if tc.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run_dir.tensorboard_dir), write_graph=False))
        callbacks.append(get_task(config.data.task).sample_callback(model, config, dataset, run_dir, x_val))
        # Last: the epoch's other files are already written.
        callbacks.append(EpochCheckpoint(run_dir, keep=tc.keep_checkpoints,
                                         also_keep=stopper.best_epoch_number if stopper else lambda: None))
    callbacks += extra_callbacks
    if initial_epoch < tc.epochs and not (stopper is not None and stopper.exhausted):
        model.fit(
            train_data,
            validation_data=val_data,
            epochs=tc.epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles; Keras cannot shuffle a tf.data.Dataset
            verbose=1 if sys.stdout.isatty() else 2,
        )
    elif stopper is not None:  # nothing left to train: end, as fit would have, with the best weights
        stopper.restore_best(model)
    if not chief:
        return TrainResult(model, history_writer.rows, run_dir, None, config)
    with atomic_path(run_dir.model_path) as tmp:
        model.save(tmp)
    if backup is not None and not run_dir.has_backup():  # finished: BackupAndRestore emptied it
        shutil.rmtree(run_dir.backup_root, ignore_errors=True)
    version_dir = export_saved_model(model, default_export_root(config), dataset=config.data.dataset,
                                     data=dataclasses.asdict(config.data))
    return TrainResult(model, history_writer.rows, run_dir, version_dir, config)
