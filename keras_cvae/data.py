"""Datasets: registry, file discovery, IDX/npz parsing, and tf.data pipelines.

Loading is numpy-only so that the command line can find and validate data before it pays for
importing TensorFlow. Sources are tried in the order DESIGN.md gives; an explicit data dir is the
only source tried when one is given, and a failure lists every place that was tried.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf

DATA_DIR_ENV = "KERAS_CVAE_DATA_DIR"
NO_DOWNLOAD_ENV = "KERAS_CVAE_NO_DOWNLOAD"
DEBIAN_ROOT = Path("/usr/share/datasets")

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DataError(ValueError):
    """Data is missing, corrupt or of the wrong shape; the message names the file and the fix."""


@dataclass(frozen=True)
class DatasetSpec:
    """What a registered dataset looks like and where its copies usually live."""

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    debian_dir: str
    keras_cache: str  # path relative to ~/.keras/datasets: an .npz file or a folder of IDX files
    keras_loader: str  # attribute of keras.datasets


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        class_names=tuple(str(d) for d in range(10)),
        image_shape=(28, 28, 1),
        debian_dir="mnist",
        keras_cache="mnist.npz",
        keras_loader="mnist",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
        image_shape=(28, 28, 1),
        debian_dir="fashion-mnist",
        keras_cache="fashion-mnist",
        keras_loader="fashion_mnist",
    ),
}


class LoadedDataset(NamedTuple):
    """Train and test arrays (uint8 images N×H×W×C, int32 labels) and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str


def get_spec(name: str) -> DatasetSpec:
    """The registered dataset `name`, or a DataError that lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}"
        ) from None


# ---------------------------------------------------------------------------------------------
# IDX parsing


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"cannot read {path}: {err}") from None


def parse_idx(data: bytes, expected_magic: int, source: str = "<bytes>") -> np.ndarray:
    """Parse an unsigned-byte IDX file (LeCun's MNIST format) into a uint8 array.

    Raises DataError when the header is short, the magic number is not `expected_magic`, or the
    payload is shorter or longer than the dimensions say.
    """
    if len(data) < 4:
        raise DataError(f"{source}: truncated IDX file ({len(data)} bytes, no header)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DataError(
            f"{source}: not an IDX {'image' if expected_magic == IDX_IMAGES_MAGIC else 'label'} "
            f"file (magic number 0x{magic:08x}, expected 0x{expected_magic:08x})"
        )
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{source}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(data) - header_len
    if payload != expected:
        raise DataError(
            f"{source}: IDX file is {'truncated' if payload < expected else 'too long'} "
            f"({payload} data bytes, dimensions {dims} need {expected})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)


def _find_idx_file(folder: Path, prefix: str, kind: str, ndim: int) -> Path | None:
    for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load the four standard IDX files (gzipped or not) from `folder`."""
    arrays = []
    for prefix in ("train", "t10k"):
        for kind, ndim, magic in (("images", 3, IDX_IMAGES_MAGIC), ("labels", 1, IDX_LABELS_MAGIC)):
            path = _find_idx_file(folder, prefix, kind, ndim)
            if path is None:
                raise DataError(f"{folder}: no {prefix}-{kind}-idx{ndim}-ubyte[.gz] file")
            arrays.append(parse_idx(_read_bytes(path), magic, str(path)))
    return tuple(arrays)  # type: ignore[return-value]


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load a Keras-style .npz (x_train, y_train, x_test, y_test) without unpickling anything."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{path}: missing key(s) {', '.join(missing)} (needs {', '.join(NPZ_KEYS)})")
            return tuple(np.asarray(archive[key]) for key in NPZ_KEYS)  # type: ignore[return-value]
    except DataError:
        raise
    except Exception as err:  # zipfile, pickle refusal and numpy errors all mean "corrupt"
        raise DataError(f"{path}: not a readable .npz file ({err})") from None


def _load_path(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load from an .npz file, or a folder of IDX files, or a folder holding one .npz file."""
    if path.is_file():
        return load_npz(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such file or directory")
    if _find_idx_file(path, "train", "images", 3) is not None:
        return load_idx_folder(path)
    npz_files = sorted(path.glob("*.npz"))
    if len(npz_files) == 1:
        return load_npz(npz_files[0])
    if len(npz_files) > 1:
        raise DataError(f"{path}: several .npz files; pass the one to use as --data-dir")
    raise DataError(f"{path}: no IDX files (train-images-idx3-ubyte[.gz] …) and no .npz file")


def _validated(
    arrays: tuple[np.ndarray, ...], spec: DatasetSpec, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes, counts and label range; return images N×H×W×C uint8 and int32 labels."""
    out = []
    for split, (images, labels) in (("train", arrays[:2]), ("test", arrays[2:])):
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.shape[1:] != spec.image_shape:
            raise DataError(
                f"{source}: {split} images are {images.shape[1:]}, {spec.name} needs {spec.image_shape}"
            )
        if images.dtype != np.uint8:
            raise DataError(f"{source}: {split} images are {images.dtype}, expected uint8")
        labels = np.asarray(labels).reshape(-1)
        if len(images) != len(labels):
            raise DataError(
                f"{source}: {len(images)} {split} images but {len(labels)} {split} labels"
            )
        num_classes = len(spec.class_names)
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"{source}: {split} labels outside [0, {num_classes})")
        out += [np.ascontiguousarray(images), labels.astype(np.int32)]
    return tuple(out)  # type: ignore[return-value]


def _keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def _keras_download(spec: DatasetSpec) -> tuple[np.ndarray, ...]:
    import keras  # imported only here: this is the last resort and it is slow to import

    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, spec.keras_loader).load_data()
    return x_train, y_train, x_test, y_test


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool | None = None) -> LoadedDataset:
    """Load `name` ("mnist" or "fashion_mnist") as uint8 N×H×W×C images and int32 labels.

    With `data_dir` (or $KERAS_CVAE_DATA_DIR) that is the only source. Otherwise: Debian's
    /usr/share/datasets/<name>/, the Keras cache, then a Keras download (skipped when
    `download` is False or $KERAS_CVAE_NO_DOWNLOAD is set). Raises DataError naming every
    place tried when nothing loads.
    """
    spec = get_spec(name)
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        arrays = _validated(_load_path(path), spec, str(path))
        return LoadedDataset(*arrays, class_names=spec.class_names, source=str(path))

    if download is None:
        download = not os.environ.get(NO_DOWNLOAD_ENV)
    failures = []
    candidates: list[tuple[str, object]] = [
        (str(DEBIAN_ROOT / spec.debian_dir), DEBIAN_ROOT / spec.debian_dir),
        (str(_keras_cache_dir() / spec.keras_cache), _keras_cache_dir() / spec.keras_cache),
    ]
    if download:
        candidates.append((f"Keras download (keras.datasets.{spec.keras_loader})", None))
    for label, path in candidates:
        try:
            if path is None:
                raw = _keras_download(spec)
            elif not Path(path).exists():
                failures.append(f"{label} (not found)")
                continue
            else:
                raw = _load_path(Path(path))
            arrays = _validated(raw, spec, label)
            return LoadedDataset(*arrays, class_names=spec.class_names, source=label)
        except DataError as err:
            failures.append(f"{label} ({err})")
        except Exception as err:  # a failed download: network errors come in many types
            failures.append(f"{label} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    raise DataError(
        f"cannot find {name}; tried: {'; '.join(failures)}. Fix: pass --data-dir DIR with the four "
        f"IDX files (train-images-idx3-ubyte.gz, …) or a Keras-style .npz; offline, Debian's "
        f"dataset-fashion-mnist package provides --dataset fashion_mnist"
    )


# ---------------------------------------------------------------------------------------------
# Splits and pipelines


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
    """Batches of (uint8 images, int32 labels) from uint8 arrays held in memory.

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
    all_labels = tf.constant(labels.astype(np.int32))
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
            tf.reshape(epoch_labels[:full], [-1, batch_size]),
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
