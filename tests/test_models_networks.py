"""Shapes of every network, and that the condition is concatenated first."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cvae.networks import build_decoder, build_encoder, conv_filters

IMAGE_SHAPE = (28, 28, 1)


@pytest.mark.parametrize("arch,hidden", [("mlp", (400,)), ("mlp", (512, 256)), ("conv", (128,)), ("resnet", (32,))])
@pytest.mark.parametrize("num_conditions", [10, 0])
def test_shapes(arch, hidden, num_conditions):
    encoder = build_encoder(IMAGE_SHAPE, num_conditions, 7, arch, hidden)
    decoder = build_decoder(IMAGE_SHAPE, num_conditions, 7, arch, hidden)
    assert encoder.name == "encoder" and decoder.name == "decoder"
    images = np.random.rand(5, *IMAGE_SHAPE).astype("float32")
    z = np.random.randn(5, 7).astype("float32")
    onehot = np.eye(10, dtype="float32")[:5]
    enc_in = [images, onehot] if num_conditions else [images]
    dec_in = [z, onehot] if num_conditions else [z]
    z_mean, z_log_var = encoder(enc_in)
    assert z_mean.shape == (5, 7) and z_log_var.shape == (5, 7)
    assert decoder(dec_in).shape == (5, *IMAGE_SHAPE)
    assert len(encoder.inputs) == len(decoder.inputs) == (2 if num_conditions else 1)


def test_mlp_concatenates_image_and_one_hot():
    encoder = build_encoder(IMAGE_SHAPE, 10, 4, "mlp", (32,))
    decoder = build_decoder(IMAGE_SHAPE, 10, 4, "mlp", (32,))
    assert encoder.get_layer("image_and_condition").output.shape[-1] == 784 + 10
    assert decoder.get_layer("z_and_condition").output.shape[-1] == 4 + 10
    assert encoder.get_layer("hidden_0").kernel.shape == (794, 32)


def test_conv_adds_condition_as_channels():
    encoder = build_encoder(IMAGE_SHAPE, 10, 4, "conv", (16,))
    assert tuple(encoder.get_layer("image_and_condition").output.shape[1:]) == (28, 28, 11)
    # Each condition plane is constant: the one-hot value tiled over the image.
    planes = encoder.get_layer("condition_planes")
    probe = keras.Model(encoder.inputs, planes.output)
    out = np.asarray(probe([np.zeros((1, 28, 28, 1), "float32"), np.eye(10, dtype="float32")[[3]]]))
    assert out[0, :, :, 3].min() == 1.0 and np.delete(out[0], 3, axis=-1).max() == 0.0


@pytest.mark.parametrize("shape,filters", [
    ((28, 28, 1), (32, 64)),          # 28 → 14 → 7, as keras-io's VAE
    ((32, 32, 3), (32, 64)),          # 32 → 16 → 8
    ((64, 64, 3), (32, 64, 128)),     # 64 → 32 → 16 → 8
    ((30, 45, 3), (32, 64)),          # odd sides round up on the way down, are cropped on the way up
    ((6, 6, 1), (32,)),               # at least one layer
])
@pytest.mark.parametrize("arch", ["conv", "resnet"])
def test_conv_depth_follows_the_image_size(shape, filters, arch):
    assert conv_filters(*shape[:2]) == filters
    encoder = build_encoder(shape, 3, 4, arch, (16,))
    decoder = build_decoder(shape, 3, 4, arch, (16,), outputs_per_channel=2)
    assert [layer.filters for layer in encoder.layers if layer.name.startswith("conv_")] == list(filters)
    z_mean, _ = encoder([np.zeros((2, *shape), "float32"), np.zeros((2, 3), "float32")])
    assert z_mean.shape == (2, 4)
    assert decoder([np.zeros((2, 4), "float32"), np.zeros((2, 3), "float32")]).shape == (2, *shape[:2], 2 * shape[2])


@pytest.mark.parametrize(("builder", "arch"), [(build_encoder, "mlp"), (build_decoder, "mlp"), (build_decoder, "conv")])
def test_condition_scale_is_a_reparameterisation(builder, arch):
    """Scaling the one-hot by s equals scaling the first layer's condition rows by s: same model
    family, only Adam's step size on the label path changes."""
    scaled = builder(IMAGE_SHAPE, 10, 4, arch, (32,), condition_scale=10.0)
    plain = builder(IMAGE_SHAPE, 10, 4, arch, (32,))
    plain.set_weights(scaled.get_weights())
    kernel, bias = plain.get_layer("hidden_0").get_weights()
    kernel[-10:] *= 10.0  # the condition comes last in the concatenation
    plain.get_layer("hidden_0").set_weights([kernel, bias])
    first = np.random.rand(6, *IMAGE_SHAPE) if builder is build_encoder else np.random.randn(6, 4)
    inputs = [first.astype("float32"), np.eye(10, dtype="float32")[[0, 1, 2, 7, 8, 9]]]
    for a, b in zip(keras.tree.flatten(scaled(inputs)), keras.tree.flatten(plain(inputs))):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert scaled.get_layer("condition_scale").scale == 10.0


def test_conv_encoder_leaves_its_condition_planes_unscaled():
    """The conv encoder tiles the one-hot into planes beside the pixels and does not scale them
    (planes of 10 beside pixels in [0, 1] unbalance the first convolution): with the same
    weights it is the unscaled network exactly."""
    scaled = build_encoder(IMAGE_SHAPE, 10, 4, "conv", (32,), condition_scale=10.0)
    plain = build_encoder(IMAGE_SHAPE, 10, 4, "conv", (32,))
    assert "condition_scale" not in [layer.name for layer in scaled.layers]
    plain.set_weights(scaled.get_weights())
    inputs = [np.random.rand(3, *IMAGE_SHAPE).astype("float32"), np.eye(10, dtype="float32")[[0, 4, 9]]]
    for a, b in zip(keras.tree.flatten(scaled(inputs)), keras.tree.flatten(plain(inputs))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("activation", ["relu", "softplus", "gated"])
def test_hidden_layers_compute_their_activation(activation):
    from keras_cvae.networks import mlp

    encoder, decoder = mlp(IMAGE_SHAPE, condition_width=0, latent_dim=3, hidden_units=(5,), activation=activation)
    x = np.random.default_rng(0).random((4, *IMAGE_SHAPE)).astype("float32")
    flat = x.reshape(4, -1).astype("float64")

    def affine(name):
        kernel, bias = (w.astype("float64") for w in encoder.get_layer(name).get_weights())
        return flat @ kernel + bias

    if activation == "gated":  # h = (W x + b) ⊙ σ(V x + c)
        expected = affine("hidden_0_linear") / (1.0 + np.exp(-affine("hidden_0_gate")))
    else:
        pre = affine("hidden_0")
        expected = np.maximum(pre, 0.0) if activation == "relu" else np.log1p(np.exp(pre))
    hidden = keras.Model(encoder.inputs, encoder.get_layer("hidden_0").output)
    np.testing.assert_allclose(hidden(x).numpy(), expected, rtol=1e-4, atol=1e-5)
    assert decoder(np.zeros((2, 3), "float32")).shape == (2, *IMAGE_SHAPE)


def test_an_unknown_activation_is_refused_with_the_choices():
    from keras_cvae.networks import mlp

    with pytest.raises(ValueError, match="activation must be one of relu, gated, softplus, got 'tanh'"):
        mlp(activation="tanh")


def test_the_architectures_setting_lists_the_built_in_networks():
    from keras_cvae import config
    from keras_cvae.networks import NETWORKS

    assert tuple(NETWORKS) == config.ARCHITECTURES
    assert set(config.DEFAULT_HIDDEN_UNITS) == set(NETWORKS)


def test_the_activation_and_initializer_settings_list_the_networks_own():
    from keras_cvae import config
    from keras_cvae.networks import ACTIVATIONS, INITIALIZERS

    assert ACTIVATIONS == config.ACTIVATIONS and tuple(INITIALIZERS) == config.INITIALIZERS


def test_resnet_has_a_residual_cell_at_every_resolution():
    shape = (32, 32, 3)  # 32 → 16 → 8
    encoder = build_encoder(shape, 3, 4, "resnet", (16,))
    decoder = build_decoder(shape, 3, 4, "resnet", (16,))

    def sides(model):
        return sorted(layer.output.shape[1] for layer in model.layers
                      if layer.name.startswith("cell_") and layer.name.count("_") == 1)

    assert sides(encoder) == [8, 16] and sides(decoder) == [8, 16]


def _cell_model(channels: int = 8) -> keras.Model:
    from keras_cvae.networks import residual_cell

    x = keras.Input((6, 6, channels))
    return keras.Model(x, residual_cell(x, "cell"))


def test_residual_cell_is_skip_plus_a_tenth_of_its_branch():
    """x + 0.1 · branch(x): with the last convolution zeroed the cell is the identity, and the
    branch enters scaled by 0.1."""
    cell = _cell_model()
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 8)).astype("float32")
    branch = keras.Model(cell.inputs, cell.get_layer("cell_gate").output)
    np.testing.assert_allclose(cell(x).numpy(), x + 0.1 * branch(x).numpy(), rtol=1e-5, atol=1e-6)
    last = cell.get_layer("cell_conv_1")
    last.set_weights([np.zeros_like(w) for w in last.get_weights()])
    np.testing.assert_allclose(cell(x).numpy(), x, atol=1e-6)


def test_residual_cell_computes_the_same_for_an_image_alone_or_in_a_batch():
    """Group normalisation: training and inference agree, and no image depends on its batch."""
    cell = _cell_model()
    batch = np.random.default_rng(1).normal(size=(5, 6, 6, 8)).astype("float32")
    alone = cell(batch[:1], training=False).numpy()
    for training in (True, False):
        np.testing.assert_allclose(cell(batch, training=training).numpy()[:1], alone, rtol=1e-5, atol=1e-5)


def test_a_resnet_cvae_survives_the_keras_round_trip(tmp_path):
    from conftest import assert_keras_round_trip
    from keras_cvae import CVAE

    model = CVAE(image_shape=(16, 16, 3), num_classes=3, latent_dim=4, arch="resnet", hidden_units=(8,),
                 likelihood="discretized_logistic", seed=0)
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (16, 16, 16, 3)).astype("uint8"), rng.integers(0, 3, 16)
    z = rng.standard_normal((4, 4)).astype("float32")

    def same(loaded, original):
        assert loaded.arch == "resnet"
        for saved, restored in zip(original.weights, loaded.weights, strict=True):
            np.testing.assert_array_equal(saved.numpy(), restored.numpy())
        unit = images[:4].astype("float32") / 255.0
        np.testing.assert_allclose(loaded.log_likelihood(unit, labels[:4], z),
                                   original.log_likelihood(unit, labels[:4], z), rtol=1e-5)

    assert_keras_round_trip(model, images, labels, tmp_path / "resnet.keras", same)
