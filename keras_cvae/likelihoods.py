"""p(x | z, c) per pixel: what turns the decoder's raw outputs into a distribution over images.

Each likelihood is a Keras layer that owns how many decoder outputs it takes per image channel
(`parameters_per_channel`), any weights of its own, its log-probability of images, the mean
image and samples. The model asks `LIKELIHOODS[name](image_shape)` for it; adding a likelihood
means one class here and one entry in LIKELIHOODS (its name is also a `--likelihood` choice,
`config.LIKELIHOODS`, which a test holds equal to this registry).

Reductions: `pixel_log_prob` is per pixel and channel, [N, H, W, C]; `log_prob` sums it over
H, W and C, [N], in nats. `log_prob(..., fused=True)` asks for a form compiled with XLA where a
likelihood has one (Bernoulli): the importance-weighted evaluation's hot path on a CPU. Exports
never use it, since TF Serving runs SavedModels without XLA.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

# The Gaussian's per-pixel σ = MIN_PIXEL_SCALE + softplus(raw): a floor keeps the density of
# pixels that are exactly 0 or 1 from growing without bound.
MIN_PIXEL_SCALE = 0.01
# The discretized logistic's scale, in pixel units (of 255): at least MIN, exp(raw) times the
# initial scale, at most MAX. An untrained decoder misses pixels by ~100 levels; starting at a scale
# of 16 keeps the first losses (and the KL they drive) in hundreds of nats per image, not 10⁵.
MIN_LOGISTIC_SCALE, INITIAL_LOGISTIC_SCALE, MAX_LOGISTIC_SCALE = 0.01, 16.0, 256.0


class PixelLikelihood(keras.layers.Layer):
    """The interface: independent pixels given the decoder's outputs [N, H, W, C × parameters].

    Args:
        image_shape: tuple of 3 ints. H, W, C of the images. Defaults to (28, 28, 1).
    """

    parameters_per_channel = 1
    discrete = False  # a probability mass over 8-bit pixels (its NLL converts to bits per dimension)

    def __init__(self, image_shape: Sequence[int] = (28, 28, 1), **kwargs) -> None:
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        # Never called as a layer (the model calls its methods), so built here: Keras builds a
        # model whose layers are not all built by tracing a batch, which fails under tf.distribute.
        self.build(None)

    def build(self, input_shape=None) -> None:
        super().build(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "image_shape": list(self.image_shape)}

    def pixel_log_prob(self, images: tf.Tensor, outputs: tf.Tensor) -> tf.Tensor:
        """log p(x | outputs) per pixel and channel, [N, H, W, C], for images in [0, 1]."""
        raise NotImplementedError

    def log_prob(self, images: tf.Tensor, outputs: tf.Tensor, fused: bool = False) -> tf.Tensor:
        """log p(x | outputs) per image, [N]: the pixels' log-probabilities summed. `fused` asks
        for the XLA-compiled form where this likelihood has one (the same value, in one pass
        over the outputs); here it has none."""
        return tf.reduce_sum(self.pixel_log_prob(images, outputs), axis=[1, 2, 3])

    def mean(self, outputs: tf.Tensor) -> tf.Tensor:
        """E[x | outputs], [N, H, W, C] in [0, 1]."""
        raise NotImplementedError

    def sample(self, outputs: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One image per row drawn from p(x | outputs), [N, H, W, C] in [0, 1]; `seed` is a
        stateless seed, shape [2]."""
        raise NotImplementedError

    def _channels(self, outputs: tf.Tensor, index: int) -> tf.Tensor:
        """The `index`-th group of C channels of the decoder's outputs, in float32; the outputs
        themselves when they are that one group (a slice would copy them)."""
        channels = self.image_shape[-1]
        if index == 0 and outputs.shape[-1] == channels:
            return tf.cast(outputs, tf.float32)
        return tf.cast(outputs[..., index * channels:(index + 1) * channels], tf.float32)


@tf.function(jit_compile=True, reduce_retracing=True)
def _bernoulli_image_log_prob(images: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Σ_pixels log Bernoulli(x | σ(l)) per row of flat [N, D] images and logits. XLA fuses the
    elementwise terms and the sum into one pass over the logits, about half the time of the
    unfused kernels on a CPU; rows must be flat (a trailing unit channel axis defeats the fusion)."""
    return -tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits), axis=1)


@keras.saving.register_keras_serializable(package="keras_cvae")
class Bernoulli(PixelLikelihood):
    """Bernoulli pixels with the decoder's logits: for binary or binarized images."""

    def pixel_log_prob(self, images, outputs):
        # x·log σ(l) + (1 − x)·log(1 − σ(l)) = −sigmoid_cross_entropy(x, l): the value of
        # `tfd.Bernoulli(logits).log_prob`, in one fused kernel (a tenth off a compiled MLP step).
        logits = self._channels(outputs, 0)
        return -tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.cast(images, tf.float32), logits=logits)

    def log_prob(self, images, outputs, fused=False):
        if not fused:
            return super().log_prob(images, outputs)
        count = tf.shape(outputs)[0]
        return _bernoulli_image_log_prob(tf.reshape(tf.cast(images, tf.float32), [count, -1]),
                                         tf.reshape(self._channels(outputs, 0), [count, -1]))

    def mean(self, outputs):
        return tf.sigmoid(self._channels(outputs, 0))

    def sample(self, outputs, seed):
        mean = self.mean(outputs)
        return tf.cast(tf.random.stateless_uniform(tf.shape(mean), seed=seed) < mean, tf.float32)


@keras.saving.register_keras_serializable(package="keras_cvae")
class Gaussian(PixelLikelihood):
    """A Normal per pixel: mean sigmoid(output), σ = MIN_PIXEL_SCALE + softplus(s) with s a
    learned weight per pixel and channel (initially σ ≈ 0.1). A density, so its NLL is not a
    probability of 8-bit images."""

    def build(self, input_shape=None) -> None:
        self.pixel_scale_raw = self.add_weight(name="pixel_scale_raw", shape=self.image_shape,
                                               initializer=keras.initializers.Constant(-2.3))
        super().build(input_shape)

    def load_own_variables(self, store) -> None:
        if getattr(self, "loaded_by_model", False) and not len(store.keys()):
            return  # a keras_cvae 0.1 file: the model has read this weight (CVAE.load_own_variables)
        super().load_own_variables(store)

    @property
    def scale(self) -> tf.Tensor:
        return MIN_PIXEL_SCALE + tf.nn.softplus(tf.convert_to_tensor(self.pixel_scale_raw))

    def pixel_log_prob(self, images, outputs):
        return tfd.Normal(loc=self.mean(outputs), scale=self.scale).log_prob(tf.cast(images, tf.float32))

    def mean(self, outputs):
        return tf.sigmoid(self._channels(outputs, 0))

    def sample(self, outputs, seed):
        """A draw clipped to [0, 1] (the Normal itself reaches past the pixel range)."""
        mean = self.mean(outputs)
        return tf.clip_by_value(mean + self.scale * tf.random.stateless_normal(tf.shape(mean), seed=seed), 0.0, 1.0)


@keras.saving.register_keras_serializable(package="keras_cvae")
class DiscretizedLogistic(PixelLikelihood):
    """PixelCNN++'s likelihood (Salimans et al. 2017) for 8-bit pixels: per pixel a logistic with
    location 255·σ(first outputs) and scale MIN_LOGISTIC_SCALE + INITIAL_LOGISTIC_SCALE·exp(second
    outputs) (capped at MAX_LOGISTIC_SCALE), in pixel units, discretised into unit bins centred on
    the integers 0…255, the end bins taking the tails. A probability mass, so its NLL is a true
    NLL in nats and converts to bits per dimension."""

    parameters_per_channel = 2
    discrete = True

    def _logistic(self, outputs: tf.Tensor) -> tfd.Distribution:
        loc = 255.0 * tf.sigmoid(self._channels(outputs, 0))
        log_scale = tf.minimum(self._channels(outputs, 1) + float(np.log(INITIAL_LOGISTIC_SCALE)),
                               float(np.log(MAX_LOGISTIC_SCALE)))
        # tfd.QuantizedDistribution gives P(Y = y) = P(y − 1 < X ≤ y); with X = L − ½ that is
        # P(y − ½ < L ≤ y + ½) for the logistic L.
        return tfd.QuantizedDistribution(tfd.Logistic(loc - 0.5, MIN_LOGISTIC_SCALE + tf.exp(log_scale)),
                                         low=0.0, high=255.0)

    def pixel_log_prob(self, images, outputs):
        return self._logistic(outputs).log_prob(tf.round(tf.cast(images, tf.float32) * 255.0))

    def mean(self, outputs):
        """The logistic's location, in [0, 1]: the mean before the tails are folded into the end
        bins (which pull the mean of a wide logistic near 0 or 255 inwards)."""
        return tf.sigmoid(self._channels(outputs, 0))

    def sample(self, outputs, seed):
        return self._logistic(outputs).sample(seed=seed) / 255.0


LIKELIHOODS: dict[str, type[PixelLikelihood]] = {
    "bernoulli": Bernoulli,
    "gaussian": Gaussian,
    "discretized_logistic": DiscretizedLogistic,
}


def get_likelihood(name: str, image_shape: Sequence[int]) -> PixelLikelihood:
    """The likelihood called `name` for images of `image_shape`; a ValueError listing the names otherwise."""
    if name not in LIKELIHOODS:
        raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {name!r}")
    return LIKELIHOODS[name](image_shape, name=f"{name}_likelihood")
