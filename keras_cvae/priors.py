"""p(z | c): the prior over the latent code, as a component every consumer goes through.

The training loss, the importance-weighted log-weights, evaluation's ELBO and per-dimension KL,
free bits, `generate`, the sample grids and the export's signatures all ask the model's
`prior` (a `Prior`) for log-probabilities, samples and KLs; none of them writes N(0, I) itself.
Adding a prior means one class here and one entry in PRIORS (its name is also a `--prior`
choice, `config.PRIORS`, which a test holds equal to this registry).

`conditions` is always the model's condition vector [N, W] (`models.base.condition_vector`;
W = 0 for a plain VAE), so a prior may depend on c.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions


def diagonal_gaussian_kl(posterior: tfd.Distribution, prior: tfd.Distribution) -> tf.Tensor:
    """KL(q ‖ p) of each dimension, [N, L], for diagonal Gaussians q and p (anything with `mean()`
    and `stddev()`); their sum over dimensions is `tfd.kl_divergence(q, p)`."""
    return tfd.kl_divergence(tfd.Normal(posterior.mean(), posterior.stddev()), tfd.Normal(prior.mean(), prior.stddev()))


class Prior(keras.layers.Layer):
    """The interface of p(z | c) over `latent_dim` dimensions.

    A prior that factorises over dimensions (`factorises`) gives the KL per dimension, which free
    bits and `kl_per_dim` need; `kl` is in closed form where one exists, else the one-sample
    Monte Carlo estimate log q(z | x, c) − log p(z | c) at the z the reconstruction used.

    Args:
        latent_dim: int. Size of z. Defaults to 20.
    """

    factorises = True

    def __init__(self, latent_dim: int = 20, **kwargs) -> None:
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        # Never called as a layer (the model calls its methods): built here, so that Keras does
        # not trace a batch to build the model (which fails under tf.distribute).
        self.build(None)

    def build(self, input_shape=None) -> None:
        super().build(input_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_dim": self.latent_dim}

    def log_prob(self, z: tf.Tensor, conditions: tf.Tensor) -> tf.Tensor:
        """log p(z | c) for z [..., N, L] and conditions [N, W]: [..., N]."""
        raise NotImplementedError

    def sample(self, conditions: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One z per row of `conditions` [N, W], [N, L]; `seed` is a stateless seed, shape [2]."""
        raise NotImplementedError

    def kl(self, posterior: tfd.Distribution, z: tf.Tensor, conditions: tf.Tensor) -> tf.Tensor:
        """KL(q(z | x, c) ‖ p(z | c)) per image, [N]: by default the one-sample Monte Carlo
        estimate at `z`, an unbiased estimate of the KL."""
        return posterior.log_prob(z) - self.log_prob(z, conditions)

    def kl_per_dimension(self, posterior: tfd.Distribution, conditions: tf.Tensor) -> tf.Tensor:
        """The KL of each latent dimension, [N, L], summing to `kl`; only where `factorises`."""
        raise NotImplementedError(f"{type(self).__name__} does not factorise over latent dimensions")


class GaussianPrior(Prior):
    """A diagonal Gaussian p(z | c) = N(μ(c), diag σ²(c)): closed-form KL, per dimension too."""

    def moments(self, conditions: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """μ(c) and σ(c), each [N, L]."""
        raise NotImplementedError

    def distribution(self, conditions: tf.Tensor) -> tfd.Distribution:
        """p(z | c) with batch shape [N] and event shape [L]."""
        mean, scale = self.moments(conditions)
        return tfd.MultivariateNormalDiag(loc=mean, scale_diag=scale)

    def log_prob(self, z, conditions):
        return self.distribution(conditions).log_prob(z)

    def sample(self, conditions, seed):
        mean, scale = self.moments(conditions)
        return mean + scale * tf.random.stateless_normal(tf.shape(mean), seed=seed)

    def kl(self, posterior, z, conditions):
        return tfd.kl_divergence(posterior, self.distribution(conditions))

    def kl_per_dimension(self, posterior, conditions):
        return diagonal_gaussian_kl(posterior, self.distribution(conditions))


@keras.saving.register_keras_serializable(package="keras_cvae")
class StandardNormal(GaussianPrior):
    """p(z) = N(0, I), the same for every condition: the default."""

    def moments(self, conditions):
        zeros = tf.zeros(tf.stack([tf.shape(conditions)[0], self.latent_dim]))
        return zeros, tf.ones_like(zeros)


PRIORS: dict[str, type[Prior]] = {"standard": StandardNormal}


def get_prior(name: str, latent_dim: int) -> Prior:
    """The prior called `name` over `latent_dim` dimensions; a ValueError listing the names otherwise."""
    if name not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {name!r}")
    return PRIORS[name](latent_dim, name=f"{name}_prior")
