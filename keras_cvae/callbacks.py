"""Generic training callbacks: the history file and ELBO curve, checkpoints, the KL schedules
(linear warm-up, cyclical), early stopping, the pipeline's epoch, and the stop on a non-finite loss. (Sample grids are each task's own.)

Each writes atomically, so killing training at any moment leaves the last good files in place.
Order matters for resuming: the history row of an epoch is written before its checkpoint, and a
resumed run trusts the newest checkpoint, dropping any history row past it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from keras_cvae.atomic import atomic_path
from keras_cvae.errors import NonFiniteLossError
from keras_cvae.plotting import elbo_curve_figure, save_figure
from keras_cvae.run_dir import HISTORY_COLUMNS, OPTIONAL_HISTORY_COLUMNS, RunDir


class HistoryWriter(keras.callbacks.Callback):
    """Keeps `history.csv` (one row per epoch, numbered from 1) and redraws `elbo_curve.png`."""

    def __init__(self, run_dir: RunDir, rows: Sequence[dict[str, float]] = ()) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.rows = list(rows)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items() if k in HISTORY_COLUMNS + OPTIONAL_HISTORY_COLUMNS}}
        self.rows = [r for r in self.rows if r["epoch"] < epoch + 1] + [row]
        self.run_dir.write_history(self.rows)
        save_figure(elbo_curve_figure(self.rows), self.run_dir.elbo_curve_path)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model with its optimizer state as `checkpoints/epoch_NNN.keras` each epoch,
    keeping the newest `keep` of them, and the epoch `also_keep()` names (early stopping's best)."""

    def __init__(self, run_dir: RunDir, keep: int = 2, also_keep: Callable[[], int | None] = lambda: None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.keep = keep
        self.also_keep = also_keep

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with atomic_path(self.run_dir.checkpoint_path(epoch + 1)) as tmp:
            self.model.save(tmp)
        for old_epoch, old in self.run_dir.checkpoints()[:-self.keep]:
            if old_epoch != self.also_keep():
                old.unlink()


class KLWarmup(keras.callbacks.Callback):
    """Raises the KL weight linearly from 1/E in epoch 1 to 1 in epoch E (E = `epochs`)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.kl_weight.assign(min(1.0, (epoch + 1) / self.epochs))


def cyclical_kl_weight(step: int, total_steps: int, cycles: int, rising: float = 0.5) -> float:
    """Fu et al. (2019)'s cyclical schedule: training cut into `cycles` equal periods; in each, the
    weight rises linearly from 0 over the first `rising` share, then stays 1."""
    period = total_steps / cycles
    phase = (step % period) / period
    return min(1.0, phase / rising)


class CyclicalKL(keras.callbacks.Callback):
    """Sets the KL weight from the optimizer's step count before each call of the train step
    (`cyclical_kl_weight` over `epochs` epochs); with steps_per_execution N it moves every N steps.
    The step count is saved with a checkpoint, so a resumed run follows the same schedule."""

    def __init__(self, epochs: int, cycles: int) -> None:
        super().__init__()
        self.epochs, self.cycles = epochs, cycles

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        total = self.epochs * self.params["steps"]
        step = int(self.model.optimizer.iterations.numpy())
        self.model.kl_weight.assign(cyclical_kl_weight(step, total, self.cycles))


# What early stopping may watch, and whether more is better.
MONITOR_MODES = {"val_elbo": "max", "val_accuracy": "max", "val_loss": "min"}


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras's early stopping on a validation metric (`monitor`: the β = 1 validation ELBO by
    default), ending with the best epoch's weights, made resumable: EpochCheckpoint keeps the
    best epoch's checkpoint (`best_epoch_number`), and a resumed run takes its best value and the
    epochs waited since from history.csv and its weights from that checkpoint, so it stops where
    an unbroken run would, with the same weights. Epochs before `start_from_epoch` (0-based: a
    KL warm-up's) neither count towards the patience nor can be the best."""

    def __init__(self, run_dir: RunDir, patience: int, history: Sequence[dict[str, float]] = (),
                 monitor: str = "val_elbo", start_from_epoch: int = 0) -> None:
        if monitor not in MONITOR_MODES:
            raise ValueError(f"monitor must be one of {', '.join(MONITOR_MODES)}, got {monitor!r}")
        super().__init__(monitor=monitor, mode=MONITOR_MODES[monitor], patience=patience, restore_best_weights=True,
                         verbose=1, start_from_epoch=start_from_epoch)
        self.run_dir = run_dir
        self.earlier = self._earlier_best(run_dir, history)  # read once: made just before fit

    def best_epoch_number(self) -> int | None:
        """The best epoch so far, numbered from 1 like the checkpoints; None before the first."""
        return None if self.best is None else self.best_epoch + 1

    def _earlier_best(self, run_dir: RunDir, history: Sequence[dict[str, float]]) -> tuple[dict[str, float], int] | None:
        """The earlier epochs' best history row and the epochs waited since; None when there is
        nothing to resume (no monitored value after the warm-up yet, or no checkpoint of the best epoch)."""
        scored = [row for row in history if self.monitor in row and row["epoch"] > self.start_from_epoch]
        if not scored:
            return None
        pick = max if MONITOR_MODES[self.monitor] == "max" else min
        best = pick(scored, key=lambda row: row[self.monitor])
        if not run_dir.checkpoint_path(best["epoch"]).exists():
            return None
        return best, scored[-1]["epoch"] - best["epoch"]

    @property
    def exhausted(self) -> bool:
        """Whether the earlier epochs already ran out of patience (nothing is left to train)."""
        return self.earlier is not None and self.earlier[1] >= self.patience

    def restore_best(self, model: keras.Model) -> None:
        """Loads the earlier epochs' best weights from that epoch's checkpoint, if there is one."""
        if self.earlier is not None:
            model.load_weights(self.run_dir.checkpoint_path(self.earlier[0]["epoch"]))

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        if self.earlier is None:
            return
        best, self.wait = self.earlier
        self.best, self.best_epoch = best[self.monitor], best["epoch"] - 1
        current = self.model.get_weights()
        self.restore_best(self.model)
        self.best_weights = self.model.get_weights()
        self.model.set_weights(current)


class PipelineEpoch(keras.callbacks.Callback):
    """Sets the training pipeline's epoch variable as each epoch begins (see `make_pipeline`):
    Keras makes the epoch's iterator after this hook, so the shuffle order is the epoch's own."""

    def __init__(self, epoch) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch.assign(epoch)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Aborts training at the first batch whose loss is NaN or infinite, naming epoch and batch.

    It raises rather than setting `stop_training`, so the epoch-end callbacks never write a
    history row, sample grid or checkpoint from broken weights: the last good ones stay.
    With `steps_per_execution` > 1 Keras reports only every Nth batch; the logged loss is the
    epoch's running mean, which turns non-finite at the first bad batch and stays so, so the
    message names the range of batches of the call that went bad.
    """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.first_batch = batch + 1

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float(np.mean((logs or {}).get("loss", 0.0)))  # a scalar, or [1] under multi-worker
        if not np.isfinite(loss):
            where = f"batch {batch + 1}" if batch + 1 == self.first_batch else f"batches {self.first_batch}-{batch + 1}"
            raise NonFiniteLossError(
                f"loss became {loss} at epoch {self.epoch}, {where}; training stopped and the last "
                f"good checkpoint was kept (try a lower `learning_rate`, or `resume=True` from it)"
            )
