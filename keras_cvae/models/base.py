"""What every keras_cvae model shares: `VariationalModel` (noise, metric trackers, train and
test steps) and the distribution helpers its subclasses build their ELBO from.

Reductions, stated once: log-probabilities are summed over pixels and latent dimensions (nats
per image), then averaged over the batch. A subclass's `compute_terms` is where its loss and
ELBO terms are computed for `train_step` and `test_step`. Evaluation works on exports too, which
have no `compute_terms`: it composes the model's `encode`, `log_likelihood` and
`log_importance_weights` (evaluation.estimators).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.conditions import CATEGORICAL, Condition
from keras_cvae.config import METRIC_NAMES

tfd = tfp.distributions

# The posterior's log-variance is squashed softly into [-LOG_VAR_BOUND, LOG_VAR_BOUND]
# (σ between e^-5 and e^5) with a scaled tanh: it keeps exp() finite and gradients alive.
LOG_VAR_BOUND = 10.0
# Noise draws one train step may make before the next step's seeds begin (see _seed_for_step).
DRAWS_PER_STEP = 16


def gaussian_posterior(z_mean: tf.Tensor, z_log_var: tf.Tensor) -> tfd.Distribution:
    """q(z | x, c) = N(z_mean, diag(exp(z_log_var)))."""
    return tfd.MultivariateNormalDiag(loc=z_mean, scale_diag=tf.exp(0.5 * z_log_var))


def as_unit_range(images: tf.Tensor) -> tf.Tensor:
    """Float32 images in [0, 1]: uint8 pixels (what `make_pipeline` ships) are divided by 255,
    inside the compiled step where the division costs nothing; float images pass unchanged."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def log_importance_weights(model, images: tf.Tensor, labels: tf.Tensor | None, eps: tf.Tensor,
                           fused: bool = False) -> tf.Tensor:
    """The importance-weighted bound's log-weights (Burda et al. 2016), [K, N]:
    log p(x | z_k, c) + log p(z_k | c) − log q(z_k | x, c) for z_k = μ + σ·ε_k, ε [K, N, L], in one
    batched pass (the images tiled K times inside the graph). `model` is anything with
    `encode(images, labels)`, `log_likelihood(images, labels, z)` and `log_prior(z, labels)` in
    TensorFlow ops; `fused` passes `fused=True` to `log_likelihood`, for the likelihood's
    XLA-compiled form (in-process evaluation; never in an export)."""
    images = tf.convert_to_tensor(images, tf.float32)
    eps = tf.convert_to_tensor(eps, tf.float32)
    z_mean, z_log_var = model.encode(images, labels)
    posterior = gaussian_posterior(z_mean, z_log_var)
    z = z_mean + posterior.stddev() * eps  # [K, N, L]
    draws, count, latent_dim = tf.shape(eps)[0], tf.shape(eps)[1], tf.shape(eps)[2]
    rows = tf.zeros([count, 0]) if labels is None else tf.cast(tf.reshape(labels, [count, -1]), tf.float32)
    log_px = model.log_likelihood(tf.tile(images, [draws, 1, 1, 1]), tf.tile(rows, [draws, 1]),
                                  tf.reshape(z, [draws * count, latent_dim]), **({"fused": True} if fused else {}))
    return tf.reshape(log_px, [draws, count]) + model.log_prior(z, labels) - posterior.log_prob(z)


def global_batch_size(per_replica: tf.Tensor) -> tf.Tensor:
    """The number of images in this step across all replicas (this replica's alone on one)."""
    size = tf.shape(per_replica)[0]
    replica = tf.distribute.get_replica_context()
    if replica is None or replica.num_replicas_in_sync == 1:
        return size
    return replica.all_reduce(tf.distribute.ReduceOp.SUM, size)


@contextlib.contextmanager
def global_dtype_policy(name: str) -> Iterator[None]:
    """Layers built inside compute in `name` ("float32", "mixed_bfloat16", …); restored after."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


class VariationalModel(keras.Model):
    """What the CVAE and the structured-output CVAE share: the KL weight, the noise, the metric
    trackers and the train/test steps. A subclass defines `compute_terms(images, labels,
    training)`, which returns per-image tensors named as in METRIC_NAMES."""

    def __init__(self, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        # The KL weight for warm-up (set by the KLWarmup callback); saved with the checkpoint.
        self.kl_weight = self.add_weight(
            name="kl_weight", shape=(), initializer="ones", trainable=False
        )
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listed here so that Keras resets them at the start of every epoch.
        return list(self.trackers.values())

    def compute_terms(self, images: tf.Tensor, labels: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        raise NotImplementedError

    def sample(self, distribution: tfd.Distribution, num_samples: int | None = None) -> tf.Tensor:
        """z = μ + σ·ε from a diagonal Gaussian, [N, L] (or [K, N, L]): the reparameterised
        sample that gradients flow through, with noise from the model's seed generator."""
        mean = distribution.mean()
        shape = tf.shape(mean) if num_samples is None else tf.concat([[num_samples], tf.shape(mean)], 0)
        return mean + distribution.stddev() * self.noise(shape)

    def noise(self, shape: tf.Tensor) -> tf.Tensor:
        """Standard normal noise of `shape` from the model's seed generator.

        Under several replicas the replica's id is folded into the seed: the generator's state
        is copied to every replica, which would otherwise draw the same ε for different images.
        """
        seed = self.seed_generator.next()
        replica = tf.distribute.get_replica_context()
        if replica is not None and replica.num_replicas_in_sync > 1:
            seed = tf.random.experimental.stateless_fold_in(seed, replica.replica_id_in_sync_group)
        # Philox named explicitly: `keras.random.normal` leaves the algorithm to "auto_select",
        # which XLA's CPU backend turns into a generator ten times slower than Philox.
        return tf.random.stateless_normal(shape, seed=seed, alg="philox")

    def _seed_for_step(self) -> None:
        """Make this train step's noise a function of the seed and the step number alone, so that
        a run resumed from a checkpoint draws what the uninterrupted run drew (the generator's
        state is not saved with the model; the optimizer's step count is)."""
        state = self.seed_generator.state
        step = tf.cast(self.optimizer.iterations, state.dtype) * DRAWS_PER_STEP
        state.assign(tf.stack([state[0], step]))

    def _record(self, terms: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        # Each tracker gets its batch mean weighted by the batch size (the same running mean as
        # feeding it the per-image values), all means from one reduction of the stacked terms:
        # summing each [N] term alone lets XLA fuse the sum with the per-image sum over pixels
        # into one slow scalar reduction. A replica's empty share of a short last batch has
        # weight 0 and mean 0 (not 0/0), so it adds nothing.
        stacked = tf.stack([terms[name] for name in self.trackers], axis=1)  # [N, 4]
        batch_size = tf.cast(tf.shape(stacked)[0], tf.float32)
        batch_means = tf.unstack(tf.math.divide_no_nan(tf.reduce_sum(stacked, axis=0), batch_size))
        for tracker, batch_mean in zip(self.trackers.values(), batch_means):
            tracker.update_state(batch_mean, sample_weight=batch_size)
        results = {name: tracker.result() for name, tracker in self.trackers.items()}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras 3.15 reduces a multi-worker step's outputs with MEAN along axis 0, which a
            # scalar lacks; shape [1] reduces to the mean over replicas. Epoch logs still come
            # from the trackers themselves.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def unpack(self, data: tf.Tensor | tuple) -> tuple[tf.Tensor, tf.Tensor | None]:
        """(images in [0, 1], condition rows or None) of a batch: `x`, `(x,)` or `(x, y)`, as
        `fit(x)`, `fit(x, y)` and a `tf.data.Dataset` of either give it."""
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if labels is None and self.needs_labels:
            raise ValueError(f"{type(self).__name__} is conditional: pass its conditions, fit(x, y) "
                             "(y int [N] or rows [N, M]); a plain VAE is conditional=False")
        return as_unit_range(images), labels

    @property
    def needs_labels(self) -> bool:
        """Whether a batch must carry condition rows beside its images."""
        return True

    def train_step(self, data: tf.Tensor | tuple) -> dict[str, tf.Tensor]:
        images, labels = self.unpack(data)
        self._seed_for_step()
        with tf.GradientTape() as tape:
            terms = self.compute_terms(images, labels, training=True)
            # The replica's sum divided by the global batch size (summed over replicas): summed
            # over replicas, as tf.distribute does, the gradient is that of the global batch's
            # mean loss, also when a short last batch splits unevenly (or leaves a replica none).
            loss = tf.nn.compute_average_loss(terms["loss"], global_batch_size=global_batch_size(terms["loss"]))
            # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer, which scales
            # here and unscales in `apply`; for any other optimizer this returns `loss` unchanged.
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_weights)
        self.optimizer.apply(gradients, self.trainable_weights)
        return self._record(terms)

    def test_step(self, data: tf.Tensor | tuple) -> dict[str, tf.Tensor]:
        images, labels = self.unpack(data)
        return self._record(self.compute_terms(images, labels, training=False))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None) -> None:
        # Keras (3.15) peeks at the first batch and MEAN-reduces it across replicas before
        # training under a tf.distribute strategy; under MultiWorkerMirroredStrategy that reduce
        # fails ("Attempt to convert a value (PerReplica…)"). These models are built in
        # __init__ and have no compiled losses or metrics, so no batch is needed to build them.
        super()._maybe_symbolic_build(iterator=None, data_batch=data_batch)

    def float32_copy(self) -> VariationalModel:
        """This model computing in float32 (itself if it already does), e.g. for export."""
        if self.compute_dtype == "float32":
            return self
        with global_dtype_policy("float32"):
            copy = type(self).from_config(self.get_config())
        copy.set_weights(self.get_weights())
        return copy


def free_bits_kl(kl_per_dim: tf.Tensor, free_bits: float) -> tf.Tensor:
    """The KL the loss pays with free bits λ (Kingma et al. 2016, per latent dimension), per image [N]:
    Σ_j KL_ij where dimension j's batch-mean KL is at least λ, else λ. Its batch mean is
    Σ_j max(λ, mean_i KL_ij), and a dimension under λ gets no gradient, so the encoder may use
    λ nats of it for free. λ = 0 is the plain KL."""
    if free_bits <= 0:
        return tf.reduce_sum(kl_per_dim, axis=-1)
    batch_mean = tf.reduce_mean(kl_per_dim, axis=0)
    return tf.reduce_sum(tf.where(batch_mean >= free_bits, kl_per_dim, free_bits), axis=-1)


def bounded_log_var(log_var: tf.Tensor, clip: tuple[float, float] | None = None) -> tf.Tensor:
    """A network's log-variance in float32: clipped to `clip` (low, high) as a hardtanh, or
    without one squashed softly into ±LOG_VAR_BOUND."""
    log_var = tf.cast(log_var, tf.float32)
    if clip is not None:
        return tf.clip_by_value(log_var, clip[0], clip[1])
    return LOG_VAR_BOUND * tf.tanh(log_var / LOG_VAR_BOUND)


def condition_vector(rows: tf.Tensor, conditions: tuple[Condition, ...]) -> tf.Tensor:
    """The networks' condition vector of condition rows [N, M] (a column per condition: a category
    index or a value in the data's units; [N] for one condition): one-hot groups for categorical
    conditions, (value − mean) / std for continuous ones, concatenated in order, [N, Σ widths]."""
    rows = tf.convert_to_tensor(rows)
    if rows.shape.rank == 1:
        rows = rows[:, tf.newaxis]
    rows = tf.cast(rows, tf.float32)
    parts = []
    for index, condition in enumerate(conditions):
        column = rows[:, index]
        if condition.kind == CATEGORICAL:
            parts.append(tf.one_hot(tf.cast(column, tf.int32), len(condition.values)))
        else:
            parts.append(((column - condition.mean) / condition.std)[:, tf.newaxis])
    return tf.concat(parts, axis=1)
