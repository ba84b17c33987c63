"""p(z | c): the prior over the latent code, as a component every consumer goes through:
N(0, I) (`StandardNormal`), a learned Gaussian mixture (`GaussianMixture`) or the VampPrior
(`VampPrior`), the mixtures optionally one set of components per class, or a Gaussian whose
moments a network computes from c (`ConditionalGaussian`, the structured-output CVAE's prior
network).

The training loss, the importance-weighted log-weights, evaluation's ELBO and per-dimension KL,
free bits, `generate`, the sample grids and the export's signatures all ask the model's
`prior` (a `Prior`) for log-probabilities, samples and KLs; none of them writes N(0, I) itself.
Adding a prior means one class here and one entry in PRIORS (its name is also a `--prior`
choice, `config.PRIORS`, which a test holds equal to this registry).

`conditions` is always the model's condition vector [N, W] (`models.base.condition_vector`;
W = 0 for a plain VAE), so a prior may depend on c.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np
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

    @classmethod
    def for_model(cls, latent_dim: int, *, components: int | None, image_shape: Sequence[int], condition_width: int,
                  class_group: tuple[int, int] | None, name: str) -> Prior:
        """The prior a CVAE builds from its `prior` name: `class_group` is (offset, width) of the
        first categorical condition's one-hot group in the condition vector, or None."""
        return cls(latent_dim, name=name)

    def attach(self, encode: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]) -> None:
        """The model's encoder, (images, condition vectors) → (mean, log-variance), for a prior
        built from it (the VampPrior); the others ignore it."""

    def log_prob(self, z: tf.Tensor, conditions: tf.Tensor) -> tf.Tensor:
        """log p(z | c) for z [..., N, L] and conditions [N, W]: [..., N]."""
        raise NotImplementedError

    def sample(self, conditions: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One z per row of `conditions` [N, W], [N, L]; `seed` is a stateless seed, shape [2]."""
        raise NotImplementedError

    def kl(self, posterior: tfd.Distribution, z: tf.Tensor, conditions: tf.Tensor) -> tf.Tensor:
        """KL(q(z | x, c) ‖ p(z | c)) per image, [N]: by default `monte_carlo_kl`."""
        return self.monte_carlo_kl(posterior, z, conditions)

    def monte_carlo_kl(self, posterior: tfd.Distribution, z: tf.Tensor, conditions: tf.Tensor) -> tf.Tensor:
        """The one-sample Monte Carlo estimate of the KL per image, [N]: log q(z | x, c) −
        log p(z | c) at `z` drawn from q, an unbiased estimate of the KL."""
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


@keras.saving.register_keras_serializable(package="keras_cvae")
class ConditionalGaussian(GaussianPrior):
    """A learned p(z | c) = N(μ(c), diag σ²(c)): Sohn et al.'s (2015) prior network.

    The network belongs to the model (its weights are saved with the model's other networks);
    the model attaches it as a function of the condition vector, c → (μ, log σ²), and this
    prior owns the Gaussian's maths: log-probabilities, draws and the closed-form KL, in total
    and per dimension.
    """

    def __init__(self, latent_dim: int = 20, **kwargs) -> None:
        self._network = None
        super().__init__(latent_dim, **kwargs)

    def attach(self, network: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]) -> None:
        """The prior network, condition vectors [N, W] → (mean, log-variance), each [N, L]."""
        self._network = network

    def moments(self, conditions):
        if self._network is None:
            raise ValueError("ConditionalGaussian needs its prior network: call `attach(network)` first")
        mean, log_var = self._network(conditions)
        return mean, tf.exp(0.5 * log_var)


class MixturePrior(Prior):
    """A mixture of diagonal Gaussians, optionally one set of components per class of the first
    categorical condition (its one-hot group at `class_offset` in the condition vector, of width
    `num_classes`; 0 classes: one set for every condition). It does not factorise over
    dimensions: the KL is the one-sample Monte Carlo estimate, free bits are refused and
    metrics.json has no `kl_per_dim`.

    Args:
        latent_dim: int. Size of z.
        num_components: int. Components per class (or in all, without classes).
        num_classes: int. Classes of the first categorical condition the components are split by;
            0 for one set. Defaults to 0.
        class_offset: int. Where that condition's one-hot group starts in the condition vector.
            Defaults to 0.
    """

    factorises = False
    DEFAULT_COMPONENTS = 10

    def __init__(self, latent_dim: int = 20, num_components: int = 10, num_classes: int = 0, class_offset: int = 0,
                 **kwargs) -> None:
        self.num_components, self.num_classes, self.class_offset = int(num_components), int(num_classes), int(class_offset)
        if self.num_components < 1:
            raise ValueError(f"num_components must be at least 1, got {num_components}")
        super().__init__(latent_dim, **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_components": self.num_components, "num_classes": self.num_classes,
                "class_offset": self.class_offset}

    @classmethod
    def for_model(cls, latent_dim, *, components, image_shape, condition_width, class_group, name):
        """One set of components per class of the first categorical condition, when there is one:
        `components` (default DEFAULT_COMPONENTS) in all, split evenly over the classes."""
        offset, classes = class_group or (0, 0)
        total = cls.DEFAULT_COMPONENTS if components is None else int(components)
        if total < max(classes, 1):
            raise ValueError(f"prior_components must be at least the {classes} classes it is split over, got {total}")
        return cls(latent_dim, total // max(classes, 1), classes, offset, **cls._shape_arguments(image_shape, condition_width),
                   name=name)

    @staticmethod
    def _shape_arguments(image_shape: Sequence[int], condition_width: int) -> dict:
        return {}

    @property
    def sets(self) -> int:
        """How many sets of components there are: one per class, or one."""
        return max(self.num_classes, 1)

    def class_index(self, conditions: tf.Tensor) -> tf.Tensor:
        """Each row's set of components, [N]: its class, or 0."""
        if not self.num_classes:
            return tf.zeros([tf.shape(conditions)[0]], tf.int32)
        one_hot = conditions[:, self.class_offset:self.class_offset + self.num_classes]
        return tf.argmax(one_hot, axis=-1, output_type=tf.int32)

    def component_moments(self) -> tuple[tf.Tensor, tf.Tensor]:
        """Every set's components' means and scales, each [sets, components, L]."""
        raise NotImplementedError

    def distribution(self, conditions: tf.Tensor) -> tfd.Distribution:
        """p(z | c) with batch shape [N]: an equally weighted mixture over the row's components."""
        means, scales = (tf.gather(t, self.class_index(conditions)) for t in self.component_moments())
        return tfd.MixtureSameFamily(
            tfd.Categorical(logits=tf.zeros(tf.shape(means)[:2])),
            tfd.Independent(tfd.Normal(means, scales), reinterpreted_batch_ndims=1))

    def log_prob(self, z, conditions):
        """log p(z | c), z [..., N, L]: the log-mean-exp of log N(z; μ_m, σ_m) over the row's set.

        `distribution(conditions).log_prob` gives the same numbers but forms [..., N, components,
        L] tensors, gigabytes at K = 5,000 importance draws of a VampPrior with 500 components.
        Here the square Σ_l (z_l − μ_ml)²/σ²_ml is expanded into two matrix products with every
        component, [..., N, sets·components], in float64 so that the expansion loses nothing."""
        means, scales = self.component_moments()  # [sets, M, L]
        means = tf.reshape(tf.cast(means, tf.float64), [-1, self.latent_dim])
        precisions = tf.reshape(tf.cast(scales, tf.float64) ** -2, [-1, self.latent_dim])
        rows = tf.cast(tf.reshape(z, [-1, self.latent_dim]), tf.float64)
        square = (tf.matmul(rows ** 2, precisions, transpose_b=True)
                  - 2.0 * tf.matmul(rows, means * precisions, transpose_b=True)
                  + tf.reduce_sum(means ** 2 * precisions, axis=-1))
        log_norm = 0.5 * tf.reduce_sum(tf.math.log(precisions), axis=-1) - 0.5 * self.latent_dim * np.log(2.0 * np.pi)
        log_components = tf.reshape(log_norm - 0.5 * square,
                                    tf.concat([tf.shape(z)[:-1], [self.sets, self.num_components]], 0))
        # The row's own set: a one-hot over the sets, [N, sets, 1], broadcast over leading draws.
        own = tf.one_hot(self.class_index(conditions), self.sets, dtype=tf.float64)[..., None]
        log_own = tf.reduce_sum(log_components * own, axis=-2)
        log_p = tf.reduce_logsumexp(log_own, axis=-1) - np.log(float(self.num_components))
        return tf.cast(log_p, z.dtype)

    def sample(self, conditions, seed):
        return self.distribution(conditions).sample(seed=seed)


@keras.saving.register_keras_serializable(package="keras_cvae")
class GaussianMixture(MixturePrior):
    """K learnable diagonal Gaussians (means initialised N(0, 1), scales 1), equally weighted;
    with `num_classes`, K of them for each class."""

    def build(self, input_shape=None) -> None:
        shape = (self.sets, self.num_components, self.latent_dim)
        self.means = self.add_weight(name="means", shape=shape, initializer=keras.initializers.RandomNormal(seed=0))
        self.log_scales = self.add_weight(name="log_scales", shape=shape, initializer="zeros")
        super().build(input_shape)

    def component_moments(self):
        return tf.convert_to_tensor(self.means), tf.exp(tf.convert_to_tensor(self.log_scales))


@keras.saving.register_keras_serializable(package="keras_cvae")
class VampPrior(MixturePrior):
    """The VampPrior (Tomczak & Welling 2018): p(z | c) = (1/M) Σ_m q(z | u_m, c_m), the model's
    own encoder at M learnable pseudo-inputs u_m (images, sigmoid of a learned weight, initially
    near grey). With `num_classes`, each pseudo-input carries a class: its condition vector is
    that class's one-hot group with every other entry 0, and p(z | c) mixes the M pseudo-inputs
    of c's class. The model attaches its encoder (`attach`); the pseudo-inputs are this layer's.

    Args (beyond MixturePrior's):
        image_shape: tuple of 3 ints. The pseudo-inputs' shape, the model's images'.
        condition_width: int. The condition vector's length (0 for a plain VAE).
    """

    DEFAULT_COMPONENTS = 500  # the paper's

    def __init__(self, latent_dim: int = 20, num_components: int = 500, num_classes: int = 0, class_offset: int = 0,
                 image_shape: Sequence[int] = (28, 28, 1), condition_width: int = 0, **kwargs) -> None:
        self.image_shape, self.condition_width = tuple(int(d) for d in image_shape), int(condition_width)
        self._encode = None
        super().__init__(latent_dim, num_components, num_classes, class_offset, **kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "image_shape": list(self.image_shape), "condition_width": self.condition_width}

    @staticmethod
    def _shape_arguments(image_shape: Sequence[int], condition_width: int) -> dict:
        return {"image_shape": image_shape, "condition_width": condition_width}

    def build(self, input_shape=None) -> None:
        self.pseudo_inputs = self.add_weight(
            name="pseudo_inputs", shape=(self.sets * self.num_components, *self.image_shape),
            initializer=keras.initializers.RandomNormal(stddev=0.01, seed=0))
        super().build(input_shape)

    def attach(self, encode: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]) -> None:
        """Give the prior the encoder it mixes: (images, condition vectors) → (mean, log-variance)."""
        self._encode = encode

    def pseudo_conditions(self) -> tf.Tensor:
        """Each pseudo-input's condition vector, [sets·M, W]: its class's one-hot (or zeros)."""
        count = self.sets * self.num_components
        vectors = np.zeros((count, self.condition_width), np.float32)
        if self.num_classes:
            classes = np.repeat(np.arange(self.num_classes), self.num_components)
            vectors[np.arange(count), self.class_offset + classes] = 1.0
        return tf.constant(vectors)

    def component_moments(self):
        if self._encode is None:
            raise ValueError("a VampPrior needs its model's encoder: the CVAE attaches it")
        mean, log_var = self._encode(tf.sigmoid(self.pseudo_inputs), self.pseudo_conditions())
        shape = [self.sets, self.num_components, self.latent_dim]
        return tf.reshape(mean, shape), tf.reshape(tf.exp(0.5 * log_var), shape)


# The priors a CVAE builds by name (ConditionalGaussian needs a model's prior network: the
# completion model attaches its own).
PRIORS: dict[str, type[Prior]] = {"standard": StandardNormal, "mixture": GaussianMixture, "vamp": VampPrior}


def get_prior(name: str, latent_dim: int, *, components: int | None = None, image_shape: Sequence[int] = (28, 28, 1),
              condition_width: int = 0, class_group: tuple[int, int] | None = None) -> Prior:
    """The prior called `name` for a model of these shapes (see `Prior.for_model`); a ValueError
    listing the names otherwise."""
    if name not in PRIORS:
        raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {name!r}")
    return PRIORS[name].for_model(latent_dim, components=components, image_shape=image_shape,
                                  condition_width=condition_width, class_group=class_group, name=f"{name}_prior")
