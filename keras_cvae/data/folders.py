"""Image folders: class subfolders (Keras `image_dataset_from_directory` convention) and folders
with a `metadata.csv` (Hugging Face imagefolder convention), decoded once with Pillow into a uint8
cache keyed by a hash of the files.

Channels: an image with an alpha channel (RGBA, LA, or a palette with transparency) is composited
onto white; a folder is RGB (3 channels) if any of its images has colour, else grayscale (1).
Sizes must agree unless `image_size` is given, which resizes every image with Pillow's Lanczos
filter (antialiased).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keras_cvae.atomic import atomic_path
from keras_cvae.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
METADATA_FILE = "metadata.csv"
FILE_COLUMN = "file_name"
SPLIT_COLUMN = "split"
SPLITS = ("train", "test")
CACHE_ENV = "KERAS_CVAE_CACHE"
DECODER_VERSION = 1  # part of the cache key: bump when decoding changes


def cache_dir() -> Path:
    """Where decoded folders and reference classifiers are cached: $KERAS_CVAE_CACHE, else
    ~/.cache/keras_cvae."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "keras_cvae")


@dataclass(frozen=True)
class FolderTable:
    """What a folder lists before any image is decoded: files (relative to the folder), their
    condition columns as text, and the split column when there is one."""

    root: Path
    files: list[str]
    columns: dict[str, list[str]]
    split: list[str] | None
    source: str


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def has_class_subfolders(path: Path) -> bool:
    return path.is_dir() and any(child.is_dir() and any(map(_is_image, child.iterdir())) for child in path.iterdir())


def has_split_folders(path: Path) -> bool:
    """`path/train/<class>/…` and `path/test/<class>/…`: class subfolders split by folder."""
    return all(has_class_subfolders(path / split) for split in SPLITS)


def is_image_folder(path: Path) -> bool:
    """Whether `path` is a folder of images: a metadata.csv, or class subfolders holding images."""
    return (path / METADATA_FILE).is_file() or has_class_subfolders(path) or has_split_folders(path)


def read_class_folders(root: Path) -> FolderTable:
    """`root/<class>/*.{png,jpg,jpeg,bmp}`: one condition, `labels`, classes sorted by folder name.
    With `root/train/<class>/…` and `root/test/<class>/…` the split comes from those folders."""
    split_folders = has_split_folders(root)
    files, labels, split = [], [], []
    for prefix in SPLITS if split_folders else ("",):
        for folder in sorted(child for child in (root / prefix).iterdir() if child.is_dir()):
            for image in sorted(child for child in folder.iterdir() if _is_image(child)):
                files.append(f"{prefix}/{folder.name}/{image.name}".lstrip("/"))
                labels.append(folder.name)
                split.append(prefix)
    if not files:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in class subfolders and no {METADATA_FILE}")
    return FolderTable(root, files, {"labels": labels}, split if split_folders else None, str(root))


def read_metadata(root: Path) -> FolderTable:
    """`root/metadata.csv`: a `file_name` column (paths relative to root), an optional `split`
    column (train/test), and condition columns. Missing files, duplicate rows and empty cells are
    DataErrors naming the row."""
    path = root / METADATA_FILE
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: cannot read it ({err})") from None
    if not rows or FILE_COLUMN not in rows[0]:
        raise DataError(f"{path}: no {FILE_COLUMN!r} column in the header (Hugging Face imagefolder convention)")
    header, body = [name.strip() for name in rows[0]], [row for row in rows[1:] if any(cell.strip() for cell in row)]
    if not body:
        raise DataError(f"{path}: lists no images")
    seen: dict[str, int] = {}
    cells: dict[str, list[str]] = {name: [] for name in header}
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {number} has {len(row)} fields, the header {len(header)}")
        values = dict(zip(header, (cell.strip() for cell in row)))
        name = values[FILE_COLUMN]
        if name in seen:
            raise DataError(f"{path}: line {number} repeats {name!r} (first on line {seen[name]}); list each image once")
        seen[name] = number
        if not _is_image(root / name):
            what = "missing" if not (root / name).exists() else f"not a {'/'.join(IMAGE_SUFFIXES)} file"
            raise DataError(f"{path}: line {number} names {name!r}, which is {what}")
        for column, cell in values.items():
            if cell == "" and column != FILE_COLUMN:
                raise DataError(f"{path}: line {number} has no value in column {column!r}")
            cells[column].append(cell)
    split = cells.pop(SPLIT_COLUMN, None)
    if split is not None and not set(split) <= set(SPLITS):
        bad = sorted(set(split) - set(SPLITS))[0]
        raise DataError(f"{path}: column {SPLIT_COLUMN!r} holds {bad!r}; use train or test")
    files = cells.pop(FILE_COLUMN)
    return FolderTable(root, files, cells, split, str(path))


def read_folder(root: Path) -> FolderTable:
    return read_metadata(root) if (root / METADATA_FILE).is_file() else read_class_folders(root)


# ------------------------------------------------------------------------------------------
# Decoding


def _decode(path: Path, size: tuple[int, int] | None):
    """One image as a uint8 array H×W×{1,3}: alpha composited onto white, resized if asked."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err})") from None
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        grey = image.mode.startswith("L")
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("L" if grey else "RGB")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "I", "I;16", "F") else "RGB")
    return as_array(image, size)


def as_array(image, size: tuple[int, int] | None) -> np.ndarray:
    """A grey or RGB Pillow image as uint8 H×W×{1,3}, resized to `size` (Lanczos, antialiased)."""
    from PIL import Image

    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., np.newaxis] if array.ndim == 2 else array


def _fingerprint(root: Path, files: Sequence[str], size: tuple[int, int] | None) -> str:
    digest = hashlib.sha256(f"v{DECODER_VERSION} size={size}".encode())
    for name in files:
        digest.update(name.encode() + b"\0")
        try:
            digest.update(hashlib.sha256((root / name).read_bytes()).digest())
        except OSError as err:
            raise DataError(f"{root / name}: cannot read it ({err.strerror or err})") from None
    return digest.hexdigest()[:16]


def decode_images(root: Path, files: Sequence[str], size: tuple[int, int] | None = None) -> np.ndarray:
    """Every image as one uint8 array [N, H, W, C], from the cache when these exact files were
    decoded before (the key hashes their names and bytes, and the size)."""
    cached = cache_dir() / "images" / f"{_fingerprint(root, files, size)}.npy"
    if cached.is_file():
        try:
            return np.load(cached, allow_pickle=False)
        except (OSError, ValueError):
            pass  # a damaged cache entry is decoded again and replaced
    print(f"Decoding {len(files)} images from {root} (once; cached in {cached.parent})", flush=True)
    arrays = [_decode(root / name, size) for name in files]
    first = arrays[0].shape[:2]
    for name, array in zip(files, arrays):
        if array.shape[:2] != first:
            raise DataError(
                f"{root / name} is {array.shape[0]}×{array.shape[1]} but {root / files[0]} is {first[0]}×{first[1]}; "
                f"pass `image_size` HxW to resize them all")
    if any(array.shape[2] == 3 for array in arrays):
        arrays = [np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array for array in arrays]
    images = np.stack(arrays)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cached) as tmp:
            buffer = io.BytesIO()
            np.save(buffer, images, allow_pickle=False)
            Path(tmp).write_bytes(buffer.getvalue())
    except OSError as err:  # an unwritable cache costs time, not correctness
        print(f"Could not cache the decoded images in {cached.parent}: {err.strerror or err}", flush=True)
    return images
