"""Shared fixtures: quiet TensorFlow, no downloads, small IDX folders, real Fashion-MNIST."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_CVAE_NO_DOWNLOAD"] = "1"
# Reference classifiers trained by tests stay out of the user's cache.
os.environ.setdefault("KERAS_CVAE_CACHE", os.path.join(os.environ.get("TMPDIR", "/tmp"), "keras_cvae_test_cache"))

REPO_ROOT = Path(__file__).resolve().parent.parent
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file (magic 0x0000080N, big-endian dims, raw bytes)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_idx_folder(folder: Path, x_train, y_train, x_test, y_test, gz: bool = True) -> Path:
    """Write the four standard IDX files (gzipped or raw) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, images, labels in (("train", x_train, y_train), ("t10k", x_test, y_test)):
        for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            data = idx_bytes(np.asarray(array, np.uint8))
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
    return folder


COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


def shape_image(shape: str, colour: str, size: float, side: int = 16) -> np.ndarray:
    """An RGBA picture: a coloured square or bar of half-width `size` px on a transparent ground."""
    image = np.zeros((side, side, 4), np.uint8)
    half, centre = int(size), side // 2
    rows = slice(centre - half, centre + half) if shape == "square" else slice(2, side - 2)
    cols = slice(centre - half, centre + half) if shape == "square" else slice(centre - half // 2, centre + half // 2 + 1)
    image[rows, cols] = (*COLOURS[colour], 255)
    return image


def write_shapes_folder(root: Path, count: int = 240, side: int = 16, seed: int = 0) -> Path:
    """An image folder with metadata.csv: RGBA PNGs, two categorical conditions (shape, colour)
    and one continuous (size, uniform in [2, 6] px)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = ["file_name,shape,colour,size"]
    for i in range(count):
        shape, colour, size = ("square", "bar")[i % 2], tuple(COLOURS)[(i // 2) % 3], rng.uniform(2, 6)
        Image.fromarray(shape_image(shape, colour, size, side), "RGBA").save(root / f"{i:04d}.png")
        lines.append(f"{i:04d}.png,{shape},{colour},{size:.4f}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def write_class_folders(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str]) -> Path:
    """`root/<name>/<i>.png` for uint8 images [N, H, W] or [N, H, W, 3]: Keras's class-folder layout."""
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image, np.uint8)).save(folder / f"{i:05d}.png")
    return root


def blobs(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes a model can tell apart: a bright square in a class-specific corner."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    images = rng.integers(0, 40, (count, 28, 28, 1)).astype(np.uint8)
    for i, label in enumerate(labels):
        top, left = [(2, 2), (2, 16), (16, 9)][label]
        images[i, top:top + 10, left:left + 10] = 230
    return images, labels


def blob_dataset(count: int = 300):
    """`blobs` as a LoadedDataset: `count` training images, 60 test images."""
    from keras_cvae.data import LoadedDataset

    images, labels = blobs(count)
    test_images, test_labels = blobs(60, seed=1)
    return LoadedDataset.from_labels(images, labels, test_images, test_labels, class_names=("nw", "ne", "s"),
                                     source="blobs")


@pytest.fixture
def tiny_arrays():
    rng = np.random.default_rng(0)
    return (
        rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 60).astype(np.uint8),
        rng.integers(0, 256, (20, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 20).astype(np.uint8),
    )


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Debian's Fashion-MNIST; CI installs it (make data), so its absence fails there."""
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"{FASHION_DIR} missing: `make data` should have installed dataset-fashion-mnist")
        pytest.skip(f"{FASHION_DIR} not installed (apt-get install dataset-fashion-mnist)")
    return FASHION_DIR


def cli_command(*args: str) -> list[str]:
    """`python <script or -m> args`, the script taken from the repository whatever the cwd."""
    script = REPO_ROOT / args[0]
    return [sys.executable, str(script) if script.is_file() else args[0], *args[1:]]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def run_cli(*args: str, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python <script or -m> args` as a user would, capturing output. The default cwd is a fresh
    temp dir, so default outputs (saved_models/, runs/) never land in the checkout."""
    return subprocess.run(
        cli_command(*args), cwd=cwd or tempfile.mkdtemp(prefix="cli-"), env=cli_env(),
        capture_output=True, text=True, timeout=timeout,
    )


def project_lines(stderr: str) -> list[str]:
    """stderr without TensorFlow's and absl's own import-time log lines."""
    noise = ("WARNING: All log messages before absl", "I0000", "W0000", "E0000")
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(noise)]


def assert_keras_round_trip(model, x, y, path: Path, same_outputs) -> None:
    """The one save/load round trip for every model class: trained a little with FusedAdam (what
    train.py compiles with), saved, loaded in safe mode; config, optimizer state and
    `same_outputs(loaded, model)` must all come back."""
    import keras

    from keras_cvae.models.optimizers import FusedAdam

    model.compile(optimizer=FusedAdam(1e-3))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    # Compared as the JSON a .keras file stores: a nested network's config holds tuples that
    # come back as lists.
    assert type(loaded) is type(model)
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(model.get_config(), sort_keys=True)
    assert type(loaded.optimizer) is FusedAdam
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
    same_outputs(loaded, model)
