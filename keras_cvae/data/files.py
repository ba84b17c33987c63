"""Array files: the four standard IDX files (LeCun's MNIST format, gzipped or not) and Keras-style
`.npz` archives. numpy only."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from keras_cvae.errors import DataError

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


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


def find_idx_file(folder: Path, prefix: str, kind: str, ndim: int) -> Path | None:
    for stem in (f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def load_idx_folder(folder: Path) -> Arrays:
    """Load the four standard IDX files (gzipped or not) from `folder`."""
    arrays = []
    for prefix in ("train", "t10k"):
        for kind, ndim, magic in (("images", 3, IDX_IMAGES_MAGIC), ("labels", 1, IDX_LABELS_MAGIC)):
            path = find_idx_file(folder, prefix, kind, ndim)
            if path is None:
                raise DataError(f"{folder}: no {prefix}-{kind}-idx{ndim}-ubyte[.gz] file")
            arrays.append(parse_idx(_read_bytes(path), magic, str(path)))
    return tuple(arrays)  # type: ignore[return-value]


def load_npz(path: Path) -> Arrays:
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
