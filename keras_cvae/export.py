"""SavedModel export for TF Serving: `<export_root>/<version>/` with four signatures.

Signatures (dynamic batch, float32 images in [0, 1] shaped N×H×W×C, int32 labels):
  serving_default: labels → images (fresh noise inside the graph)
  decode:          z, labels → images
  encode:          images, labels → z_mean, z_log_var
  reconstruct:     images, labels → images
  log_likelihood:  images, labels, z → log_likelihood (log p(x | z, c) per image, for evaluation)

An image-completion model (StructuredCVAE) gets `complete` instead, also as serving_default:
  complete:        images (whole or masked) → images (visible pixels kept, the rest one sample)

The signatures declare these shapes, and since a signature call does not enforce a declared
shape at run time, wrong image or z shapes, out-of-range labels and batch mismatches also fail
in the graph through tf.debugging asserts whose messages name the problem. No Python-function ops, so TF Serving
(CPU or GPU) runs it, and `tf.saved_model.load` loads it without keras_cvae installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import tensorflow as tf

from keras_cvae.atomic import atomic_directory, publish_numbered_directory
from keras_cvae.inference import CLASS_NAMES_ASSET, CONFIG_ASSET
from keras_cvae.models.base import VariationalModel
from keras_cvae.models.completion import StructuredCVAE
from keras_cvae.models.cvae import CVAE

SIGNATURES = ("serving_default", "decode", "encode", "reconstruct", "log_likelihood")
COMPLETION_SIGNATURES = ("serving_default", "complete")


def next_version(export_root: str | Path) -> int:
    """1 + the largest integer version dir under `export_root` (1 when there is none)."""
    root = Path(export_root)
    versions = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    return max(versions, default=0) + 1


def _checked_labels(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    message = f"labels must be integers in [0, {num_classes}) (0 to {num_classes - 1})"
    checks = [
        tf.debugging.assert_non_negative(labels, message=message),
        tf.debugging.assert_less(labels, tf.constant(num_classes, tf.int32), message=message),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def _shape_check(tensor: tf.Tensor, name: str, item_shape: tuple[int, ...]) -> tf.Operation:
    """An assert that `tensor` is N × `item_shape`, its message naming the expected shape."""
    shape = "×".join(["N", *map(str, item_shape)])
    return tf.debugging.assert_equal(
        tf.shape(tensor)[1:], tf.constant(item_shape, tf.int32), message=f"{name} must have shape {shape}"
    )


def _checked(tensor: tf.Tensor, labels: tf.Tensor, name: str, item_shape: tuple[int, ...]) -> tf.Tensor:
    """`tensor` after asserting its per-item shape and that its batch matches `labels`'."""
    checks = [
        _shape_check(tensor, name, item_shape),
        tf.debugging.assert_equal(
            tf.shape(tensor)[0], tf.shape(labels)[0],
            message=f"{name} and labels must have the same batch size",
        ),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(tensor)


def build_archive(model: CVAE) -> keras.export.ExportArchive:
    """An ExportArchive tracking `model`, with the signatures above."""
    image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
    labels_spec = tf.TensorSpec([None], tf.int32, name="labels")
    z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
    k = model.num_classes
    image_shape, z_shape = model.image_shape, (model.latent_dim,)

    def serving_default(labels):
        labels = _checked_labels(labels, k)
        z = tf.random.normal([tf.shape(labels)[0], model.latent_dim])
        return {"images": model.decode(z, labels)}

    def decode(z, labels):
        labels = _checked_labels(labels, k)
        return {"images": model.decode(_checked(z, labels, "z", z_shape), labels)}

    def encode(images, labels):
        labels = _checked_labels(labels, k)
        z_mean, z_log_var = model.encode(_checked(images, labels, "images", image_shape), labels)
        return {"z_mean": z_mean, "z_log_var": z_log_var}

    def reconstruct(images, labels):
        labels = _checked_labels(labels, k)
        return {"images": model((_checked(images, labels, "images", image_shape), labels))}

    def log_likelihood(images, labels, z):
        labels = _checked_labels(labels, k)
        images = _checked(images, labels, "images", image_shape)
        z = _checked(z, labels, "z", z_shape)
        return {"log_likelihood": model.log_likelihood(images, labels, z)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serving_default, input_signature=[labels_spec])
    archive.add_endpoint("decode", decode, input_signature=[z_spec, labels_spec])
    archive.add_endpoint("encode", encode, input_signature=[image_spec, labels_spec])
    archive.add_endpoint("reconstruct", reconstruct, input_signature=[image_spec, labels_spec])
    archive.add_endpoint("log_likelihood", log_likelihood, input_signature=[image_spec, labels_spec, z_spec])
    return archive


def build_completion_archive(model: StructuredCVAE) -> keras.export.ExportArchive:
    """An ExportArchive with `complete` (and the same function as serving_default)."""
    image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")

    def complete(images):
        with tf.control_dependencies([_shape_check(images, "images", model.image_shape)]):
            images = tf.identity(images)
        eps = tf.random.normal([tf.shape(images)[0], model.latent_dim])
        return {"images": model.complete(images, eps=eps)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name in COMPLETION_SIGNATURES:
        archive.add_endpoint(name, complete, input_signature=[image_spec])
    return archive


def export_saved_model(
    model: VariationalModel, export_root: str | Path, version: int | None = None, dataset: str | None = None
) -> Path:
    """Write `model` as `<export_root>/<version>/`, atomically, and return the version dir.

    The SavedModel is written into a hidden directory beside the version dir and renamed into
    place only when complete, so TF Serving never sees, and an interruption never leaves, a
    partial version. Without `version` it takes the next free number at the moment of the
    rename, so concurrent exports to one root each get their own. `assets/` carries the
    model's config (and `dataset`) and the class names.
    """
    root = Path(export_root)
    model = model.float32_copy()  # a mixed-precision model is served in float32
    archive = build_completion_archive(model) if isinstance(model, StructuredCVAE) else build_archive(model)

    def write(directory: Path) -> None:
        archive.write_out(str(directory), verbose=False)
        assets = directory / "assets"
        assets.mkdir(exist_ok=True)
        config = {"model": model.get_config(), "dataset": dataset}
        (assets / CONFIG_ASSET).write_text(json.dumps(config, indent=2) + "\n")
        (assets / CLASS_NAMES_ASSET).write_text("\n".join(model.class_names) + "\n")

    if version is None:
        return publish_numbered_directory(root, write, first=next_version(root))
    target = root / str(int(version))
    if target.exists():
        raise FileExistsError(f"export version {target} already exists; pick another --version")
    with atomic_directory(target) as tmp:
        write(tmp)
    return target
