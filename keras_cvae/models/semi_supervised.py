"""The semi-supervised CVAE (Kingma, Rezende, Mohamed and Welling 2014, "M2"): the class y is
observed for a few training images and latent for the rest.

    generative model   p(y) = uniform,  p(z) = N(0, I),  p(x | y, z)   (the CVAE's decoder)
    inference          q(y | x)  (a classifier),  q(z | x, y)  (the CVAE's encoder)

A labelled image gets the CVAE's bound on log p(x, y):
    L(x, y) = E_q(z|x,y)[log p(x | y, z)] + log p(y) − KL(q(z | x, y) ‖ p(z)).
An unlabelled image gets the bound on log p(x) with y summed out under q(y | x):
    U(x) = Σ_y q(y | x) L(x, y) + H(q(y | x)).
Every class is enumerated in one batched pass inside the compiled step (the images tiled K
times), so L(x, y) is computed for all K classes of every image, and a labelled image's bound is
the column of its own class.

The objective per image of the data set (Kingma et al.'s J^α divided by the data set's size N):
    f · mean_labelled [L(x, y) + w · log q(y | x)] + (1 − f) · mean_unlabelled U(x),
with f the labelled share of the training set and w = `classifier_weight`, a multiplier per
labelled example relative to its own bound, the same for any N. The paper's α = 0.1·N is
w = 0.1·N/n_labelled (54 for 100 labels of 54,000 images); Pyro's SS-VAE uses 46. A batch holds
more labelled images than f (see data.make_mixed_pipeline); each image's terms are weighted so
that the batch mean is this objective.

The class enters both networks at `condition_scale` 1 (a plain one-hot, as in Kingma's and Pyro's
code), not the fully labelled CVAE's 10: at 10, the bounds L(x, y) of an untrained model already
differ by tens of nats between classes, and U(x) locks q(y | x) onto the decoder's arbitrary
clusters before the labels can anchor it.

With `classifier_average` d > 0, an exponential moving average of q(y | x)'s weights (Polyak
averaging) is kept beside the trained classifier, and q(y | x) outside training (validation, the
epoch kept, `classify`, exports) is the averaged network: the trained one's accuracy moves by a
point or two from epoch to epoch at 100 labels, and the average smooths that noise out.
"""

from __future__ import annotations

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.conditions import CATEGORICAL
from keras_cvae.models.base import as_unit_range, global_batch_size
from keras_cvae.models.cvae import CVAE
from keras_cvae.networks import ONE_HOT_SCALE, build_classifier

tfd = tfp.distributions

ACCURACY = "accuracy"  # the extra metric: q(y | x)'s accuracy where the label is known
CLASSIFIER_STEPS = ("joint", "separate")  # config.CLASSIFIER_STEPS
# w per labelled example: the best on validation of 50, 200 and 1000 (100 labels of the MNIST
# subset, 3,000 steps, benchmarks/results/semi_supervised/weight_sweep/); the paper's α is 54
# here, Pyro's 46.
DEFAULT_CLASSIFIER_WEIGHT = 1000.0
AVERAGE_WARMUP = 10.0  # the decay at step t is min(d, (1 + t) / (AVERAGE_WARMUP + t))


def average_weights(averaged: list, live: list, decay: float, step: tf.Tensor) -> None:
    """averaged ← r·averaged + (1 − r)·live, r = min(`decay`, (1 + step)/(AVERAGE_WARMUP + step)): an exponential
    moving average whose early steps follow the live weights (tf.train.ExponentialMovingAverage's
    `num_updates`), so that no trace of the initial weights lingers in it."""
    step = tf.cast(step, tf.float32)
    rate = tf.minimum(decay, (1.0 + step) / (AVERAGE_WARMUP + step))
    for target, source in zip(averaged, live, strict=True):
        target.assign(rate * target + (1.0 - rate) * source)


def marginal_bound(label_posterior: tfd.Categorical, per_class_elbo: tf.Tensor) -> tf.Tensor:
    """U(x) = Σ_y q(y | x) L(x, y) + H(q(y | x)), [N], from q(y | x) and L(x, y) [N, K]: the bound on
    log p(x) with the class summed out. It is at most log Σ_y exp L(x, y), with equality when
    q(y | x) ∝ exp L(x, y)."""
    weights = label_posterior.probs_parameter()
    return tf.reduce_sum(weights * per_class_elbo, axis=-1) + label_posterior.entropy()


@keras.saving.register_keras_serializable(package="keras_cvae")
class SemiSupervisedCVAE(CVAE):
    """M2: a CVAE whose one categorical condition (the class) may be missing, plus a classifier
    q(y | x). Rows of −1 mark a missing label.

    Args (beyond CVAE's, which it takes as they are; it must condition on its class):
        num_labeled: int. How many training images keep their label. Defaults to 1.
        num_train: int. How many training images there are. Defaults to 1 (every image labelled).
        classifier_weight: float. w, the weight of −log q(y | x) on a labelled image relative to
            that image's bound (module docstring). Defaults to DEFAULT_CLASSIFIER_WEIGHT.

        classifier_step: str. "joint": the classification term is part of each batch's loss;
            "separate": each batch takes a second optimizer step on the classification term
            alone, on the classifier's weights, after the step on the bound (Pyro's SS-VAE
            `--aux-loss`). Defaults to "joint".
        classifier_average: float. d in [0, 1): the decay of an exponential moving average of
            q(y | x)'s weights, used outside training (module docstring); 0 turns it off.
            Defaults to 0.

    The class enters the networks at `condition_scale` 1 unless given. A config without
    `condition_scale` is a keras_cvae 0.1 model's: its scale was 10 and its `classifier_weight`
    was a = w·f per image of the data set; `from_config` converts both.

    Example:
        >>> model = SemiSupervisedCVAE(num_classes=10, num_labeled=100, num_train=54000)
        >>> probabilities = model.classify(images)  # [N, 10], rows sum to 1
    """

    default_condition_scale = 1.0

    def __init__(self, *args, num_labeled: int = 1, num_train: int = 1,
                 classifier_weight: float = DEFAULT_CLASSIFIER_WEIGHT, classifier_step: str = "joint",
                 classifier_average: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.conditional or len(self.conditions) != 1 or self.conditions[0].kind != CATEGORICAL:
            raise ValueError("the semi-supervised CVAE conditions on exactly one categorical condition, the class")
        if not 0 < num_labeled <= num_train:
            raise ValueError(f"num_labeled must be in [1, num_train={num_train}], got {num_labeled}")
        if classifier_weight < 0:
            raise ValueError(f"classifier_weight must be >= 0, got {classifier_weight}")
        self.num_labeled, self.num_train = int(num_labeled), int(num_train)
        self.classifier_weight = float(classifier_weight)
        if classifier_step not in CLASSIFIER_STEPS:
            raise ValueError(f"classifier_step must be one of {', '.join(CLASSIFIER_STEPS)}, got {classifier_step!r}")
        self.classifier_step = classifier_step
        if not 0.0 <= classifier_average < 1.0:
            raise ValueError(f"classifier_average must be in [0, 1), got {classifier_average}")
        self.classifier_average = float(classifier_average)
        self.classifier = self._build_classifier("classifier")
        # The average starts from the classifier's initial weights; the first steps replace them.
        self.averaged_classifier = self._build_classifier("averaged_classifier") if self.classifier_average else None
        if self.averaged_classifier is not None:
            self.averaged_classifier.trainable = False
            self.averaged_classifier.set_weights(self.classifier.get_weights())
        self.trackers[ACCURACY] = keras.metrics.Mean(name=ACCURACY)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_labeled": self.num_labeled, "num_train": self.num_train,
                "classifier_weight": self.classifier_weight, "classifier_step": self.classifier_step,
                "classifier_average": self.classifier_average}

    @classmethod
    def from_config(cls, config: dict) -> SemiSupervisedCVAE:
        """Also builds a keras_cvae 0.1 model (no `condition_scale` in its config) as it was
        trained: condition scale 10, and its per-data-set-image weight a made w = a / f."""
        if "condition_scale" not in config:
            fraction = config.get("num_labeled", 1) / config.get("num_train", 1)
            config = {**config, "condition_scale": ONE_HOT_SCALE,
                      "classifier_weight": config.get("classifier_weight", 0.1) / fraction}
        return super().from_config(config)

    @property
    def labeled_fraction(self) -> float:
        """f: the share of the training set that is labelled."""
        return self.num_labeled / self.num_train

    # -- distributions over the class -------------------------------------------------------

    def _build_classifier(self, name: str) -> keras.Model:
        return build_classifier(self.image_shape, self.num_classes, self.arch, self.hidden_units, name=name,
                                activation=self.activation, kernel_initializer=self.initializer)

    def label_posterior(self, images: tf.Tensor, training: bool = False) -> tfd.Categorical:
        """q(y | x): the trained classifier in training, else its average where one is kept."""
        network = self.classifier if training or self.averaged_classifier is None else self.averaged_classifier
        logits = network(tf.convert_to_tensor(images, tf.float32), training=training)
        return tfd.Categorical(logits=tf.cast(logits, tf.float32))

    def label_prior(self) -> tfd.Categorical:
        """p(y): uniform over the classes."""
        return tfd.Categorical(logits=tf.zeros([self.num_classes]))

    def classify(self, images: tf.Tensor) -> tf.Tensor:
        """q(y | x) as probabilities [N, K]."""
        return self.label_posterior(images).probs_parameter()

    # -- the objective ------------------------------------------------------------------------

    def per_class_terms(self, images: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """For every image and every class y, [N, K]: `reconstruction` −log p(x | y, z) (one
        z ~ q(z | x, y)), `kl` KL(q(z | x, y) ‖ p(z)) and `elbo` L(x, y) (log p(y) included).
        One batched pass over the images tiled K times, class-major."""
        count, classes = tf.shape(images)[0], self.num_classes
        tiled = tf.tile(images, [classes, 1, 1, 1])
        labels = tf.cast(tf.repeat(tf.range(classes), count), tf.float32)[:, tf.newaxis]
        z_mean, z_log_var = self.encode(tiled, labels, training=training)
        posterior = self.posterior(z_mean, z_log_var)
        # The same ε under every class (common random numbers): each L(x, y) is still unbiased,
        # and their differences, which drive q(y | x), lose the noise of independent draws.
        z = z_mean + posterior.stddev() * tf.tile(self.noise([count, self.latent_dim]), [classes, 1])
        reconstruction = -self.log_likelihood(tiled, labels, z, training=training)
        kl = self.kl_terms(posterior, z, labels)[0]
        reconstruction, kl = (tf.transpose(tf.reshape(t, [classes, count])) for t in (reconstruction, kl))
        log_prior = self.label_prior().log_prob(tf.range(classes))  # [K]
        return {"reconstruction": reconstruction, "kl": kl, "elbo": log_prior - reconstruction - kl}

    def compute_terms(self, images: tf.Tensor, labels: tf.Tensor, training: bool = False) -> dict[str, tf.Tensor]:
        """Per-image terms weighted so that each one's batch mean is the objective's (module
        docstring): a label of −1 is missing and summed out; `accuracy` is over known labels."""
        return self._terms(images, labels, observed=self._known(labels), training=training)

    def train_step(self, data: tuple[tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The step on the loss; with `classifier_step` "separate", then a second step on the
        classification term alone, on the classifier's weights (the first step's loss leaves it out);
        then the classifier's average, where one is kept, takes in the new weights."""
        logs = super().train_step(data)
        if self.classifier_step == "separate":
            images, labels = self.unpack(data)
            with tf.GradientTape() as tape:
                terms = self._classification_terms(images, labels, training=True)
                loss = tf.nn.compute_average_loss(terms, global_batch_size=global_batch_size(terms))
                scaled_loss = self.optimizer.scale_loss(loss)
            variables = self.classifier.trainable_weights
            self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        if self.averaged_classifier is not None:
            average_weights(self.averaged_classifier.weights, self.classifier.weights, self.classifier_average,
                            self.optimizer.iterations)
        return logs

    def test_step(self, data: tuple[tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Validation reports the bound on log p(x) (every label summed out) and q(y | x)'s accuracy."""
        images, labels = as_unit_range(data[0]), data[1]
        hidden = tf.zeros_like(self._known(labels))
        return self._record(self._terms(images, labels, observed=hidden, training=False))

    def _classification_terms(self, images: tf.Tensor, labels: tf.Tensor, training: bool) -> tf.Tensor:
        """w · (the labelled images' batch weight) · −log q(y | x) per image, [N]: the
        classification term of `_terms`, alone."""
        observed, y = self._known(labels), self._class_indices(labels)
        cross_entropy = -self.label_posterior(images, training=training).log_prob(y)
        return self._weighted(cross_entropy, observed, self._batch_weights(observed)[0])

    def _weighted(self, cross_entropy: tf.Tensor, observed: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
        """The classification term per image: w · batch weight · −log q(y | x) where the label is known."""
        return self.classifier_weight * tf.where(observed, weight, 0.0) * cross_entropy

    def _batch_weights(self, observed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Each image's weight, [N], whose batch mean gives the objective: f for the labelled
        mean, 1 − f for the unlabelled one (all of it to a group alone in its batch;
        divide_no_nan keeps an empty group at 0), and the batch size."""
        size = tf.cast(tf.shape(observed)[0], tf.float32)
        num_observed = tf.reduce_sum(tf.cast(observed, tf.float32))
        num_hidden = size - num_observed
        share = tf.where(num_hidden == 0, 1.0, tf.where(num_observed == 0, 0.0, self.labeled_fraction))
        weight = tf.where(observed, tf.math.divide_no_nan(share * size, num_observed),
                          tf.math.divide_no_nan((1.0 - share) * size, num_hidden))
        return weight, size

    @staticmethod
    def _rows(labels: tf.Tensor) -> tf.Tensor:
        """The class column of condition rows, [N] (−1 where the label is missing)."""
        return tf.reshape(tf.cast(labels, tf.float32), [tf.shape(labels)[0], -1])[:, 0]

    def _known(self, labels: tf.Tensor) -> tf.Tensor:
        return self._rows(labels) >= 0

    def _class_indices(self, labels: tf.Tensor) -> tf.Tensor:
        """The class of each row, [N] int32 (0 where it is missing; only known ones are used)."""
        return tf.cast(tf.maximum(self._rows(labels), 0.0), tf.int32)

    def _terms(self, images: tf.Tensor, labels: tf.Tensor, observed: tf.Tensor, training: bool) -> dict[str, tf.Tensor]:
        known, y = self._known(labels), self._class_indices(labels)
        label_posterior = self.label_posterior(images, training=training)
        per_class = self.per_class_terms(images, training=training)
        own_class = tf.one_hot(y, self.num_classes)
        guessed = tf.cast(label_posterior.probs_parameter(), tf.float32)

        elbo = tf.where(observed, tf.reduce_sum(own_class * per_class["elbo"], axis=1),
                        marginal_bound(label_posterior, per_class["elbo"]))
        reconstruction = tf.reduce_sum(tf.where(observed[:, tf.newaxis], own_class, guessed) * per_class["reconstruction"],
                                       axis=1)
        cross_entropy = -label_posterior.log_prob(y)
        correct = tf.cast(tf.equal(tf.argmax(label_posterior.logits, axis=1, output_type=tf.int32), y), tf.float32)

        weight, size = self._batch_weights(observed)
        num_known = tf.reduce_sum(tf.cast(known, tf.float32))
        elbo, reconstruction = weight * elbo, weight * reconstruction
        kl = -elbo - reconstruction  # the rate: KL of z, and of y where it is summed out (or −log p(y))
        loss = reconstruction + self.beta * self.kl_weight * kl
        if self.classifier_step == "joint":
            loss += self._weighted(cross_entropy, observed, weight)
        return {
            "loss": loss,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl,
            "elbo": elbo,
            ACCURACY: tf.where(known, tf.math.divide_no_nan(size, num_known), 0.0) * correct,
        }
