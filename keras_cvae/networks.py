"""Functional-API builders for the encoder q(z | x, c) and the decoder p(x | z, c).

`mlp(...)`, `conv(...)` and `resnet(...)` return a matching (encoder, decoder) pair that
`CVAE(encoder=..., decoder=...)` accepts; `CVAE(arch="mlp")` builds the same pair itself. Both
networks take the condition as a second input and concatenate it first: the encoder joins the
image (flattened for `mlp`, as extra channels for `conv` and `resnet`) with the condition vector
(one-hot groups and standardised values), the decoder joins z with it. The convolutional
networks' depth follows the image size (`conv_filters`); `resnet` adds NVAE's residual cell
(`residual_cell`) at every resolution. With `num_conditions=0` they are a plain VAE's networks. No Lambda layers, so the
models load with `safe_mode=True`.

`condition_scale` multiplies the condition before a dense concatenation (not the conv encoder's
condition planes). The model family is the same (the first layer's weights absorb any scale), but
Adam moves every weight by about the learning rate per step, so a one-hot input of 1 next to 784
pixels or 20 unit-variance z's is learnt slowly, and the encoder puts the class into z instead.
The decoder then follows z rather than the label. ONE_HOT_SCALE is what the class-conditional CVAE
uses (its measured effect: benchmarks/results/condition_scale.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import layers

FIRST_FILTERS, MAX_FILTERS = 32, 256
SMALLEST_SIDE = 8  # the conv encoder halves the image until its shorter side is at most this
ONE_HOT_SCALE = 10.0


ACTIVATIONS = ("relu", "gated", "softplus")
# The dense layers' weight initialisers: Keras's default, or He et al.'s normal with std
# sqrt(2 / fan_in), untruncated, as the VampPrior and Exemplar VAE code initialise every layer.
INITIALIZERS = {
    "glorot_uniform": lambda: "glorot_uniform",
    "he_normal": lambda: keras.initializers.VarianceScaling(2.0, mode="fan_in", distribution="untruncated_normal"),
}
RESIDUAL_SCALE = 0.1  # NVAE scales each cell's branch before adding it to the skip path
SQUEEZE_RATIO, MIN_SQUEEZE = 16, 4  # the squeeze-and-excitation bottleneck: channels / 16, at least 4
MAX_GROUPS = 8


def initializer(name: str):
    """The kernel initializer of the dense layers for an `INITIALIZERS` name."""
    if name not in INITIALIZERS:
        raise ValueError(f"initializer must be one of {', '.join(INITIALIZERS)}, got {name!r}")
    return INITIALIZERS[name]()


def dense(h: keras.KerasTensor, units: int, activation: str, name: str,
          kernel_initializer: str = "glorot_uniform") -> keras.KerasTensor:
    """One hidden dense layer. "gated" is h = (W x + b) ⊙ σ(V x + c), as in VampPrior's networks
    (Tomczak & Welling 2018): two Dense layers and a Multiply, no Lambda."""
    if activation == "gated":
        linear = layers.Dense(units, kernel_initializer=initializer(kernel_initializer), name=f"{name}_linear")(h)
        gate = layers.Dense(units, activation="sigmoid", kernel_initializer=initializer(kernel_initializer),
                            name=f"{name}_gate")(h)
        return layers.Multiply(name=name)([linear, gate])
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return layers.Dense(units, activation=activation, kernel_initializer=initializer(kernel_initializer), name=name)(h)


def conv_filters(height: int, width: int) -> tuple[int, ...]:
    """The conv encoder's stride-2 layers for an image size, as their filter counts: one layer per
    halving until the shorter side is at most SMALLEST_SIDE (28 → 14 → 7: two, as in keras-io's
    VAE; 64 → 32 → 16 → 8: three), filters doubling from 32 up to 256."""
    side, filters = min(height, width), []
    while side > SMALLEST_SIDE or not filters:
        filters.append(min(FIRST_FILTERS * 2 ** len(filters), MAX_FILTERS))
        side = -(-side // 2)
    return tuple(filters)


def residual_cell(h: keras.KerasTensor, name: str) -> keras.KerasTensor:
    """NVAE's residual cell (Vahdat & Kautz 2020, the bottom-up cell of its Fig. 3):
    x + 0.1 · SE(conv3×3(swish(norm(conv3×3(swish(norm(x))))))), at x's width and resolution.

    Group normalisation stands in for NVAE's batch normalisation, so that training and inference
    compute the same function whatever the batch: a single served image, or K draws of z for one
    image in the importance-weighted bound.
    """
    channels = h.shape[-1]
    groups = next(g for g in range(min(MAX_GROUPS, channels), 0, -1) if channels % g == 0)
    branch = h
    for i in (0, 1):
        branch = layers.GroupNormalization(groups=groups, name=f"{name}_norm_{i}")(branch)
        branch = layers.Activation("silu", name=f"{name}_swish_{i}")(branch)
        branch = layers.Conv2D(channels, 3, padding="same", name=f"{name}_conv_{i}")(branch)
    # Squeeze and excitation: a per-channel gate from the channel means.
    squeezed = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(branch)
    squeezed = layers.Conv2D(max(channels // SQUEEZE_RATIO, MIN_SQUEEZE), 1, activation="relu",
                             name=f"{name}_excite_0")(squeezed)
    gate = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_excite_1")(squeezed)
    branch = layers.Multiply(name=f"{name}_gate")([branch, gate])
    branch = layers.Rescaling(RESIDUAL_SCALE, name=f"{name}_scale")(branch)
    return layers.Add(name=name)([h, branch])


def _condition_input(num_conditions: int, scale: float) -> tuple[keras.KerasTensor | None, keras.KerasTensor | None]:
    """The condition input and the tensor the network concatenates (scaled unless `scale` is 1)."""
    if not num_conditions:
        return None, None
    condition = keras.Input((num_conditions,), name="condition")
    if scale == 1.0:
        return condition, condition
    return condition, layers.Rescaling(scale, name="condition_scale")(condition)


def build_encoder(
    image_shape: Sequence[int],
    num_conditions: int,
    latent_dim: int,
    arch: str,
    hidden_units: Sequence[int],
    name: str = "encoder",
    condition_scale: float = 1.0,
    activation: str = "relu",
    kernel_initializer: str = "glorot_uniform",
) -> keras.Model:
    """The encoder: (image, one-hot condition) → (z_mean, z_log_var), each [N, latent_dim].

    The structured-output CVAE reuses it with a flat image part as the condition: as its
    recognition network q(z | x, y, ŷ) and its prior network p(z | x, ŷ).
    """
    image = keras.Input(tuple(image_shape), name="image")
    # The conv encoder's condition planes stay unscaled: constant planes of 10 beside pixels in
    # [0, 1] throw the first conv off balance (benchmarks/results/condition_scale.md).
    condition, scaled = _condition_input(num_conditions, condition_scale if arch == "mlp" else 1.0)
    h = _image_features(image, scaled, arch, hidden_units, activation, kernel_initializer)
    z_mean = layers.Dense(latent_dim, kernel_initializer=initializer(kernel_initializer), name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, kernel_initializer=initializer(kernel_initializer), name="z_log_var")(h)
    inputs = [image, condition] if condition is not None else [image]
    return keras.Model(inputs, [z_mean, z_log_var], name=name)


def _image_features(image: keras.KerasTensor, condition: keras.KerasTensor | None, arch: str,
                    hidden_units: Sequence[int], activation: str = "relu",
                    kernel_initializer: str = "glorot_uniform") -> keras.KerasTensor:
    """The encoders' trunk: the image (flattened for `mlp`; through stride-2 convs for `conv`, the
    condition tiled over the plane as extra channels) joined with the condition, then the hidden
    dense layers."""
    height, width, _ = image.shape[1:]
    if arch == "mlp":
        h = layers.Flatten(name="flatten")(image)
        if condition is not None:
            h = layers.Concatenate(name="image_and_condition")([h, condition])
    elif arch in ("conv", "resnet"):
        h = image
        if condition is not None:
            # Tile the condition vector over the image plane: 1×1×K upsampled to H×W×K.
            planes = layers.Reshape((1, 1, condition.shape[-1]))(condition)
            planes = layers.UpSampling2D(size=(height, width), name="condition_planes")(planes)
            h = layers.Concatenate(name="image_and_condition")([h, planes])
        residual = arch == "resnet"
        for i, filters in enumerate(conv_filters(height, width)):
            h = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"conv_{i}")(h)
            if residual:
                h = residual_cell(h, f"cell_{i}")
        h = layers.Flatten(name="flatten")(h)
    else:
        raise ValueError(f"arch must be one of {', '.join(NETWORKS)}, got {arch!r}")
    for i, units in enumerate(hidden_units):
        h = dense(h, units, activation, f"hidden_{i}", kernel_initializer)
    return h


def build_classifier(image_shape: Sequence[int], num_classes: int, arch: str, hidden_units: Sequence[int],
                     name: str = "classifier", activation: str = "relu",
                     kernel_initializer: str = "glorot_uniform") -> keras.Model:
    """The semi-supervised model's q(y | x): the encoder's trunk without a condition → class logits [N, K]."""
    image = keras.Input(tuple(image_shape), name="image")
    features = _image_features(image, None, arch, hidden_units, activation, kernel_initializer)
    logits = layers.Dense(num_classes, kernel_initializer=initializer(kernel_initializer), name="logits")(features)
    return keras.Model(image, logits, name=name)


def build_decoder(
    image_shape: Sequence[int],
    num_conditions: int,
    latent_dim: int,
    arch: str,
    hidden_units: Sequence[int],
    name: str = "decoder",
    condition_scale: float = 1.0,
    outputs_per_channel: int = 1,
    activation: str = "relu",
    kernel_initializer: str = "glorot_uniform",
) -> keras.Model:
    """The decoder: (z, condition) → logits (Bernoulli) or means' logits, [N, H, W, C·outputs_per_channel].

    The structured-output CVAE reuses it as its generation network p(y | x, z), x flattened.
    """
    height, width, channels = image_shape
    z = keras.Input((latent_dim,), name="z")
    condition, scaled = _condition_input(num_conditions, condition_scale)
    h = layers.Concatenate(name="z_and_condition")([z, scaled]) if condition is not None else z
    for i, units in enumerate(reversed(tuple(hidden_units))):
        h = dense(h, units, activation, f"hidden_{i}", kernel_initializer)
    out_channels = channels * outputs_per_channel
    if arch == "mlp":
        h = layers.Dense(height * width * out_channels, kernel_initializer=initializer(kernel_initializer),
                         name="logits_flat")(h)
        logits = layers.Reshape((height, width, out_channels), name="logits")(h)
    elif arch in ("conv", "resnet"):
        # Mirror the encoder: start from its smallest map, double per layer, crop any excess
        # (an odd side was rounded up on the way down).
        residual = arch == "resnet"
        filters = conv_filters(height, width)
        scale = 2 ** len(filters)
        base = (-(-height // scale), -(-width // scale), filters[-1])
        h = layers.Dense(base[0] * base[1] * base[2], activation="relu",
                         kernel_initializer=initializer(kernel_initializer), name="project")(h)
        h = layers.Reshape(base)(h)
        for i, count in enumerate(reversed(filters)):
            if residual:
                h = residual_cell(h, f"cell_{i}")
            h = layers.Conv2DTranspose(count, 3, strides=2, padding="same", activation="relu", name=f"deconv_{i}")(h)
        excess_h, excess_w = base[0] * scale - height, base[1] * scale - width
        if excess_h or excess_w:
            h = layers.Cropping2D(((excess_h // 2, excess_h - excess_h // 2), (excess_w // 2, excess_w - excess_w // 2)),
                                  name="crop")(h)
        logits = layers.Conv2DTranspose(out_channels, 3, padding="same", name="logits")(h)
    else:
        raise ValueError(f"arch must be one of {', '.join(NETWORKS)}, got {arch!r}")
    inputs = [z, condition] if condition is not None else [z]
    return keras.Model(inputs, logits, name=name)


def mlp(image_shape: Sequence[int] = (28, 28, 1), condition_width: int = 10, latent_dim: int = 20,
        hidden_units: Sequence[int] = (400,), outputs_per_channel: int = 1,
        condition_scale: float = ONE_HOT_SCALE, activation: str = "relu",
        kernel_initializer: str = "glorot_uniform") -> tuple[keras.Model, keras.Model]:
    """The dense (encoder, decoder) pair: the flattened image joined with the condition vector.

    Args:
        image_shape: tuple of 3 ints. H, W, C. Defaults to (28, 28, 1).
        condition_width: int. Length of the condition vector; 0 for a plain VAE's networks
            (one input each). Defaults to 10.
        latent_dim: int. Size of z. Defaults to 20.
        hidden_units: sequence of ints. The encoder's dense layers, mirrored in the decoder.
            Defaults to (400,).
        outputs_per_channel: int. The likelihood's parameters per channel (1 for Bernoulli and
            Gaussian, 2 for the discretized logistic). Defaults to 1.
        condition_scale: float. Factor on the condition vector before it is concatenated.
            Defaults to ONE_HOT_SCALE.
        activation: str. The hidden layers' activation: "relu", "softplus" or "gated" (see
            `dense`). Defaults to "relu".
        kernel_initializer: str. The dense layers' weights: "glorot_uniform" or "he_normal"
            (`INITIALIZERS`). Defaults to "glorot_uniform".

    Example:
        >>> encoder, decoder = mlp((32, 32, 3), condition_width=5, latent_dim=16)
        >>> model = CVAE(image_shape=(32, 32, 3), num_classes=5, latent_dim=16, encoder=encoder, decoder=decoder)
    """
    return _pair(image_shape, condition_width, latent_dim, "mlp", hidden_units, outputs_per_channel, condition_scale,
                 activation, kernel_initializer)


def conv(image_shape: Sequence[int] = (28, 28, 1), condition_width: int = 10, latent_dim: int = 20,
         hidden_units: Sequence[int] = (128,), outputs_per_channel: int = 1,
         condition_scale: float = ONE_HOT_SCALE, activation: str = "relu",
        kernel_initializer: str = "glorot_uniform") -> tuple[keras.Model, keras.Model]:
    """The convolutional (encoder, decoder) pair: stride-2 convolutions (`conv_filters`) with the
    condition tiled over the image as extra channels, transposed convolutions back. Arguments as
    `mlp`'s; `condition_scale` applies to the dense concatenations only, `activation` to the
    dense hidden layers (the convolutions are ReLU)."""
    return _pair(image_shape, condition_width, latent_dim, "conv", hidden_units, outputs_per_channel, condition_scale,
                 activation, kernel_initializer)


def resnet(image_shape: Sequence[int] = (32, 32, 3), condition_width: int = 10, latent_dim: int = 20,
           hidden_units: Sequence[int] = (128,), outputs_per_channel: int = 1,
           condition_scale: float = ONE_HOT_SCALE, activation: str = "relu",
        kernel_initializer: str = "glorot_uniform") -> tuple[keras.Model, keras.Model]:
    """The residual (encoder, decoder) pair for colour images of 32–64 px: `conv`'s stride-2
    convolutions and transposed convolutions, with one `residual_cell` (NVAE's) after each
    downsampling in the encoder and before each upsampling in the decoder. None at full
    resolution: there one cell costs as much as the whole `conv` pair. Arguments as `conv`'s."""
    return _pair(image_shape, condition_width, latent_dim, "resnet", hidden_units, outputs_per_channel,
                 condition_scale, activation, kernel_initializer)


def _pair(image_shape: Sequence[int], condition_width: int, latent_dim: int, arch: str,
          hidden_units: Sequence[int], outputs_per_channel: int, condition_scale: float,
          activation: str, kernel_initializer: str = "glorot_uniform") -> tuple[keras.Model, keras.Model]:
    args = (tuple(image_shape), int(condition_width), int(latent_dim), arch, tuple(hidden_units))
    return (build_encoder(*args, condition_scale=condition_scale, activation=activation,
                          kernel_initializer=kernel_initializer),
            build_decoder(*args, condition_scale=condition_scale, outputs_per_channel=outputs_per_channel,
                          kernel_initializer=kernel_initializer,
                          activation=activation))


NETWORKS = {"mlp": mlp, "conv": conv, "resnet": resnet}  # the built-in pairs by `arch` name


def build_baseline(image_shape: Sequence[int], hidden_units: Sequence[int]) -> keras.Model:
    """The structured-output CVAE's deterministic baseline: masked image x → logits of ŷ, [N, H, W, C]."""
    image = keras.Input(tuple(image_shape), name="masked_image")
    h = layers.Flatten(name="flatten")(image)
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
    h = layers.Dense(int(np.prod(image_shape)), name="logits_flat")(h)
    return keras.Model(image, layers.Reshape(tuple(image_shape), name="logits")(h), name="baseline")
