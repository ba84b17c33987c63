"""The tf.data pipeline that feeds training: uint8 images and float32 conditions held in memory,
shuffled by one gather per epoch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from keras_cvae.errors import DataError

if TYPE_CHECKING:
    import tensorflow as tf

    from keras_cvae.config import DataConfig


def limit_and_split(
    images: np.ndarray, labels: np.ndarray, limit: int | None, validation_fraction: float,
    validation_size: int | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keep the first `limit` training images, then hold out the last `validation_size` of them
    (or, without it, the last `validation_fraction`) for validation.

    The split is a fixed slice, independent of the training seed, so validation numbers are
    comparable across runs; the test set is never touched here.
    """
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    num_val = validation_size if validation_size is not None else max(1, int(round(len(images) * validation_fraction)))
    if num_val >= len(images):
        raise DataError(f"only {len(images)} training images: too few to hold out {num_val} for validation")
    return (images[:-num_val], labels[:-num_val]), (images[-num_val:], labels[-num_val:])


def split_training_set(images: np.ndarray, labels: np.ndarray, data: DataConfig
                       ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`limit_and_split` with a run's data settings: (training, validation) images and rows."""
    return limit_and_split(images, labels, data.limit, data.validation_fraction, data.validation_size)


def make_pipeline(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    prefetch: int = 2,
    epoch: tf.Variable | None = None,
    binarize: bool = False,
) -> tf.data.Dataset:
    """Batches of (uint8 images, conditions) from arrays held in memory (conditions as given:
    float32 N×M from `load_dataset`); with `binarize`, each batch's images are a fresh Bernoulli
    draw per pixel (P(on) = pixel / 255; values 0 or 255), a different draw every batch and epoch.

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

    return _epochs(one_epoch, seed, epoch, batch_size, -(-count // batch_size), prefetch, binarize)


def make_mixed_pipeline(
    labeled_images: np.ndarray,
    labeled_rows: np.ndarray,
    unlabeled_images: np.ndarray,
    batch_size: int,
    labeled_per_batch: int,
    seed: int = 0,
    prefetch: int = 2,
    epoch: tf.Variable | None = None,
    binarize: bool = False,
) -> tf.data.Dataset:
    """Batches of (uint8 images, rows) for semi-supervised training: each batch holds
    `labeled_per_batch` labelled images and `batch_size − labeled_per_batch` unlabelled ones, whose
    rows are −1 (a label that is missing).

    An epoch is one pass over the unlabelled images in a new random order (the last batch may hold
    fewer of them); the labelled images are drawn from as many fresh random orders of the labelled
    set as the epoch needs, so each is seen about equally often. Orders depend on `seed` and the
    epoch as in `make_pipeline`, and so does `binarize`.
    """
    import tensorflow as tf

    if not 0 < labeled_per_batch < batch_size:
        raise ValueError(f"labeled_per_batch must be in (0, {batch_size}), got {labeled_per_batch}")
    num_labeled, num_unlabeled = len(labeled_images), len(unlabeled_images)
    per_batch = batch_size - labeled_per_batch
    steps = -(-num_unlabeled // per_batch)
    draws = steps * labeled_per_batch
    repeats = -(-draws // num_labeled)
    all_labeled, all_rows = tf.constant(labeled_images), tf.constant(labeled_rows, tf.float32)
    all_unlabeled = tf.constant(unlabeled_images)
    missing = -tf.ones([num_unlabeled, labeled_rows.shape[1]], tf.float32)
    full = num_unlabeled // per_batch * per_batch
    image_shape = labeled_images.shape[1:]

    def one_epoch(order_seed: tf.Tensor) -> tf.data.Dataset:
        unlabeled = tf.gather(all_unlabeled, tf.random.experimental.stateless_shuffle(tf.range(num_unlabeled), seed=order_seed))
        # `repeats` random orders of the labelled set, one after another.
        keys = tf.random.stateless_uniform([repeats, num_labeled], seed=order_seed[::-1])
        order = tf.reshape(tf.argsort(keys, axis=1), [-1])[:draws]
        labeled, rows = tf.gather(all_labeled, order), tf.gather(all_rows, order)

        def joined(start: int, stop: int, count: int) -> tuple[tf.Tensor, tf.Tensor]:
            """Batches [count, batch, …] of unlabelled images start:stop, then their labelled share."""
            offset = start // per_batch * labeled_per_batch
            take = slice(offset, offset + count * labeled_per_batch)
            u_images = tf.reshape(unlabeled[start:stop], [count, -1, *image_shape])
            u_rows = tf.reshape(missing[start:stop], [count, -1, labeled_rows.shape[1]])
            l_images = tf.reshape(labeled[take], [count, labeled_per_batch, *image_shape])
            l_rows = tf.reshape(rows[take], [count, labeled_per_batch, labeled_rows.shape[1]])
            return tf.concat([u_images, l_images], axis=1), tf.concat([u_rows, l_rows], axis=1)

        batches = tf.data.Dataset.from_tensor_slices(joined(0, full, full // per_batch))
        if full < num_unlabeled:
            images, conditions = joined(full, num_unlabeled, 1)
            batches = batches.concatenate(tf.data.Dataset.from_tensors((images[0], conditions[0])))
        return batches

    return _epochs(one_epoch, seed, epoch, batch_size, steps, prefetch, binarize)


def _binarized(batches: tf.data.Dataset, order_seed: tf.Tensor) -> tf.data.Dataset:
    """Each batch's images as one Bernoulli draw per pixel, seeded by the epoch's seed and the
    batch's number (so a resumed run draws what the uninterrupted one drew)."""
    import tensorflow as tf

    def draw(index: tf.Tensor, batch: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        images, rows = batch
        seed = tf.random.experimental.stateless_fold_in(order_seed, index)
        uniform = tf.random.stateless_uniform(tf.shape(images), seed=seed, alg="philox") * 255.0
        return tf.cast(uniform < tf.cast(images, tf.float32), tf.uint8) * 255, rows

    return batches.enumerate().map(draw)


def _epochs(one_epoch, seed: int, epoch: tf.Variable | None, batch_size: int, num_batches: int,
            prefetch: int, binarize: bool = False) -> tf.data.Dataset:
    """The epochs of a pipeline whose `one_epoch(order_seed)` gives one epoch's batches: the
    order seed is (seed, epoch number) with `epoch`, else drawn afresh for each new iterator;
    with `binarize` every batch is binarized afresh."""
    import tensorflow as tf

    if binarize:
        unbinarized = one_epoch

        def one_epoch(order_seed: tf.Tensor) -> tf.data.Dataset:
            return _binarized(unbinarized(order_seed), order_seed)

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
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_batches))
    options = tf.data.Options()
    options.autotune.enabled = False
    options.deterministic = True
    # Built from memory, not files: multi-worker training shards it by batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.prefetch(prefetch).with_options(options)
