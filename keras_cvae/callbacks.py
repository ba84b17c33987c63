"""Training callbacks: sample grids, the history file and ELBO curve, checkpoints, KL warm-up.

Each writes atomically, so killing training at any moment leaves the last good files in place.
Order matters for resuming: the history row of an epoch is written before its checkpoint, and a
resumed run trusts the newest checkpoint, dropping any history row past it.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np

from keras_cvae.atomic import atomic_path, atomic_write_text
from keras_cvae.errors import NonFiniteLossError
from keras_cvae.models.base import METRIC_NAMES
from keras_cvae.plotting import completion_figure, elbo_curve_figure, sample_grid_figure, save_figure, tile

HISTORY_COLUMNS = ("epoch", *METRIC_NAMES, *(f"val_{name}" for name in METRIC_NAMES))
CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d{3,})\.keras$")


class SampleGrid(keras.callbacks.Callback):
    """Writes `samples/epoch_NNN.png` each epoch: one row per class, one fixed noise per column.

    The noise is drawn once from `seed`, so the same column shows the same z all run long and
    the pictures show how the decoder changes, not how the noise does.
    """

    def __init__(
        self, run_dir: str | Path, class_names: Sequence[str], latent_dim: int,
        num_columns: int = 8, seed: int = 0, tensorboard_dir: str | Path | None = None,
    ) -> None:
        super().__init__()
        self.directory = Path(run_dir) / "samples"
        self.class_names = list(class_names)
        rng = np.random.default_rng(seed)
        self.noise = rng.standard_normal((len(class_names), num_columns, latent_dim)).astype("float32")
        self.tensorboard_dir = tensorboard_dir
        self._writer = None

    def grid(self) -> np.ndarray:
        """Decoded samples [classes, columns, H, W, C]. A conditional model reuses each column's
        noise across rows; a plain VAE gets fresh noise for every cell (its rows carry no class)."""
        rows, cols, latent_dim = self.noise.shape
        noise = self.noise if not self.model.conditional else np.broadcast_to(self.noise[:1], self.noise.shape)
        labels = np.repeat(np.arange(rows, dtype="int32"), cols)
        images = np.asarray(self.model.generate(labels, z=noise.reshape(rows * cols, latent_dim)))
        return images.reshape(rows, cols, *images.shape[1:])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        images = self.grid()
        labels = self.class_names if self.model.conditional else ["sample"] * len(self.class_names)
        title = f"epoch {epoch + 1}"
        save_figure(sample_grid_figure(images, labels, title=title), self.directory / f"epoch_{epoch + 1:03d}.png")
        if self.tensorboard_dir is not None:
            self._log_to_tensorboard(images, epoch + 1)

    def _log_to_tensorboard(self, images: np.ndarray, step: int) -> None:
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(Path(self.tensorboard_dir) / "samples"))
        mosaic = tile(images)
        mosaic = mosaic[np.newaxis, ..., np.newaxis] if mosaic.ndim == 2 else mosaic[np.newaxis]
        with self._writer.as_default():
            tf.summary.image("samples", mosaic, step=step)
        self._writer.flush()


def completion_columns(model, images: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For a StructuredCVAE: masked inputs [N, H, W, C], the baseline's completions [N, H, W, C] and
    one completion per noise row [N, S, H, W, C] (`noise` [S, N, latent_dim]; ignored by a baseline)."""
    inputs = np.asarray(model.condition(images))
    baseline = np.asarray(model.complete(images, baseline=True))
    samples = np.stack([np.asarray(model.complete(images, eps=eps)) for eps in noise], axis=1)
    return inputs, baseline, samples


class CompletionGrid(keras.callbacks.Callback):
    """Writes `samples/epoch_NNN.png` for image completion: one held-out image per row, shown as
    its visible part, the truth, the baseline's ŷ and completions from fixed noise per column."""

    def __init__(self, run_dir: str | Path, images: np.ndarray, latent_dim: int, num_samples: int = 6,
                 seed: int = 0) -> None:
        super().__init__()
        self.directory = Path(run_dir) / "samples"
        self.images = np.asarray(images, np.float32)
        rng = np.random.default_rng(seed)
        self.noise = rng.standard_normal((num_samples, len(images), latent_dim)).astype("float32")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        inputs, baseline, samples = completion_columns(self.model, self.images, self.noise)
        figure = completion_figure(inputs, self.images, baseline, samples, title=f"epoch {epoch + 1}")
        save_figure(figure, self.directory / f"epoch_{epoch + 1:03d}.png")


def read_history(path: str | Path) -> list[dict[str, float]]:
    """Rows of `history.csv` as dicts, `epoch` as int; [] when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [
            {key: (int(value) if key == "epoch" else float(value)) for key, value in row.items() if value != ""}
            for row in csv.DictReader(handle)
        ]


def write_history(path: str | Path, rows: Sequence[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class HistoryWriter(keras.callbacks.Callback):
    """Keeps `history.csv` (one row per epoch, numbered from 1) and redraws `elbo_curve.png`."""

    def __init__(self, run_dir: str | Path, rows: Sequence[dict[str, float]] = ()) -> None:
        super().__init__()
        self.run_dir = Path(run_dir)
        self.rows = list(rows)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items() if k in HISTORY_COLUMNS}}
        self.rows = [r for r in self.rows if r["epoch"] < epoch + 1] + [row]
        write_history(self.run_dir / "history.csv", self.rows)
        save_figure(elbo_curve_figure(self.rows), self.run_dir / "elbo_curve.png")


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every complete checkpoint in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name))]
    return sorted(found)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model with its optimizer state as `checkpoints/epoch_NNN.keras` each epoch,
    keeping the newest `keep` of them."""

    def __init__(self, run_dir: str | Path, keep: int = 2) -> None:
        super().__init__()
        self.directory = Path(run_dir) / "checkpoints"
        self.keep = keep

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with atomic_path(self.directory / f"epoch_{epoch + 1:03d}.keras") as tmp:
            self.model.save(tmp)
        for _, old in list_checkpoints(self.directory)[:-self.keep]:
            old.unlink()


class KLWarmup(keras.callbacks.Callback):
    """Raises the KL weight linearly from 1/E in epoch 1 to 1 in epoch E (E = `epochs`)."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.model.kl_weight.assign(min(1.0, (epoch + 1) / self.epochs))


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
                f"good checkpoint was kept (try a lower --learning-rate, or --resume from it)"
            )
