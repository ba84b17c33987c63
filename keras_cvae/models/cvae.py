"""The conditional VAE p(x | z, c) p(z) with encoder q(z | x, c): a `keras.Model` that owns its ELBO."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.conditions import Condition, class_labels, class_names, first_categorical
from keras_cvae.config import KL_ESTIMATES
from keras_cvae.likelihoods import Gaussian, get_likelihood
from keras_cvae.models.base import (
    VariationalModel,
    bounded_log_var,
    condition_vector,
    free_bits_kl,
    gaussian_posterior,
    log_importance_weights,
)
from keras_cvae.networks import NETWORKS, ONE_HOT_SCALE
from keras_cvae.priors import get_prior

tfd = tfp.distributions


@keras.saving.register_keras_serializable(package="keras_cvae")
class CVAE(VariationalModel):
    """Conditional VAE p(x | z, c) p(z) with encoder q(z | x, c), trained on the ELBO.

    Args:
        image_shape: tuple of 3 ints. H, W, C of the images. Defaults to (28, 28, 1).
        conditions: sequence of `Condition`s (or their dicts) or None. What c is: categorical
            conditions enter the networks one-hot, continuous ones standardised. Defaults to one
            categorical condition, `labels`, with `num_classes` classes named `class_names`.
        latent_dim: int. Size of z. Defaults to 20.
        arch: str. The built-in networks, "mlp", "conv" or "resnet" (`keras_cvae.networks`), used when
            `encoder` and `decoder` are not given. Defaults to "mlp".
        hidden_units: sequence of ints. Dense layer sizes of the built-in encoder (mirrored in the
            decoder). Defaults to (400,).
        activation: str. The built-in networks' hidden-layer activation: "relu", "softplus" or
            "gated" (h = (W x + b) ⊙ σ(V x + c), VampPrior's). Defaults to "relu".
        likelihood: str. "bernoulli" (logits), "gaussian" (sigmoid mean, learned per-pixel σ) or
            "discretized_logistic" (8-bit pixels, PixelCNN++'s likelihood, one logistic per pixel
            with its mean and scale from the decoder). Defaults to "bernoulli".
        beta: float. Weight of the KL term in the loss (β-VAE). Defaults to 1.0.
        conditional: bool. False gives a plain VAE: no condition enters either network, and
            `fit(x)` needs no labels. Defaults to True.
        free_bits: float. λ, nats per latent dimension the loss does not charge for (Kingma et
            al. 2016; see models.base.free_bits_kl); the reported KL and ELBO stay exact.
            Defaults to 0 (off).
        initializer: str. The built-in networks' dense-layer weights: "glorot_uniform" or
            "he_normal" (std sqrt(2 / fan_in), as the VampPrior code). Defaults to "glorot_uniform".
        log_var_range: pair of floats or None. Clip the posterior's log-variance to [low, high]
            (a hardtanh, as the VampPrior code's [−6, 2]). Defaults to None: squashed softly
            into ±10 (`models.base.bounded_log_var`).
        kl_estimate: str. "analytic", the prior's closed form where it has one, or
            "monte_carlo", log q(z | x, c) − log p(z | c) at the reconstruction's z (the
            VampPrior code's). Defaults to "analytic".
        condition_scale: float or None. Factor on the condition vector before the built-in
            networks' dense concatenations (`keras_cvae.networks`); your own networks get the
            vector unscaled. Defaults to None: `default_condition_scale`, ONE_HOT_SCALE (10) for
            this fully labelled model.
        seed: int or None. Seed for the reparameterisation noise. Defaults to None.
        num_classes: int or None. Shorthand for one categorical condition `labels` (with
            `conditions` None). Defaults to 10.
        class_names: sequence of str or None. The classes' names in that shorthand.
        encoder: keras.Model or None. Your own q(z | x, c): it takes `[images, condition_vector]`
            (images float32 [N, H, W, C] in [0, 1]; the vector as `condition_vector` makes it) and
            returns `[z_mean, z_log_var]`, each [N, latent_dim]. A plain VAE's takes the images
            alone. Defaults to None (the built-in `arch`).
        decoder: keras.Model or None. Your own p(x | z, c): it takes `[z, condition_vector]` (a
            plain VAE's, z alone) and returns the likelihood's raw parameters
            [N, H, W, C × parameters per channel] (see `outputs_per_channel`). Given together
            with `encoder`. Defaults to None.

    Raises:
        ValueError: an unknown `likelihood` or `arch`, only one of `encoder` and `decoder`, or a
            network whose inputs or outputs do not have the shapes above (the message names the
            network, the shape expected and the shape it returned).

    Example:
        >>> model = CVAE(latent_dim=2)
        >>> model.compile(optimizer="adam")
        >>> images = model.generate(tf.constant([0, 1, 2]))  # [3, 28, 28, 1] in [0, 1]
    """

    # The condition's scale under the built-in networks when `condition_scale` is not given: what
    # the fully labelled model measured best (keras_cvae.networks).
    default_condition_scale = ONE_HOT_SCALE

    def __init__(
        self,
        image_shape: Sequence[int] = (28, 28, 1),
        conditions: Sequence[Condition | dict[str, Any]] | None = None,
        latent_dim: int = 20,
        arch: str = "mlp",
        hidden_units: Sequence[int] = (400,),
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        conditional: bool = True,
        seed: int | None = None,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        free_bits: float = 0.0,
        encoder: keras.Model | dict[str, Any] | None = None,
        decoder: keras.Model | dict[str, Any] | None = None,
        activation: str = "relu",
        prior: str = "standard",
        prior_components: int | None = None,
        condition_scale: float | None = None,
        initializer: str = "glorot_uniform",
        log_var_range: Sequence[float] | None = None,
        kl_estimate: str = "analytic",
        **kwargs,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        if conditions is None:
            conditions = [class_labels(class_names or [str(i) for i in range(num_classes or 10)])]
        self.conditions = tuple(c if isinstance(c, Condition) else Condition.from_dict(c) for c in conditions)
        self.latent_dim = int(latent_dim)
        self.arch = arch
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.likelihood = get_likelihood(likelihood, self.image_shape)
        self.beta = float(beta)
        self.free_bits = float(free_bits)
        self.condition_scale = float(type(self).default_condition_scale if condition_scale is None else condition_scale)
        if not self.condition_scale > 0:
            raise ValueError(f"condition_scale must be > 0, got {condition_scale}")
        self.initializer = initializer
        self.log_var_range = None if log_var_range is None else tuple(float(v) for v in log_var_range)
        if self.log_var_range is not None and not (len(self.log_var_range) == 2
                                                   and self.log_var_range[0] < self.log_var_range[1]):
            raise ValueError(f"log_var_range must be (low, high) with low < high, got {log_var_range}")
        if kl_estimate not in KL_ESTIMATES:
            raise ValueError(f"kl_estimate must be one of {', '.join(KL_ESTIMATES)}, got {kl_estimate!r}")
        self.kl_estimate = kl_estimate
        self.conditional = bool(conditional) and bool(self.conditions)  # nothing to condition on: a plain VAE
        self.prior_components = None if prior_components is None else int(prior_components)
        self.prior = get_prior(prior, self.latent_dim, components=self.prior_components, image_shape=self.image_shape,
                               condition_width=self.condition_width, class_group=self._class_group())
        self.prior.attach(self._encode_vectors)
        if self.free_bits and not self.prior.factorises:
            raise ValueError(f"free_bits needs a prior that factorises over latent dimensions; {prior!r} does not")
        if self.free_bits and self.kl_estimate == "monte_carlo":
            raise ValueError("free_bits needs the KL per dimension; kl_estimate='monte_carlo' gives one per image")

        if arch not in NETWORKS:
            raise ValueError(f"arch must be one of {', '.join(NETWORKS)}, got {arch!r}")
        if (encoder is None) != (decoder is None):
            raise ValueError("give both encoder and decoder, or neither (for the built-in arch)")
        self.custom_networks = encoder is not None
        if self.custom_networks:
            self.encoder, self.decoder = (keras.saving.deserialize_keras_object(n) if isinstance(n, dict) else n
                                          for n in (encoder, decoder))
            self._check_networks()
        else:
            self.encoder, self.decoder = NETWORKS[arch](
                self.image_shape, self.condition_width, self.latent_dim, self.hidden_units,
                outputs_per_channel=self.outputs_per_channel, condition_scale=self.condition_scale,
                activation=activation, kernel_initializer=initializer)
        self.built = True

    # -- configuration ----------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "image_shape": list(self.image_shape),
            "conditions": [c.to_dict() for c in self.conditions],
            "latent_dim": self.latent_dim,
            "arch": self.arch,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "likelihood": self.likelihood_name,
            "prior": self.prior_name,
            "prior_components": self.prior_components,
            "beta": self.beta,
            "conditional": self.conditional,
            "seed": self.seed,
            "free_bits": self.free_bits,
            "condition_scale": self.condition_scale,
            "initializer": self.initializer,
            "log_var_range": None if self.log_var_range is None else list(self.log_var_range),
            "kl_estimate": self.kl_estimate,
            **({"encoder": keras.saving.serialize_keras_object(self.encoder),
                "decoder": keras.saving.serialize_keras_object(self.decoder)} if self.custom_networks else {}),
        }

    def load_own_variables(self, store) -> None:
        """Also reads a `.keras` file written by keras_cvae 0.1, whose Gaussian models kept the
        likelihood's σ weight on the model itself (stored before `kl_weight`)."""
        if len(store.keys()) == 2 and isinstance(self.likelihood, Gaussian):
            self.likelihood.pixel_scale_raw.assign(store["0"])
            self.kl_weight.assign(store["1"])
            self.likelihood.loaded_by_model = True
            return
        super().load_own_variables(store)

    def _class_group(self) -> tuple[int, int] | None:
        """(offset, width) of the first categorical condition's one-hot group in the condition
        vector, which a mixture prior splits its components by; None without one."""
        first = first_categorical(self.conditions) if self.conditional else None
        if first is None:
            return None
        return sum(c.width for c in self.conditions[:first]), self.conditions[first].width

    @property
    def condition_width(self) -> int:
        """Length of the condition vector the networks take (0 for a plain VAE)."""
        return sum(c.width for c in self.conditions) if self.conditional else 0

    @property
    def outputs_per_channel(self) -> int:
        """The decoder's outputs per image channel: the likelihood's parameters."""
        return self.likelihood.parameters_per_channel

    @property
    def prior_name(self) -> str:
        """The `prior` argument: the prior's name in `priors.PRIORS`."""
        return self.prior.name.removesuffix("_prior")

    @property
    def likelihood_name(self) -> str:
        """The `likelihood` argument: the likelihood's name in `likelihoods.LIKELIHOODS`."""
        return self.likelihood.name.removesuffix("_likelihood")

    def _check_networks(self) -> None:
        """A ValueError naming the network and both shapes when a given encoder or decoder does
        not fit this model (one forward pass of a single zero input)."""
        condition = [np.zeros((1, self.condition_width), np.float32)] if self.conditional else []
        inputs = "[images, condition_vector]" if self.conditional else "images"
        expected = {"encoder": [(1, self.latent_dim)] * 2,
                    "decoder": [(1, *self.image_shape[:2], self.image_shape[2] * self.outputs_per_channel)]}
        for name, first in (("encoder", np.zeros((1, *self.image_shape), np.float32)),
                            ("decoder", np.zeros((1, self.latent_dim), np.float32))):
            network = getattr(self, name)
            try:
                outputs = network([first, *condition] if condition else first)
            except Exception as err:  # any failure of the user's network on the documented inputs
                shapes = ", ".join(str(tuple(t.shape)) for t in [first, *condition])
                message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                raise ValueError(f"{name} cannot take {inputs if name == 'encoder' else inputs.replace('images', 'z')} "
                                 f"of shapes {shapes}: {message}") from None
            outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
            got = [tuple(int(d) for d in t.shape) for t in outputs]
            if got != expected[name]:
                what = ("[z_mean, z_log_var], each (N, latent_dim)" if name == "encoder" else
                        "(N, H, W, C × outputs_per_channel)")
                raise ValueError(f"{name} must return {what}: expected {expected[name]} for one input, got {got}")

    @property
    def class_names(self) -> tuple[str, ...]:
        """The categories of the first categorical condition (the sample grids' rows)."""
        return class_names(self.conditions)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    # -- the networks as distributions --------------------------------------------------------

    def _with_condition(self, tensor: tf.Tensor, conditions: tf.Tensor | None) -> tf.Tensor | list[tf.Tensor]:
        """The network's inputs: `tensor` and the condition vector of `conditions` ([N, M] rows of
        category indices and values, or [N] for a model with one condition); a plain VAE's
        networks take `tensor` alone."""
        tensor = tf.convert_to_tensor(tensor, tf.float32)
        if not self.conditional:
            return tensor
        return [tensor, condition_vector(conditions, self.conditions)]

    def encode(self, images: tf.Tensor, labels: tf.Tensor | None = None, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """q(z | x, c)'s mean and (bounded) log-variance, each [N, latent_dim]."""
        return self._encoded(self.encoder(self._with_condition(images, labels), training=training))

    def _encode_vectors(self, images: tf.Tensor, vectors: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """`encode` for condition vectors instead of rows (what the VampPrior's pseudo-inputs carry)."""
        images = tf.convert_to_tensor(images, tf.float32)
        return self._encoded(self.encoder([images, vectors] if self.conditional else images))

    def _encoded(self, outputs: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        z_mean, z_log_var = outputs
        # Under mixed precision the networks compute in bfloat16/float16; the distributions,
        # the KL and the losses stay in float32.
        return tf.cast(z_mean, tf.float32), bounded_log_var(z_log_var, self.log_var_range)

    def decoder_logits(self, z: tf.Tensor, labels: tf.Tensor, training: bool = False) -> tf.Tensor:
        return tf.cast(self.decoder(self._with_condition(z, labels), training=training), tf.float32)

    def decode(self, z: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """The mean image E[x | z, c] in [0, 1], [N, H, W, C]."""
        return self._mean_image(self.decoder_logits(z, labels))

    def _mean_image(self, outputs: tf.Tensor) -> tf.Tensor:
        return self.likelihood.mean(outputs)

    posterior = staticmethod(gaussian_posterior)

    def prior_conditions(self, labels: tf.Tensor | None, count: tf.Tensor | int) -> tf.Tensor:
        """What the prior is conditioned on for `count` rows: the condition vector, [N, W]
        (W = 0 for a plain VAE)."""
        if not self.conditional:
            return tf.zeros(tf.stack([count, 0]))
        return condition_vector(labels, self.conditions)

    def log_prior(self, z: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
        """log p(z | c) for z [..., N, L], [..., N]."""
        return self.prior.log_prob(z, self.prior_conditions(labels, tf.shape(z)[-2]))

    def sample_latent(self, labels: tf.Tensor | None, seed: tf.Tensor, count: tf.Tensor | int | None = None) -> tf.Tensor:
        """z ~ p(z | c), one per condition row (a plain VAE: `count` rows), [N, L]; `seed` a
        stateless seed [2]."""
        count = tf.shape(labels)[0] if count is None else count
        return self.prior.sample(self.prior_conditions(labels, count), seed)

    def kl_terms(self, posterior: tfd.Distribution, z: tf.Tensor, labels: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        """KL(q(z | x, c) ‖ p(z | c)) per image, [N], and the KL the loss charges (with free bits
        for a factorising prior), both from the prior: per dimension in closed form where the
        prior factorises, else its `kl` at the `z` the reconstruction used."""
        conditions = self.prior_conditions(labels, tf.shape(z)[0])
        if self.kl_estimate == "monte_carlo":
            kl = self.prior.monte_carlo_kl(posterior, z, conditions)
            return kl, kl
        if not self.prior.factorises:
            kl = self.prior.kl(posterior, z, conditions)
            return kl, kl
        per_dim = self.prior.kl_per_dimension(posterior, conditions)
        return tf.reduce_sum(per_dim, axis=-1), free_bits_kl(per_dim, self.free_bits)

    def kl_per_dimension(self, images: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
        """KL(q(z_j | x, c) ‖ p(z_j | c)) of each latent dimension, [N, L] (a factorising prior)."""
        posterior = self.posterior(*self.encode(images, labels))
        return self.prior.kl_per_dimension(posterior, self.prior_conditions(labels, tf.shape(images)[0]))

    def elbo_terms(self, images: tf.Tensor, labels: tf.Tensor | None, eps: tf.Tensor) -> dict[str, tf.Tensor]:
        """Evaluation's ELBO terms per image, [N], for the noise ε [N, L]: `reconstruction`
        −log p(x | z, c) at z = μ + σ·ε and `kl`, the model's KL (`kl_terms`)."""
        posterior = self.posterior(*self.encode(images, labels))
        z = posterior.mean() + posterior.stddev() * tf.convert_to_tensor(eps, tf.float32)
        return {"reconstruction": -self.log_likelihood(images, labels, z), "kl": self.kl_terms(posterior, z, labels)[0]}

    def log_likelihood(self, images: tf.Tensor, labels: tf.Tensor, z: tf.Tensor, training: bool = False,
                       fused: bool = False) -> tf.Tensor:
        """log p(x | z, c) per image, [N]: independent pixels (the model's `likelihood`; `fused`,
        its XLA-compiled form where it has one)."""
        return self.likelihood.log_prob(images, self.decoder_logits(z, labels, training=training), fused=fused)

    # -- the objective ------------------------------------------------------------------------

    def compute_terms(self, images: tf.Tensor, labels: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Per-image ELBO terms, each [N]: reconstruction (−log p(x|z,c), one z), KL, loss, ELBO."""
        z_mean, z_log_var = self.encode(images, labels, training=training)
        posterior = self.posterior(z_mean, z_log_var)
        z = self.sample(posterior)
        reconstruction = -self.log_likelihood(images, labels, z, training=training)
        kl, charged = self.kl_terms(posterior, z, labels)
        return {
            "loss": reconstruction + self.beta * self.kl_weight * charged,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl,
            "elbo": -(reconstruction + kl),
        }

    # -- inference ----------------------------------------------------------------------------

    @property
    def needs_labels(self) -> bool:
        return self.conditional

    def call(self, inputs: tf.Tensor | tuple[tf.Tensor, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Deterministic reconstruction of `(images, labels)` (a plain VAE's: `images`): decode the
        posterior mean."""
        images, labels = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs, None)
        z_mean, _ = self.encode(images, labels, training=training)
        return self._mean_image(self.decoder_logits(z_mean, labels, training=training))

    def log_importance_weights(self, images: tf.Tensor, labels: tf.Tensor, eps: tf.Tensor,
                               fused: bool = False) -> tf.Tensor:
        """[K, N] log-weights of the importance-weighted bound for noise ε [K, N, L]
        (models.base.log_importance_weights; `fused`: the likelihood's XLA-compiled form)."""
        return log_importance_weights(self, images, labels, eps, fused=fused)

    def generate(self, labels: tf.Tensor | int, z: tf.Tensor | None = None, seed: int | None = None) -> tf.Tensor:
        """Mean images for the conditions `labels` ([N, M] rows, or [N] with one condition; a plain
        VAE takes the number of images N), from z ~ p(z | c), the model's prior (or the given z),
        [N, H, W, C] in [0, 1]. The same `seed` gives the same images."""
        if isinstance(labels, (int, np.integer)):
            if self.conditional:
                raise ValueError("a conditional model's generate takes the conditions, e.g. generate([0, 1, 2])")
            labels = tf.zeros([int(labels), 0])
        labels = tf.convert_to_tensor(labels)
        if z is None:
            stateless = tf.constant([0, seed], tf.int64) if seed is not None else keras.random.randint((2,), 0, 2**31 - 1)
            z = self.sample_latent(labels, tf.cast(stateless, tf.int32))
        return self.decode(z, labels)
