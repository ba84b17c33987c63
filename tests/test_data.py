"""IDX/npz parsing, the source order of load_dataset, splits and pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import idx_bytes, write_idx_folder
from keras_cvae import data
from keras_cvae.data import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DataError,
    load_dataset,
    make_pipeline,
    parse_idx,
)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_round_trip(tmp_path, tiny_arrays, gz):
    write_idx_folder(tmp_path, *tiny_arrays, gz=gz)
    loaded = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(loaded.x_train[..., 0], tiny_arrays[0])
    np.testing.assert_array_equal(loaded.y_test[:, 0], tiny_arrays[3])  # one condition column, labels
    assert loaded.x_train.shape == (60, 28, 28, 1) and loaded.x_train.dtype == np.uint8
    assert loaded.y_train.shape == (60, 1) and loaded.y_train.dtype == np.float32
    assert loaded.class_names == tuple("0123456789")


def test_alternative_idx_names(tmp_path, tiny_arrays):
    """Some mirrors name the files train-images.idx3-ubyte; those load too."""
    write_idx_folder(tmp_path, *tiny_arrays, gz=False)
    for path in tmp_path.iterdir():
        path.rename(path.with_name(path.name.replace("-idx", ".idx")))
    assert len(load_dataset("mnist", tmp_path).x_train) == 60


def test_truncated_idx_is_a_clear_error(tiny_arrays):
    blob = idx_bytes(tiny_arrays[0])
    with pytest.raises(DataError, match="truncated"):
        parse_idx(blob[:-7], data.IDX_IMAGES_MAGIC, "f")
    with pytest.raises(DataError, match="truncated"):
        parse_idx(blob[:6], data.IDX_IMAGES_MAGIC, "f")
    with pytest.raises(DataError, match="too long"):
        parse_idx(blob + b"\0", data.IDX_IMAGES_MAGIC, "f")


def test_wrong_magic_is_a_clear_error(tiny_arrays):
    with pytest.raises(DataError, match="magic number 0x00000801"):
        parse_idx(idx_bytes(tiny_arrays[1]), data.IDX_IMAGES_MAGIC, "f")


def test_corrupt_gzip_is_a_clear_error(tmp_path, tiny_arrays):
    write_idx_folder(tmp_path, *tiny_arrays)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:100])
    with pytest.raises(DataError, match="cannot read .*train-images"):
        load_dataset("mnist", tmp_path)


def test_count_mismatch_is_a_clear_error(tmp_path, tiny_arrays):
    x_train, y_train, x_test, y_test = tiny_arrays
    write_idx_folder(tmp_path, x_train, y_train[:-1], x_test, y_test)
    with pytest.raises(DataError, match="60 train images but 59 train labels"):
        load_dataset("mnist", tmp_path)


def test_wrong_image_size_is_a_clear_error(tmp_path, tiny_arrays):
    x_train, y_train, x_test, y_test = tiny_arrays
    write_idx_folder(tmp_path, x_train[:, :20, :20], y_train, x_test, y_test)
    with pytest.raises(DataError, match=r"\(20, 20, 1\), mnist needs \(28, 28, 1\)"):
        load_dataset("mnist", tmp_path)


def test_npz_and_missing_keys(tmp_path, tiny_arrays):
    keys = dict(zip(data.NPZ_KEYS, tiny_arrays))
    np.savez(tmp_path / "mnist.npz", **keys)
    assert len(load_dataset("mnist", tmp_path / "mnist.npz").x_test) == 20
    assert len(load_dataset("mnist", tmp_path).x_test) == 20  # a folder holding one .npz
    del keys["y_test"]
    np.savez(tmp_path / "broken.npz", **keys)
    with pytest.raises(DataError, match="missing key.*y_test"):
        load_dataset("mnist", tmp_path / "broken.npz")


def test_npz_with_objects_is_refused_not_unpickled(tmp_path, tiny_arrays):
    keys = dict(zip(data.NPZ_KEYS, tiny_arrays))
    keys["x_train"] = np.array([object()], dtype=object)
    np.savez(tmp_path / "evil.npz", **keys)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset("mnist", tmp_path / "evil.npz")


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(DataError, match="choose one of: fashion_mnist, mnist"):
        load_dataset("cifar10")


def test_explicit_dir_is_the_only_source(tmp_path, monkeypatch, tiny_arrays):
    debian = write_idx_folder(tmp_path / "debian" / "mnist", *tiny_arrays)
    monkeypatch.setattr(data, "DEBIAN_ROOT", debian.parent)
    with pytest.raises(DataError, match="no such file or directory"):
        load_dataset("mnist", tmp_path / "missing")


def test_env_var_data_dir(tmp_path, monkeypatch, tiny_arrays):
    write_idx_folder(tmp_path, *tiny_arrays)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    assert load_dataset("mnist").source == str(tmp_path)


def test_source_order_debian_then_keras_cache(tmp_path, monkeypatch, tiny_arrays):
    monkeypatch.setattr(data, "DEBIAN_ROOT", tmp_path / "debian")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)

    # Nothing anywhere: every place is named, with the fix.
    with pytest.raises(DataError) as err:
        load_dataset("mnist", download=False)
    message = str(err.value)
    assert str(tmp_path / "debian" / "mnist") in message
    assert str(tmp_path / "keras" / "datasets" / "mnist.npz") in message
    assert "`data_dir`" in message

    # The Keras cache alone.
    (tmp_path / "keras" / "datasets").mkdir(parents=True)
    np.savez(tmp_path / "keras" / "datasets" / "mnist.npz", **dict(zip(data.NPZ_KEYS, tiny_arrays)))
    assert load_dataset("mnist", download=False).source.endswith("mnist.npz")

    # Debian's copy wins over the cache.
    x_train, y_train, x_test, y_test = tiny_arrays
    write_idx_folder(tmp_path / "debian" / "mnist", x_train[:30], y_train[:30], x_test, y_test)
    loaded = load_dataset("mnist", download=False)
    assert loaded.source == str(tmp_path / "debian" / "mnist") and len(loaded.x_train) == 30


def test_download_is_last_and_its_failure_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DEBIAN_ROOT", tmp_path / "debian")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def offline(spec):
        raise OSError("network is unreachable")

    monkeypatch.setattr(data, "_keras_download", offline)
    with pytest.raises(DataError, match="Keras download.*network is unreachable"):
        load_dataset("fashion_mnist", download=True)


def test_limit_and_split_are_fixed_slices():
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
    labels = np.arange(100, dtype=np.int32)
    (xt, yt), (xv, yv) = data.limit_and_split(images, labels, limit=50, validation_fraction=0.2)
    assert yt.tolist() == list(range(40)) and yv.tolist() == list(range(40, 50))
    with pytest.raises(DataError, match="too few"):
        data.limit_and_split(images, labels, limit=1, validation_fraction=0.5)


def test_a_validation_size_holds_out_exactly_the_last_n_images():
    from keras_cvae.config import DataConfig

    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1, 1)
    labels = np.arange(100, dtype=np.int32)
    (_, yt), (_, yv) = data.split_training_set(images, labels, DataConfig(validation_size=30))
    assert yt.tolist() == list(range(70)) and yv.tolist() == list(range(70, 100))
    (_, yt), (_, yv) = data.split_training_set(images, labels, DataConfig(limit=50))
    assert yt.tolist() == list(range(45)) and yv.tolist() == list(range(45, 50))  # the fraction, 0.1
    with pytest.raises(DataError, match="too few to hold out 100"):
        data.split_training_set(images, labels, DataConfig(validation_size=100))


def test_pipeline_batches_uint8_images_and_reshuffles_every_epoch():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    labels = np.arange(10, dtype=np.int32)
    pipeline = data.make_pipeline(images, labels, batch_size=4, shuffle=True, seed=1)
    epochs = [list(pipeline) for _ in range(3)]
    for batches in epochs:
        assert [len(b[1]) for b in batches] == [4, 4, 2]
        assert batches[0][0].dtype.name == "uint8" and batches[0][1].dtype.name == "int32"
        order = np.concatenate([b[1].numpy() for b in batches])
        assert sorted(order.tolist()) == list(range(10))  # every example once per epoch
        np.testing.assert_array_equal(np.concatenate([b[0].numpy().ravel() for b in batches]), order)
    orders = [tuple(np.concatenate([b[1].numpy() for b in batches])) for batches in epochs]
    assert len(set(orders)) == 3  # a new order every epoch
    again = data.make_pipeline(images, labels, batch_size=4, shuffle=True, seed=1)
    assert tuple(np.concatenate([b[1].numpy() for b in again])) == orders[0]  # same seed, same orders
    fixed = data.make_pipeline(images, labels, batch_size=4, shuffle=False)
    assert np.concatenate([b[1].numpy() for b in fixed]).tolist() == list(range(10))


def test_pipeline_order_depends_only_on_the_seed_and_the_epoch_number():
    """What a resumed run relies on: epoch e's order is the same whichever epoch came before."""
    import tensorflow as tf

    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    labels = np.arange(10)
    epoch = tf.Variable(0, dtype=tf.int64)
    pipeline = data.make_pipeline(images, labels, batch_size=10, shuffle=True, seed=3, epoch=epoch)

    def order_at(number: int) -> list[int]:
        epoch.assign(number)
        return [int(v) for _, batch in pipeline for v in batch.numpy()]

    orders = {number: order_at(number) for number in (0, 1, 2)}
    assert len({tuple(o) for o in orders.values()}) == 3  # every epoch its own order
    assert order_at(2) == orders[2] and order_at(0) == orders[0]  # and the same one again
    assert sorted(orders[1]) == list(range(10))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64), magic=st.sampled_from([IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC]))
def test_idx_parser_never_crashes_on_random_bytes(data, magic):
    try:
        array = parse_idx(data, magic, "fuzz")
    except DataError:
        return
    assert array.dtype == np.uint8 and array.ndim == magic & 0xFF


@settings(max_examples=100, deadline=None)
@given(cut=st.integers(min_value=0, max_value=60 * 28 * 28 + 15))
def test_idx_parser_on_every_truncation(cut):
    blob = idx_bytes(np.zeros((60, 28, 28), np.uint8))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(blob[:cut], IDX_IMAGES_MAGIC, "fuzz")


def test_image_size_resizes_array_data(tmp_path, tiny_arrays):
    write_idx_folder(tmp_path, *tiny_arrays)
    loaded = load_dataset("mnist", tmp_path, image_size=(14, 10))
    assert loaded.x_train.shape == (60, 14, 10, 1) and loaded.x_test.shape == (20, 14, 10, 1)
    flat = np.full((1, 28, 28), 77, np.uint8)  # a flat image stays flat through the antialiasing filter
    np.savez(tmp_path / "flat.npz", x_train=flat, y_train=[0], x_test=flat, y_test=[0])
    assert np.all(load_dataset("flat", tmp_path / "flat.npz", image_size=(7, 7)).x_test == 77)


def test_dynamic_binarization_draws_afresh_every_batch_and_keeps_a_resumed_epoch():
    import tensorflow as tf

    grey = np.full((64, 4, 4, 1), 96, np.uint8)  # every pixel on with probability 96/255
    rows = np.zeros((64, 1), np.float32)
    epoch = tf.Variable(0, dtype=tf.int64)
    pipeline = make_pipeline(grey, rows, batch_size=16, shuffle=True, seed=3, epoch=epoch, binarize=True)
    first = np.stack([images.numpy() for images, _ in pipeline])
    assert set(np.unique(first)) == {0, 255}
    assert abs(first.mean() / 255 - 96 / 255) < 0.05
    assert not np.array_equal(first[0], first[1])  # the same grey images, a new draw each batch
    np.testing.assert_array_equal(first, np.stack([images.numpy() for images, _ in pipeline]))  # epoch 0 again
    epoch.assign(1)
    assert not np.array_equal(first, np.stack([images.numpy() for images, _ in pipeline]))


def test_the_test_set_is_binarized_once_with_a_fixed_seed(tmp_path, tiny_arrays):
    from keras_cvae.config import DataConfig
    from keras_cvae.data import load_configured

    folder = write_idx_folder(tmp_path / "idx", *tiny_arrays)
    config = DataConfig(dataset="mnist", data_dir=str(folder), binarize="dynamic")
    first, second = load_configured(config), load_configured(config)
    assert first.binarized and set(np.unique(first.x_test)) <= {0, 255}
    np.testing.assert_array_equal(first.x_test, second.x_test)
    np.testing.assert_array_equal(first.x_train, tiny_arrays[0][..., None])  # training images stay grey
    assert abs(first.x_test.mean() - tiny_arrays[2].mean()) < 4.0
    assert not load_configured(DataConfig(dataset="mnist", data_dir=str(folder))).binarized
