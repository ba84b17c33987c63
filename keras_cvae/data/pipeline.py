"""The tf.data pipeline that feeds training: uint8 images and float32 conditions held in memory,
shuffled by one gather per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from keras_cvae.errors import DataError

if TYPE_CHECKING:
    import tensorflow as tf


def limit_and_split(
    images: np.ndarray, labels: np.ndarray, limit: int | None, validation_fraction: float
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keep the first `limit` training images, then hold out the last fraction for validation.

    The split is a fixed slice, independent of the training seed, so validation numbers are
    comparable across runs; the test set is never touched here.
    """
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    num_val = max(1, int(round(len(images) * validation_fraction)))
    if num_val >= len(images):
        raise DataError(f"only {len(images)} training images: too few to hold out validation")
    return (images[:-num_val], labels[:-num_val]), (images[-num_val:], labels[-num_val:])


def make_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    prefetch: int = 2,
    epoch: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Batches of (uint8 images, conditions) from arrays held in memory (conditions as given:
    float32 N×M from `load_dataset`).

    The arrays become two in-memory tensors. An epoch is one gather of the whole array in a new
    random order (a different order every epoch, the same sequence for the same seed), cut into
    batches by slicing. Nothing runs per example or per pixel: on 2 cores every bit of work
    here is taken from the training step, so the images stay uint8 (a quarter of the bytes)
    and the compiled step scales them to [0, 1] (`models.base.as_unit_range`), rather than
    shuffling indices one element at a time and casting each batch here.
    Autotuning is off and prefetch is fixed: on 2 cores tf.data's autotuner stalls at the end
    of every epoch.

    With `epoch` (an int64 variable that `callbacks.PipelineEpoch` sets as each epoch begins),
    an epoch's order depends only on `seed` and the epoch number, so a resumed run sees the
    same data as an uninterrupted one. Without it, each new iterator draws the next order.
    """
    import tensorflow as tf

    all_images = tf.constant(images)
    all_labels = tf.constant(labels)
    count = len(images)
    full = count // batch_size * batch_size

    def one_epoch(order_seed: tf.Tensor) -> tf.data.Dataset:
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(tf.range(count), seed=order_seed)
            epoch_images, epoch_labels = tf.gather(all_images, order), tf.gather(all_labels, order)
        else:
            epoch_images, epoch_labels = all_images, all_labels
        batches = tf.data.Dataset.from_tensor_slices((
            tf.reshape(epoch_images[:full], [-1, batch_size, *images.shape[1:]]),
            tf.reshape(epoch_labels[:full], [-1, batch_size, *labels.shape[1:]]),
        ))
        if full < count:  # the last, smaller batch
            rest = tf.data.Dataset.from_tensors((epoch_images[full:], epoch_labels[full:]))
            batches = batches.concatenate(rest)
        return batches

    # One seed per epoch, read when Keras makes the epoch's iterator.
    if epoch is not None:
        seeds = tf.data.Dataset.from_tensors(tf.constant(seed, tf.int64)).map(
            lambda base: tf.stack([base, epoch.read_value()]))
    else:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1).map(
            lambda drawn: tf.stack([drawn, tf.constant(0, tf.int64)]))
    # `rebatch` (batches already this size pass whole) marks the batch dimension, so that
    # tf.distribute splits each global batch across replicas; the cardinality gives Keras's
    # progress bar its total.
    dataset = seeds.flat_map(one_epoch).rebatch(batch_size)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    # Built from memory, not files: multi-worker training shards it by batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.prefetch(prefetch).with_options(options)
