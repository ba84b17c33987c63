"""The conditional VAE p(x | z, c) p(z) with encoder q(z | x, c): a `keras.Model` that owns its ELBO."""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.models.base import (
    MIN_PIXEL_SCALE,
    VariationalModel,
    bernoulli_log_prob,
    bounded_log_var,
    gaussian_posterior,
    standard_normal_prior,
)
from keras_cvae.models.networks import ONE_HOT_SCALE, build_decoder, build_encoder

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="keras_cvae")
class CVAE(VariationalModel):
    """Conditional VAE p(x | z, c) p(z) with encoder q(z | x, c), trained on the ELBO.

    Args:
        image_shape: tuple of 3 ints. H, W, C of the images. Defaults to (28, 28, 1).
        num_classes: int. Number of classes of the one-hot condition. Defaults to 10.
        latent_dim: int. Size of z. Defaults to 20.
        arch: str. "mlp" or "conv". Defaults to "mlp".
        hidden_units: sequence of ints. Dense layer sizes of the encoder (mirrored in the
            decoder). Defaults to (400,).
        likelihood: str. "bernoulli" (logits) or "gaussian" (sigmoid mean, learned per-pixel σ).
            Defaults to "bernoulli".
        beta: float. Weight of the KL term in the loss (β-VAE). Defaults to 1.0.
        conditional: bool. False gives a plain VAE: no condition enters either network.
            Defaults to True.
        class_names: sequence of str or None. Names for the classes, kept for plots.
        seed: int or None. Seed for the reparameterisation noise. Defaults to None.

    Example:
        >>> model = CVAE(latent_dim=2)
        >>> model.compile(optimizer="adam")
        >>> images = model.generate(tf.constant([0, 1, 2]))  # [3, 28, 28, 1] in [0, 1]
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        latent_dim: int = 20,
        arch: str = "mlp",
        hidden_units: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        conditional: bool = True,
        class_names: Sequence[str] | None = None,
        seed: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self.latent_dim = int(latent_dim)
        self.arch = arch
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.likelihood = likelihood
        self.beta = float(beta)
        self.conditional = bool(conditional)
        self.class_names = tuple(class_names) if class_names else tuple(str(i) for i in range(num_classes))

        num_conditions = self.num_classes if self.conditional else 0
        network_args = (self.image_shape, num_conditions, self.latent_dim, arch, self.hidden_units)
        self.encoder = build_encoder(*network_args, condition_scale=ONE_HOT_SCALE)
        self.decoder = build_decoder(*network_args, condition_scale=ONE_HOT_SCALE)
        if likelihood == "gaussian":
            self.pixel_scale_raw = self.add_weight(
                name="pixel_scale_raw", shape=self.image_shape,
                initializer=keras.initializers.Constant(-2.3),  # σ ≈ 0.1 at the start
            )
        self.built = True

    # -- configuration ----------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "latent_dim": self.latent_dim,
            "arch": self.arch,
            "hidden_units": list(self.hidden_units),
            "likelihood": self.likelihood,
            "beta": self.beta,
            "conditional": self.conditional,
            "class_names": list(self.class_names),
            "seed": self.seed,
        }

    # -- the networks as distributions --------------------------------------------------------

    def _with_condition(self, tensor: tf.Tensor, labels: tf.Tensor) -> list[tf.Tensor]:
        tensor = tf.convert_to_tensor(tensor, tf.float32)
        if not self.conditional:
            return [tensor]
        return [tensor, tf.one_hot(tf.cast(labels, tf.int32), self.num_classes)]

    def encode(self, images: tf.Tensor, labels: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """q(z | x, c)'s mean and (bounded) log-variance, each [N, latent_dim]."""
        z_mean, z_log_var = self.encoder(self._with_condition(images, labels), training=training)
        # Under mixed precision the networks compute in bfloat16/float16; the distributions,
        # the KL and the losses stay in float32.
        return tf.cast(z_mean, tf.float32), bounded_log_var(z_log_var)

    def decoder_logits(self, z: tf.Tensor, labels: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.cast(self.decoder(self._with_condition(z, labels), training=training), tf.float32)

    def decode(self, z: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """The mean image E[x | z, c] in [0, 1], [N, H, W, C]."""
        return tf.sigmoid(self.decoder_logits(z, labels))

    posterior = staticmethod(gaussian_posterior)

    def prior(self, batch_size: tf.Tensor | int) -> tfd.Distribution:
        return standard_normal_prior(batch_size, self.latent_dim)

    def log_likelihood(self, images: tf.Tensor, labels: tf.Tensor, z: tf.Tensor, training: bool = False) -> tf.Tensor:
        """log p(x | z, c) per image, [N]: independent pixels, log-probabilities summed over H, W, C."""
        logits = self.decoder_logits(z, labels, training=training)
        if self.likelihood == "bernoulli":
            per_pixel = bernoulli_log_prob(images, logits)
        else:
            scale = MIN_PIXEL_SCALE + tf.nn.softplus(self.pixel_scale_raw)
            per_pixel = tfd.Normal(loc=tf.sigmoid(logits), scale=scale).log_prob(images)
        return tf.reduce_sum(per_pixel, axis=[1, 2, 3])

    # -- the objective ------------------------------------------------------------------------

    def compute_terms(self, images: tf.Tensor, labels: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Per-image ELBO terms, each [N]: reconstruction (−log p(x|z,c), one z), KL, loss, ELBO."""
        z_mean, z_log_var = self.encode(images, labels, training=training)
        posterior = self.posterior(z_mean, z_log_var)
        z = self.sample(posterior)
        reconstruction = -self.log_likelihood(images, labels, z, training=training)
        kl = tfd.kl_divergence(posterior, self.prior(tf.shape(z_mean)[0]))
        return {
            "loss": reconstruction + self.beta * self.kl_weight * kl,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl,
            "elbo": -(reconstruction + kl),
        }

    # -- inference ----------------------------------------------------------------------------

    def call(self, inputs: tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Deterministic reconstruction: decode the posterior mean."""
        images, labels = inputs
        z_mean, _ = self.encode(images, labels, training=training)
        return tf.sigmoid(self.decoder_logits(z_mean, labels, training=training))

    def generate(self, labels: tf.Tensor, z: tf.Tensor | None = None, seed: int | None = None) -> tf.Tensor:
        """Mean images for `labels`, from z ~ N(0, I) (or the given z), [N, H, W, C]."""
        labels = tf.convert_to_tensor(labels, tf.int32)
        if z is None:
            z = keras.random.normal((tf.shape(labels)[0], self.latent_dim), seed=seed)
        return self.decode(z, labels)
