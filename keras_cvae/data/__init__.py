"""Datasets: where the images and their conditions come from (`load_dataset`), and the tf.data
pipeline that feeds them to training (`data.pipeline`).

Loading is numpy-only (Pillow for image folders) so that the command line can find and validate
data before it pays for importing TensorFlow. Sources are tried in the order docs/data.md gives; an
explicit data dir is the only source tried when one is given, and a failure lists every place
that was tried.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_cvae.conditions import (
    CATEGORICAL,
    CONTINUOUS,
    Condition,
    check_conditions,
    checked_name,
    class_labels,
    class_names,
    encode_column,
    parse_condition_list,
)
from keras_cvae.config import DataConfig
from keras_cvae.data.files import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    NPZ_KEYS,
    Arrays,
    find_idx_file,
    load_idx_folder,
    load_npz,
    parse_idx,
)
from keras_cvae.data.folders import (
    SPLIT_COLUMN,
    FolderTable,
    as_array,
    decode_images,
    is_image_folder,
    read_folder,
)
from keras_cvae.data.pipeline import limit_and_split, make_mixed_pipeline, make_pipeline, split_training_set
from keras_cvae.errors import DataError

__all__ = [
    "CATEGORICAL", "CONTINUOUS", "DATASETS", "Condition", "DataError", "DatasetSpec", "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC", "NPZ_KEYS", "LoadedDataset", "binarize", "dataset_name", "get_spec",
    "limit_and_split", "load_configured", "load_dataset", "make_mixed_pipeline", "make_pipeline", "parse_idx",
    "split_training_set",
]

DATA_DIR_ENV = "KERAS_CVAE_DATA_DIR"
NO_DOWNLOAD_ENV = "KERAS_CVAE_NO_DOWNLOAD"
DEBIAN_ROOT = Path("/usr/share/datasets")
DEFAULT_DATASET = "mnist"
SPLIT_SEED = 0  # the held-out test split of a folder without a split column
BINARIZE_SEED = 0  # the one binarization of the test and validation sets under `binarize` dynamic


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


@dataclass(frozen=True)
class LoadedDataset:
    """Train and test images (uint8 N×H×W×C) with their conditions (float32 N×M, a column per
    condition: category index or value in the data's units), each condition's description, and
    where they came from. `test_files` lists a folder's held-out test images."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    conditions: tuple[Condition, ...]
    source: str
    test_files: tuple[str, ...] | None = None
    binarized: bool = False  # the test set is binarized (the training set stays grey: see data.pipeline)

    @classmethod
    def from_labels(cls, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                    class_names: tuple[str, ...], source: str = "arrays") -> LoadedDataset:
        """Class data: integer labels [N] become the one categorical condition `labels`."""
        def column(labels: np.ndarray) -> np.ndarray:
            return np.asarray(labels, np.float32).reshape(-1, 1)

        return cls(x_train, column(y_train), x_test, column(y_test), (class_labels(class_names),), source)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The categories of the first categorical condition (the sample grids' rows)."""
        return class_names(self.conditions)


def get_spec(name: str) -> DatasetSpec:
    """The registered dataset `name`, or a DataError that lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}; choose one of: {', '.join(sorted(DATASETS))}, or pass `data_dir`"
        ) from None


def dataset_name(name: str | None, data_dir: str | Path | None) -> str:
    """The dataset's name: the given one; for an image folder, the folder's name; else mnist."""
    if name:
        return name
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir and is_image_folder(Path(data_dir).expanduser()):
        return Path(data_dir).expanduser().resolve().name
    return DEFAULT_DATASET


# ------------------------------------------------------------------------------------------
# Array sources (IDX, npz): one categorical condition, `labels`


def _load_arrays(path: Path) -> Arrays:
    """An .npz file, a folder of IDX files, or a folder holding one .npz file."""
    if path.is_file():
        return load_npz(path)
    if find_idx_file(path, "train", "images", 3) is not None:
        return load_idx_folder(path)
    npz_files = sorted(path.glob("*.npz"))
    if len(npz_files) == 1:
        return load_npz(npz_files[0])
    if len(npz_files) > 1:
        raise DataError(f"{path}: several .npz files; pass the one to use as `data_dir`")
    raise DataError(f"{path}: no IDX files (train-images-idx3-ubyte[.gz] …), .npz file, {'metadata.csv'} "
                    f"or class subfolders of images")


def _resized(images: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or images.shape[1:3] == size:
        return images
    from PIL import Image

    return np.stack([as_array(Image.fromarray(image[..., 0] if image.shape[2] == 1 else image), size)
                     for image in images])


def _array_dataset(arrays: Arrays, spec: DatasetSpec | None, source: str, size: tuple[int, int] | None) -> LoadedDataset:
    """Check shapes, counts and label range (against `spec` when the dataset is registered)."""
    out = []
    for split, (images, labels) in (("train", arrays[:2]), ("test", arrays[2:])):
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.ndim != 4 or images.shape[3] not in (1, 3):
            raise DataError(f"{source}: {split} images have shape {images.shape}; expected N×H×W or N×H×W×{{1,3}}")
        if spec is not None and images.shape[1:] != spec.image_shape:
            raise DataError(f"{source}: {split} images are {images.shape[1:]}, {spec.name} needs {spec.image_shape} (pass `dataset` NAME for other data)")
        if images.dtype != np.uint8:
            raise DataError(f"{source}: {split} images are {images.dtype}, expected uint8")
        labels = np.asarray(labels)
        if labels.ndim != 1 and labels.shape[1:] != (1,):
            raise DataError(f"{source}: {split} labels have shape {labels.shape}; expected one integer label per image")
        labels = labels.reshape(-1)
        if len(images) != len(labels):
            raise DataError(f"{source}: {len(images)} {split} images but {len(labels)} {split} labels")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{source}: {split} labels are {labels.dtype}, expected integers")
        out += [np.ascontiguousarray(_resized(images, size)), labels]
    num_classes = len(spec.class_names) if spec else int(max(out[1].max(initial=0), out[3].max(initial=0))) + 1
    for split, labels in (("train", out[1]), ("test", out[3])):
        if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"{source}: {split} labels outside [0, {num_classes})")
    names = spec.class_names if spec else tuple(str(i) for i in range(num_classes))
    return LoadedDataset.from_labels(out[0], out[1], out[2], out[3], names, source)


def _keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def _keras_download(spec: DatasetSpec) -> Arrays:
    import keras  # imported only here: this is the last resort and it is slow to import

    (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, spec.keras_loader).load_data()
    return x_train, y_train, x_test, y_test


def _registered(name: str, download: bool | None, size: tuple[int, int] | None) -> LoadedDataset:
    """A registered dataset from Debian's copy, the Keras cache, then a Keras download."""
    spec = get_spec(name)
    if download is None:
        download = not os.environ.get(NO_DOWNLOAD_ENV)
    failures = []
    candidates: list[tuple[str, Path | None]] = [
        (str(DEBIAN_ROOT / spec.debian_dir), DEBIAN_ROOT / spec.debian_dir),
        (str(_keras_cache_dir() / spec.keras_cache), _keras_cache_dir() / spec.keras_cache),
    ]
    if download:
        candidates.append((f"Keras download (keras.datasets.{spec.keras_loader})", None))
    for label, path in candidates:
        try:
            if path is None:
                raw = _keras_download(spec)
            elif not path.exists():
                failures.append(f"{label} (not found)")
                continue
            else:
                raw = _load_arrays(path)
            return _array_dataset(raw, spec, label, size)
        except DataError as err:
            failures.append(f"{label} ({err})")
        except Exception as err:  # a failed download: network errors come in many types
            failures.append(f"{label} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
    raise DataError(
        f"cannot find {name}; tried: {'; '.join(failures)}. Fix: pass `data_dir` DIR with the four "
        f"IDX files (train-images-idx3-ubyte.gz, …), a Keras-style .npz or an image folder; offline, "
        f"Debian's dataset-fashion-mnist package provides `dataset` fashion_mnist"
    )


# ------------------------------------------------------------------------------------------
# Image folders


def _test_rows(table: FolderTable, test_fraction: float) -> np.ndarray:
    """Which rows are test images: the split column, else a seeded `test_fraction` of them."""
    count = len(table.files)
    if table.split is not None:
        is_test = np.array([s == "test" for s in table.split])
        how = f"its {SPLIT_COLUMN!r} column"
    else:
        is_test = np.zeros(count, bool)
        is_test[np.random.default_rng(SPLIT_SEED).permutation(count)[:int(round(count * test_fraction))]] = True
        how = f"`test_fraction` {test_fraction} of {count} images"
    if is_test.all() or not is_test.any():
        raise DataError(f"{table.source}: {how} leaves no {'training' if is_test.all() else 'test'} images")
    return is_test


def _folder_dataset(root: Path, picked: list[tuple[str, str | None]], size: tuple[int, int] | None,
                    test_fraction: float) -> LoadedDataset:
    table = read_folder(root)
    known = list(table.columns)
    names = [name for name, _ in picked] or known
    if not names:
        raise DataError(f"{table.source}: no condition columns besides {'file_name'!r}; add one (a plain VAE "
                        f"trains with `conditional=False` and any column)")
    unknown = [name for name in names if name not in table.columns]
    if unknown:
        raise DataError(f"`conditions`: {table.source} has no column {unknown[0]!r}; its conditions are {', '.join(known)}")
    kinds = dict(picked)
    is_test = _test_rows(table, test_fraction)
    columns, conditions = [], []
    for name in names:
        values, condition = encode_column(checked_name(name, table.source), table.columns[name], kinds.get(name),
                                          table.source, ~is_test)
        columns.append(values)
        conditions.append(condition)
    images = decode_images(root, table.files, size)
    rows = np.stack(columns, axis=1) if columns else np.zeros((len(images), 0), np.float32)
    # A seeded order, not the folder's sorted one: --limit and the validation slice take the first
    # and last images, which in class folders would be a few classes only.
    order = np.random.default_rng(SPLIT_SEED).permutation(len(images))
    train, test = order[~is_test[order]], order[is_test[order]]
    return LoadedDataset(images[train], rows[train], images[test], rows[test], tuple(conditions), str(root),
                         tuple(table.files[i] for i in test))


# ------------------------------------------------------------------------------------------


def load_dataset(
    name: str | None = None,
    data_dir: str | Path | None = None,
    download: bool | None = None,
    *,
    conditions: str | None = None,
    image_size: tuple[int, int] | None = None,
    test_fraction: float = 0.1,
) -> LoadedDataset:
    """Load a dataset as uint8 N×H×W×C images and float32 N×M conditions.

    With `data_dir` (or $KERAS_CVAE_DATA_DIR) that is the only source: IDX files, an .npz, or an
    image folder (class subfolders, or a metadata.csv whose other columns are conditions,
    `conditions` picking some as "NAME[:KIND],…"). Otherwise `name` ("mnist" or "fashion_mnist")
    from Debian's /usr/share/datasets/<name>/, the Keras cache, then a Keras download (skipped when
    `download` is False or $KERAS_CVAE_NO_DOWNLOAD is set). `image_size` (height, width) resizes.
    Raises DataError naming the file, column or every place tried.
    """
    picked = parse_condition_list(conditions)
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        dataset = _registered(name or DEFAULT_DATASET, download, image_size)
    else:
        path = Path(data_dir).expanduser()
        if not path.exists():
            raise DataError(f"{path}: no such file or directory")
        if path.is_dir() and is_image_folder(path):
            return _folder_dataset(path, picked, image_size, test_fraction)
        spec = DATASETS.get(name) if name else DATASETS[DEFAULT_DATASET]
        dataset = _array_dataset(_load_arrays(path), spec, str(path), image_size)
    names = [n for n, _ in picked]
    if names and names != ["labels"] or any(kind == CONTINUOUS for _, kind in picked):
        raise DataError(f"`conditions` {conditions!r}: {dataset.source} has one categorical condition, labels")
    check_conditions(dataset.conditions, dataset.y_train, dataset.source)
    return dataset


def load_configured(config: DataConfig, data_dir: str | Path | None = None) -> LoadedDataset:
    """The dataset a run's data settings describe (`data_dir`, when given, overriding theirs); under
    `--binarize dynamic` its test set binarized once (BINARIZE_SEED)."""
    dataset = load_dataset(config.dataset, data_dir or config.data_dir, conditions=config.conditions,
                           image_size=config.image_size, test_fraction=config.test_fraction)
    if config.dynamic_binarization:
        dataset = dataclasses.replace(dataset, x_test=binarize(dataset.x_test), binarized=True)
    return dataset


def binarize(images: np.ndarray, seed: int = BINARIZE_SEED) -> np.ndarray:
    """One Bernoulli draw per pixel of uint8 images, P(on) = pixel / 255: uint8 values 0 or 255."""
    draws = np.random.default_rng(seed).random(images.shape, dtype=np.float32) * 255.0
    return np.where(draws < images, 255, 0).astype(np.uint8)
