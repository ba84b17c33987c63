"""The Keras way from Python: your own networks and arrays, `fit`, `.keras` files and
`export_saved_model`, as the user guide shows them."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

import keras_cvae
from conftest import REPO_ROOT, assert_keras_round_trip
from keras_cvae import CVAE, export_saved_model, networks

SHAPE, CLASSES, LATENT = (32, 32, 3), 4, 6


def own_networks(latent_dim: int = LATENT, conditional: bool = True, out_channels: int = 3):
    """A small functional encoder and decoder of the documented contract, for 32×32×3 images."""
    image = keras.Input(SHAPE, name="image")
    condition = keras.Input((CLASSES,), name="condition")
    h = layers.Conv2D(8, 3, strides=2, activation="relu")(image)
    h = layers.Flatten()(h)
    if conditional:
        h = layers.Concatenate()([h, condition])
    h = layers.Dense(32, activation="relu")(h)
    encoder = keras.Model([image, condition] if conditional else image,
                          [layers.Dense(latent_dim)(h), layers.Dense(latent_dim)(h)], name="my_encoder")
    z = keras.Input((latent_dim,), name="z")
    condition = keras.Input((CLASSES,), name="condition")
    h = layers.Concatenate()([z, condition]) if conditional else z
    h = layers.Dense(8 * 8 * 8, activation="relu")(h)
    h = layers.Reshape((8, 8, 8))(h)
    h = layers.Conv2DTranspose(8, 3, strides=4, padding="same", activation="relu")(h)
    logits = layers.Conv2D(out_channels, 3, padding="same")(h)
    decoder = keras.Model([z, condition] if conditional else z, logits, name="my_decoder")
    return encoder, decoder


def images_and_labels(count: int = 48, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *SHAPE), dtype=np.uint8), rng.integers(0, CLASSES, count)


def saved_model_cli() -> list[str]:
    cli = REPO_ROOT / ".venv" / "bin" / "saved_model_cli"
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


def test_own_networks_fit_round_trip_export_and_serve(tmp_path):
    encoder, decoder = own_networks()
    model = CVAE(image_shape=SHAPE, num_classes=CLASSES, latent_dim=LATENT, encoder=encoder, decoder=decoder, seed=1)
    x, y = images_and_labels()
    history = model.compile(optimizer="adam") or model.fit(x, y, batch_size=16, epochs=1, verbose=0,
                                                           validation_data=images_and_labels(16, seed=1))
    assert {"loss", "elbo", "val_elbo"} <= set(history.history)
    assert model.encoder.name == "my_encoder" and model.decoder.name == "my_decoder"

    def same_generate_output(loaded, original):
        assert loaded.encoder.name == "my_encoder"
        np.testing.assert_allclose(loaded.generate([0, 1, 2, 3], seed=5), original.generate([0, 1, 2, 3], seed=5),
                                   atol=1e-6)

    assert_keras_round_trip(model, x, y, tmp_path / "own.keras", same_generate_output)

    version_dir = export_saved_model(model, tmp_path / "exports")
    assert version_dir == tmp_path / "exports" / "1"
    np.save(tmp_path / "labels.npy", np.array([0, 3], np.int32))
    served = subprocess.run(
        [*saved_model_cli(), "run", "--dir", str(version_dir), "--tag_set", "serve", "--signature_def",
         "serving_default", "--inputs", f"labels={tmp_path / 'labels.npy'}", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-2000:]
    images = np.load(tmp_path / "out" / "images.npy")
    assert images.shape == (2, *SHAPE) and 0.0 <= images.min() and images.max() <= 1.0


def test_plain_vae_fits_images_alone_from_arrays_and_datasets():
    x, _ = images_and_labels()
    encoder, decoder = own_networks(conditional=False)
    for model in (CVAE(image_shape=SHAPE, conditional=False, latent_dim=LATENT, hidden_units=(16,)),
                  CVAE(image_shape=SHAPE, conditional=False, latent_dim=LATENT, encoder=encoder, decoder=decoder)):
        model.compile(optimizer="adam")
        model.fit(x, batch_size=16, epochs=1, verbose=0)
        model.fit(tf.data.Dataset.from_tensor_slices(x.astype("float32") / 255.0).batch(16), epochs=1, verbose=0)
        metrics = model.evaluate(x, verbose=0, return_dict=True)
        assert set(metrics) == {"loss", "reconstruction_loss", "kl_loss", "elbo"}
        assert metrics["elbo"] == pytest.approx(-metrics["loss"]) and metrics["kl_loss"] > 0
        assert model.generate(3, seed=0).shape == (3, *SHAPE)


def test_fit_takes_float_images_condition_rows_and_datasets_of_pairs():
    from keras_cvae.conditions import CONTINUOUS, Condition, class_labels

    x, y = images_and_labels()
    rows = np.stack([y, np.linspace(-1.0, 3.0, len(y))], axis=1).astype("float32")  # a class and a value
    conditions = [class_labels([str(i) for i in range(CLASSES)]),
                  Condition("size", CONTINUOUS, mean=1.0, std=1.2)]
    model = CVAE(image_shape=SHAPE, conditions=conditions, latent_dim=LATENT, hidden_units=(16,))
    model.compile(optimizer="adam")
    model.fit(x.astype("float32") / 255.0, rows, batch_size=16, epochs=1, verbose=0)
    model.fit(tf.data.Dataset.from_tensor_slices((x, rows)).batch(16), epochs=1, verbose=0)
    metrics = model.evaluate(x, rows, verbose=0, return_dict=True)
    assert np.isfinite(metrics["elbo"])
    # uint8 images are divided by 255 inside the step; float images are taken as they are.
    for images in (x[:4], x[:4].astype("float32") / 255.0):
        unpacked, labels = model.unpack((tf.constant(images), tf.constant(rows[:4])))
        np.testing.assert_allclose(unpacked, x[:4] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(labels, rows[:4])


def test_a_conditional_model_given_no_conditions_says_so():
    x, _ = images_and_labels(16)
    model = CVAE(image_shape=SHAPE, num_classes=CLASSES, latent_dim=LATENT, hidden_units=(16,))
    model.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"CVAE is conditional: pass its conditions, fit\(x, y\)"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="takes the conditions"):
        model.generate(3)


@pytest.mark.parametrize(
    ("networks_kwargs", "model_kwargs", "message"),
    [({"latent_dim": 5}, {}, r"^encoder must return \[z_mean, z_log_var\], each \(N, latent_dim\): "
                             r"expected \[\(1, 6\), \(1, 6\)\] for one input, got \[\(1, 5\), \(1, 5\)\]$"),
     ({"out_channels": 1}, {}, r"^decoder must return \(N, H, W, C × outputs_per_channel\): "
                               r"expected \[\(1, 32, 32, 3\)\] for one input, got \[\(1, 32, 32, 1\)\]$"),
     ({}, {"likelihood": "discretized_logistic"}, r"expected \[\(1, 32, 32, 6\)\] for one input, got \[\(1, 32, 32, 3\)\]"),
     ({}, {"num_classes": 7}, r"^encoder cannot take \[images, condition_vector\] of shapes \(1, 32, 32, 3\), \(1, 7\)"),
     ({}, {"image_shape": (28, 28, 1)}, r"^encoder cannot take \[images, condition_vector\] of shapes \(1, 28, 28, 1\)")],
)
def test_a_network_that_does_not_fit_is_refused_in_one_line(networks_kwargs, model_kwargs, message):
    encoder, decoder = own_networks(**networks_kwargs)
    arguments = {"image_shape": SHAPE, "num_classes": CLASSES, "latent_dim": LATENT} | model_kwargs
    with pytest.raises(ValueError, match=message) as err:
        CVAE(encoder=encoder, decoder=decoder, **arguments)
    assert "\n" not in str(err.value)


def test_encoder_without_decoder_is_refused():
    encoder, _ = own_networks()
    with pytest.raises(ValueError, match="give both encoder and decoder, or neither"):
        CVAE(image_shape=SHAPE, num_classes=CLASSES, latent_dim=LATENT, encoder=encoder)


def test_the_built_in_builders_are_the_networks_arch_builds():
    encoder, decoder = networks.mlp(SHAPE, condition_width=CLASSES, latent_dim=LATENT, hidden_units=(16,))
    given = CVAE(image_shape=SHAPE, num_classes=CLASSES, latent_dim=LATENT, encoder=encoder, decoder=decoder)
    built = CVAE(image_shape=SHAPE, num_classes=CLASSES, latent_dim=LATENT, hidden_units=(16,))
    assert [w.shape for w in given.weights] == [w.shape for w in built.weights]
    assert [layer.name for layer in given.encoder.layers] == [layer.name for layer in built.encoder.layers]
    assert "encoder" in given.get_config() and "encoder" not in built.get_config()


def test_the_public_names_resolve_and_import_lazily():
    for name in keras_cvae.__all__:
        assert getattr(keras_cvae, name) is not None, name
    done = subprocess.run([sys.executable, "-c", "import sys, keras_cvae; keras_cvae.RunConfig; "
                                                  "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"],
                          capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
