"""The structured-output CVAE of Sohn, Lee and Yan (2015), here for image completion.

The condition is an image part x (the visible quadrants, see quadrants.py) and the output y the
missing pixels. Four networks, all functional Keras models from networks.py:

  baseline ŷ(x)               deterministic prediction of the whole image (Bernoulli logits)
  prior network p(z | x, ŷ)    the learned prior, a diagonal Gaussian (`priors.ConditionalGaussian`)
  recognition q(z | x, y, ŷ)   the posterior; it sees the full image (x and y) and ŷ
  generation p(y | x, z)       Bernoulli logits of every pixel; only the missing ones are scored

Objectives (`objective`): "cvae" maximises the ELBO log p(y|x,z~q) − KL(q ‖ p(z|x,ŷ));
"gsnn" maximises log p(y|x,z) with z drawn from the prior network (q = p); "hybrid" is
α·L_CVAE + (1−α)·L_GSNN; "baseline" trains only ŷ. The baseline is trained jointly, on its
own Bernoulli loss, and feeds the other networks through a stop-gradient, so the CVAE's
objective never bends it. Unlike training it first, the other networks learn against a ŷ that
is still moving. All log-probabilities
are summed over the missing pixels (nats per image, Sohn et al.'s unit).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.config import OBJECTIVES
from keras_cvae.likelihoods import Bernoulli
from keras_cvae.models.base import (
    VariationalModel,
    bounded_log_var,
    free_bits_kl,
    gaussian_posterior,
)
from keras_cvae.models.quadrants import masked_input, visible_mask
from keras_cvae.networks import build_baseline, build_decoder, build_encoder
from keras_cvae.priors import ConditionalGaussian

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="keras_cvae")
class CompletionCVAE(VariationalModel):
    """Conditional model p(y | x) = ∫ p(y | x, z) p(z | x, ŷ(x)) dz for image completion.

    Args:
        image_shape: tuple of 3 ints. H, W, C. Defaults to (28, 28, 1).
        quadrants: int. Visible quadrants: 1, 2 or 3. Defaults to 1.
        objective: str. "baseline", "cvae", "gsnn" or "hybrid". Defaults to "cvae".
        alpha: float. Weight of the CVAE term in the hybrid objective. Defaults to 0.5.
        beta: float. Weight of the KL term in the CVAE term (β-VAE). Defaults to 1.0.
        latent_dim: int. Size of z. Defaults to 20.
        hidden_units: sequence of ints. Dense layer sizes of every network. Defaults to (400,).
        class_names: sequence of str or None. Kept for the export's assets.
        seed: int or None. Seed for the noise. Defaults to None.
        free_bits: float. λ, nats per latent dimension of KL(q ‖ p(z|x, ŷ)) the loss does not charge
            for (models.base.free_bits_kl). Defaults to 0 (off).

    Example:
        >>> model = CompletionCVAE(quadrants=2, objective="hybrid", alpha=0.5)
        >>> model.compile(optimizer="adam")
        >>> completed = model.complete(masked_images)  # one sample per image
    """

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        quadrants: int = 1,
        objective: str = "cvae",
        alpha: float = 0.5,
        beta: float = 1.0,
        latent_dim: int = 20,
        hidden_units: Sequence[int] = (400,),
        class_names: Sequence[str] | None = None,
        seed: int | None = None,
        free_bits: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.image_shape = tuple(int(d) for d in image_shape)
        self.quadrants = int(quadrants)
        self.objective = objective
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.latent_dim = int(latent_dim)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.class_names = tuple(class_names or ())
        self.visible = visible_mask(self.image_shape, self.quadrants)  # numpy: a constant in every graph
        self.likelihood = Bernoulli(self.image_shape, name="bernoulli_likelihood")

        pixels = int(np.prod(self.image_shape))
        shape, units = self.image_shape, self.hidden_units
        self.baseline = build_baseline(shape, units)
        if objective != "baseline":
            self.prior_network = build_encoder(shape, pixels, latent_dim, "mlp", units, name="prior_network")
            self.prior = ConditionalGaussian(self.latent_dim, name="conditional_gaussian_prior")
            self.prior.attach(self._prior_moments)
            self.recognition_network = build_encoder(
                shape, 2 * pixels, latent_dim, "mlp", units, name="recognition_network"
            )
            self.generation_network = build_decoder(shape, pixels, latent_dim, "mlp", units, name="generation_network")
        self.built = True

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "quadrants": self.quadrants,
            "objective": self.objective,
            "alpha": self.alpha,
            "beta": self.beta,
            "latent_dim": self.latent_dim,
            "hidden_units": list(self.hidden_units),
            "class_names": list(self.class_names),
            "seed": self.seed,
            "free_bits": self.free_bits,
        }

    # -- the networks as distributions ----------------------------------------------------------

    def condition(self, images: tf.Tensor) -> tf.Tensor:
        """x: the visible quadrants of `images`, the rest MASK_VALUE (re-masking x is a no-op)."""
        return masked_input(tf.convert_to_tensor(images, tf.float32), self.visible)

    def baseline_logits(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.cast(self.baseline(x, training=training), tf.float32)

    def missing_log_likelihood(self, images: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
        """log p(y | ·): Bernoulli log-probabilities summed over the missing pixels, [N]."""
        per_pixel = self.likelihood.pixel_log_prob(images, logits)
        return tf.reduce_sum(per_pixel * (1.0 - self.visible), axis=[1, 2, 3])

    def _gaussian(self, network: keras.Model, inputs: list[tf.Tensor], training: bool) -> tfd.Distribution:
        z_mean, z_log_var = network(inputs, training=training)
        return gaussian_posterior(tf.cast(z_mean, tf.float32), bounded_log_var(z_log_var))

    @staticmethod
    def _flat(tensor: tf.Tensor) -> tf.Tensor:
        return tf.reshape(tensor, [tf.shape(tensor)[0], -1])

    def prior_conditions(self, x: tf.Tensor, y_hat: tf.Tensor) -> tf.Tensor:
        """The prior's condition vector: x and ŷ flattened side by side, [N, 2·H·W·C]."""
        return tf.concat([self._flat(x), self._flat(y_hat)], axis=1)

    def _prior_moments(self, conditions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """The prior network on a condition vector of `prior_conditions`: (mean, log-variance)."""
        pixels = int(np.prod(self.image_shape))
        x = tf.reshape(conditions[:, :pixels], [-1, *self.image_shape])
        z_mean, z_log_var = self.prior_network([x, conditions[:, pixels:]])
        return tf.cast(z_mean, tf.float32), bounded_log_var(z_log_var)

    def posterior(self, images: tf.Tensor, x: tf.Tensor, y_hat: tf.Tensor, training: bool = False) -> tfd.Distribution:
        """q(z | x, y, ŷ), the recognition network's diagonal Gaussian (`images` hold x and y)."""
        condition = tf.concat([self._flat(x), self._flat(y_hat)], axis=1)
        return self._gaussian(self.recognition_network, [tf.convert_to_tensor(images, tf.float32), condition], training)

    def generation_logits(self, z: tf.Tensor, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.cast(self.generation_network([z, self._flat(x)], training=training), tf.float32)

    # -- the objective ----------------------------------------------------------------------------

    def compute_terms(self, images: tf.Tensor, labels: tf.Tensor | None = None, training: bool = False) -> dict[str, tf.Tensor]:
        """Per-image terms, each [N]. `labels` are ignored: the condition comes from the image.

        reconstruction_loss, kl_loss and elbo are the CVAE's (for "baseline": the baseline's NLL,
        0 and −NLL); loss is the objective plus the jointly trained baseline's NLL.
        """
        images = tf.convert_to_tensor(images, tf.float32)
        x = self.condition(images)
        baseline_logits = self.baseline_logits(x, training=training)
        baseline_nll = -self.missing_log_likelihood(images, baseline_logits)
        if self.objective == "baseline":
            zeros = tf.zeros_like(baseline_nll)
            return {"loss": baseline_nll, "reconstruction_loss": baseline_nll, "kl_loss": zeros, "elbo": -baseline_nll}

        y_hat = tf.stop_gradient(tf.sigmoid(baseline_logits))
        conditions = self.prior_conditions(x, y_hat)
        posterior = self.posterior(images, x, y_hat, training=training)
        z = self.sample(posterior)
        reconstruction = -self.missing_log_likelihood(images, self.generation_logits(z, x, training=training))
        kl_per_dim = self.prior.kl_per_dimension(posterior, conditions)
        kl = tf.reduce_sum(kl_per_dim, axis=-1)
        cvae_loss = reconstruction + self.beta * self.kl_weight * free_bits_kl(kl_per_dim, self.free_bits)
        if self.objective == "cvae":
            objective = cvae_loss
        else:
            z_prior = self.sample(self.prior.distribution(conditions))
            gsnn_loss = -self.missing_log_likelihood(images, self.generation_logits(z_prior, x, training=training))
            weight = 0.0 if self.objective == "gsnn" else self.alpha
            objective = weight * cvae_loss + (1.0 - weight) * gsnn_loss
        return {
            "loss": objective + baseline_nll,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl,
            "elbo": -(reconstruction + kl),
        }

    needs_labels = False  # the condition is part of the image

    # -- inference --------------------------------------------------------------------------------

    def call(self, images: tf.Tensor, training: bool = False) -> tf.Tensor:
        return self.complete(images)

    def complete(
        self, images: tf.Tensor, eps: tf.Tensor | None = None, seed: int | None = None, baseline: bool = False
    ) -> tf.Tensor:
        """Completed images [N, H, W, C] in [0, 1]: the visible pixels of `images` kept, the missing
        ones the mean of p(y | x, z) for one z ~ p(z | x, ŷ) (with noise `eps` if given), or the
        baseline's ŷ (always for a baseline model). `images` may be whole or already masked."""
        x = self.condition(images)
        logits = self.baseline_logits(x)
        if self.objective != "baseline" and not baseline:
            prior = self.prior.distribution(self.prior_conditions(x, tf.sigmoid(logits)))
            if eps is None:
                eps = keras.random.normal(tf.shape(prior.mean()), seed=seed)
            logits = self.generation_logits(prior.mean() + prior.stddev() * eps, x)
        return self.visible * x + (1.0 - self.visible) * tf.sigmoid(logits)  # visible·x = the visible pixels

    def baseline_log_likelihood(self, images: tf.Tensor) -> tf.Tensor:
        """log p(y | ŷ(x)), the deterministic baseline's log-likelihood of the missing pixels, [N]."""
        images = tf.convert_to_tensor(images, tf.float32)
        return self.missing_log_likelihood(images, self.baseline_logits(self.condition(images)))

    def latent_moments(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The recognition network q(z | x, y, ŷ)'s and the prior network p(z | x, ŷ)'s means and
        log-variances, each [N, L]: what z carries (evaluation's active units and KL per dimension)."""
        images = tf.convert_to_tensor(images, tf.float32)
        x = self.condition(images)
        y_hat = tf.sigmoid(self.baseline_logits(x))
        posterior = self.posterior(images, x, y_hat)
        prior = self.prior.distribution(self.prior_conditions(x, y_hat))
        return {"q_mean": posterior.mean(), "q_log_var": 2.0 * tf.math.log(posterior.stddev()),
                "p_mean": prior.mean(), "p_log_var": 2.0 * tf.math.log(prior.stddev())}

    def log_weights(self, images: tf.Tensor, num_samples: int | tf.Tensor) -> tf.Tensor:
        """[K, N] importance log-weights log p(y|x,z) + log p(z|x,ŷ) − log r(z), z ~ r, for the
        NCLL. The proposal r is the recognition network q(z|x,y,ŷ), except for the GSNN, which
        trains with q = p(z|x,ŷ) and never fits q: its proposal is the prior network (the weights
        are then p(y|x,z)). A baseline model returns its log-likelihood [1, N] (no z to sample)."""
        images = tf.convert_to_tensor(images, tf.float32)
        x = self.condition(images)
        logits = self.baseline_logits(x)
        if self.objective == "baseline":
            return self.missing_log_likelihood(images, logits)[tf.newaxis]
        num_samples = tf.convert_to_tensor(num_samples, tf.int32)
        y_hat = tf.sigmoid(logits)
        prior = self.prior.distribution(self.prior_conditions(x, y_hat))
        proposal = prior if self.objective == "gsnn" else self.posterior(images, x, y_hat)
        z = self.sample(proposal, num_samples)  # [K, N, L]
        n = tf.shape(images)[0]
        log_py = self.missing_log_likelihood(
            tf.tile(images, [num_samples, 1, 1, 1]),
            self.generation_logits(tf.reshape(z, [-1, self.latent_dim]), tf.tile(x, [num_samples, 1, 1, 1])),
        )
        return tf.reshape(log_py, [num_samples, n]) + prior.log_prob(z) - proposal.log_prob(z)
