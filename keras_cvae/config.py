"""Run configuration: three dataclasses, their JSON round trip, and the one declaration of every
setting.

Each field's metadata (`setting(...)`) is the only place a training setting is declared: its
flag, help, choices, whether a resumed run may change it, and when a run uses it. The train
command's parser is generated from it (`cli.common.add_config_flags`), so adding a setting means
adding a field here and the code that reads it. Help texts and error messages name settings by
their Python names in backticks (`latent_dim`, `task=completion`); the command line shows them as
flags (`cli.common.as_flags`). The configuration is plain data so that it can
be validated before TensorFlow is imported, stored beside the weights (`config.json`), and
reloaded without asking for anything again.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHITECTURES = ("mlp", "conv", "resnet")  # networks.NETWORKS
ACTIVATIONS = ("relu", "gated", "softplus")  # networks.ACTIVATIONS
PRIORS = ("standard", "mixture", "vamp")  # priors.PRIORS
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# "classes": p(x | class); "completion": complete an image from some of its quadrants;
# "semi_supervised": p(x | class) from a few labels, the class latent elsewhere (M2).
TASKS = ("classes", "completion", "semi_supervised")
QUADRANT_COUNTS = (1, 2, 3)
OBJECTIVES = ("baseline", "cvae", "gsnn", "hybrid")  # see models/completion.py
KL_OBJECTIVES = ("cvae", "hybrid")  # the completion objectives with a KL term
LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")
BINARIZATIONS = ("none", "dynamic")
KL_SCHEDULES = ("constant", "linear", "cyclical")
MONITORS = ("val_elbo", "val_accuracy")  # callbacks.MONITOR_MODES
KL_ESTIMATES = ("analytic", "monte_carlo")
INITIALIZERS = ("glorot_uniform", "he_normal")  # networks.INITIALIZERS
CLASSIFIER_STEPS = ("joint", "separate")  # models.semi_supervised.CLASSIFIER_STEPS
# What train_step and test_step report, per image in nats (the history's columns).
METRIC_NAMES = ("loss", "reconstruction_loss", "kl_loss", "elbo")
DEFAULT_HIDDEN_UNITS = {"mlp": (400,), "conv": (128,), "resnet": (128,)}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and the fix."""


def hidden_units(text: str) -> tuple[int, ...]:
    """`--hidden-units` text: one integer or several joined by commas."""
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected integers like 400 or 512,256, got {text!r}") from None


def _log_var_range(text: str) -> tuple[float, float]:
    """`--log-var-range` text `LOW,HIGH` with LOW < HIGH."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"expected LOW,HIGH like -6,2, got {text!r}") from None
    if not low < high:
        raise ValueError(f"expected LOW < HIGH, got {text!r}")
    return low, high


def _image_size(text: str) -> tuple[int, int]:
    """`--image-size` text `HxW` (or one number for a square) as (height, width)."""
    parts = text.lower().split("x")
    try:
        height, width = (int(parts[0]), int(parts[0])) if len(parts) == 1 else map(int, parts)
    except ValueError:
        raise ValueError(f"expected HxW like 32x32, got {text!r}") from None
    if height < 4 or width < 4:
        raise ValueError(f"images must be at least 4×4, got {text!r}")
    return height, width


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    choices: tuple | None = None,
    resumable: bool = False,
    switch: dict[str, Any] | None = None,
    used_when: tuple[Callable[[RunConfig], bool], str] | None = None,
) -> Any:
    """A config field and its one declaration as a command-line setting.

    Args:
        default: the field's default (the help text shows it).
        help: what the setting does.
        flag: the flag; `--<field-name>` when left out (underscores as dashes).
        parse: turns the flag's text into the value (int, float, …); None for `switch` flags.
        choices: the values the flag accepts.
        resumable: whether `--resume` may change it (else it must match the saved config).
        switch: flags that take no value, mapped to the value each sets (e.g. `--no-jit`: False).
        used_when: (does this run use the setting?, which runs do not): a flag given for a run
            that would ignore it is refused.
    """
    metadata = {"help": help, "flag": flag, "parse": parse, "choices": choices, "resumable": resumable,
                "switch": switch, "used_when": used_when}
    return field(default=default, metadata={"setting": metadata})


def _completion(config: RunConfig) -> bool:
    return config.data.task == "completion"


def _semi_supervised(config: RunConfig) -> bool:
    return config.data.task == "semi_supervised"


def _has_kl(config: RunConfig) -> bool:
    return not _completion(config) or config.model.objective in KL_OBJECTIVES


@dataclass
class DataConfig:
    """Where the data comes from and how much of it is used."""

    dataset: str | None = setting(
        None, "dataset name: mnist or fashion_mnist (default mnist; an image folder's own name)", parse=str)
    data_dir: str | None = setting(
        None, "the four IDX files (.gz or raw), a Keras-style .npz, or an image folder (class subfolders or "
        "metadata.csv); the only source tried", parse=str, resumable=True)
    conditions: str | None = setting(
        None, "metadata.csv columns to condition on, NAME[:categorical|continuous],… (default: every column)",
        parse=str, used_when=(lambda c: not _completion(c), "`task` completion (the condition is the image part)"))
    image_size: tuple[int, int] | None = setting(None, "resize every image to HxW (antialiased)",
                                                 parse=_image_size)
    test_fraction: float = setting(0.1, "share of an image folder without a split column held out for testing",
                                   parse=float)
    binarize: str = setting(
        "none", "dynamic: fresh Bernoulli(pixel) images every training batch, the test and validation sets "
        "binarized once with a fixed seed (NLLs comparable with the literature)", parse=str, choices=BINARIZATIONS)
    limit: int | None = setting(None, "use only the first N training images", parse=int)
    validation_fraction: float = setting(0.1, "share of the training set held out for validation", parse=float)
    validation_size: int | None = setting(
        None, "hold out exactly the last N training images for validation (instead of `validation_fraction`)",
        parse=int)
    task: str = setting("classes", "classes: p(image | class); completion: complete an image from part of it; "
                        "semi_supervised: p(image | class) from `labeled` labels (Kingma et al. 2014, M2)",
                        parse=str, choices=TASKS)
    labeled: int | None = setting(
        None, "for `task` semi_supervised: how many training images keep their label (balanced across classes, "
        "chosen by `seed`)", parse=int, used_when=(_semi_supervised, "`task` classes or completion"))
    validation_labels: int | None = setting(
        None, "for `task` semi_supervised: how many held-out validation images keep their label for q(y|x)'s "
        "validation accuracy (balanced across classes, chosen by `seed`; default all)", parse=int,
        used_when=(_semi_supervised, "`task` classes or completion"))
    quadrants: int = setting(1, "visible quadrants for `task` completion", parse=int, choices=QUADRANT_COUNTS,
                             used_when=(_completion, "`task` classes or semi_supervised"))

    @property
    def dynamic_binarization(self) -> bool:
        return self.binarize == "dynamic"

    def __post_init__(self) -> None:
        if self.image_size is not None:
            self.image_size = tuple(int(side) for side in self.image_size)

    def validate(self) -> None:
        if not 0.0 < self.test_fraction < 1.0:
            raise ConfigError(f"`test_fraction` must be in (0, 1), got {self.test_fraction}")
        if self.binarize not in BINARIZATIONS:
            raise ConfigError(f"`binarize` must be one of {', '.join(BINARIZATIONS)}, got {self.binarize!r}")
        if self.task not in TASKS:
            raise ConfigError(f"`task` must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.quadrants not in QUADRANT_COUNTS:
            raise ConfigError(f"`quadrants` must be 1, 2 or 3, got {self.quadrants!r}")
        if self.task == "semi_supervised" and self.labeled is None:
            raise ConfigError("`task` semi_supervised needs `labeled` N, the number of labelled training images")
        if self.validation_size is not None and self.validation_size < 1:
            raise ConfigError(f"`validation_size` must be at least 1, got {self.validation_size}")
        if self.validation_labels is not None and self.validation_labels < 1:
            raise ConfigError(f"`validation_labels` must be at least 1, got {self.validation_labels}")
        if self.labeled is not None and self.labeled < 1:
            raise ConfigError(f"`labeled` must be at least 1, got {self.labeled}")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"`limit` must be at least 2, got {self.limit}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"`validation_fraction` must be in (0, 1), got {self.validation_fraction}")


@dataclass
class ModelConfig:
    """The model's architecture and objective; exactly the model's constructor arguments."""

    arch: str = setting("mlp", "network architecture", parse=str, choices=ARCHITECTURES)
    hidden_units: tuple[int, ...] | None = setting(
        None, "dense layer sizes, e.g. 400 or 512,512 (default mlp 400, conv 128)", parse=hidden_units)
    activation: str = setting("relu", "hidden layers' activation; gated: (W x + b) ⊙ σ(V x + c), as VampPrior's",
                              parse=str, choices=ACTIVATIONS,
                              used_when=(lambda c: not _completion(c), "`task=completion` (ReLU networks)"))
    latent_dim: int = setting(20, "size of z", parse=int)
    prior: str = setting(
        "standard", "p(z | c): standard N(0, I); mixture, learned Gaussians; vamp, the VampPrior (Tomczak & "
        "Welling 2018); the mixtures keep one set of components per class of the first categorical condition",
        parse=str, choices=PRIORS, used_when=(lambda c: not _completion(c), "`task=completion` (its prior is a network)"))
    prior_components: int | None = setting(
        None, "components of `prior=mixture` (default 10) or `prior=vamp` (default 500, the paper's), in all, split "
        "evenly over the classes", parse=int, used_when=(lambda c: c.model.prior != "standard", "`prior=standard`"))
    likelihood: str = setting("bernoulli", "pixel likelihood", parse=str, choices=LIKELIHOODS,
                              used_when=(lambda c: not _completion(c), "`task` completion (Bernoulli pixels only)"))
    beta: float = setting(1.0, "weight of the KL term", parse=float,
                          used_when=(_has_kl, "`objective` baseline or gsnn (no KL term)"))
    conditional: bool = setting(True, "train a plain VAE (no condition)", switch={"--no-conditional": False})
    objective: str = setting(
        "cvae", "for `task` completion: baseline, cvae, gsnn or hybrid (Sohn et al. 2015)", parse=str,
        choices=OBJECTIVES, used_when=(_completion, "`task` classes or semi_supervised"))
    alpha: float = setting(0.5, "hybrid objective: α·CVAE + (1−α)·GSNN", parse=float,
                           used_when=(lambda c: _completion(c) and c.model.objective == "hybrid",
                                      "anything but `objective` hybrid"))
    free_bits: float = setting(
        0.0, "nats per latent dimension the KL term does not charge for (free bits, Kingma et al. 2016; 0: off)",
        parse=float, used_when=(lambda c: _has_kl(c) and not _semi_supervised(c),
                                "`objective` baseline or gsnn (no KL term) or `task` semi_supervised"))
    classifier_weight: float = setting(
        1000.0, "for `task` semi_supervised: weight of −log q(y|x) on a labelled image, relative to its own bound "
        "(Kingma et al.'s α = 0.1·N is 0.1·N/`labeled`, 54 for 100 of 54,000; Pyro's 46)", parse=float,
        used_when=(_semi_supervised, "`task` classes or completion"))
    initializer: str = setting("glorot_uniform", "the built-in networks' dense weights: glorot_uniform (Keras's) or "
                               "he_normal (std √(2/fan_in), as the VampPrior code)", parse=str, choices=INITIALIZERS,
                               used_when=(lambda c: not _completion(c), "`task=completion`"))
    log_var_range: tuple[float, float] | None = setting(
        None, "clip the posterior's log-variance to LOW,HIGH, a hardtanh (the VampPrior code's -6,2; default: "
        "squashed softly into ±10)", parse=_log_var_range, used_when=(lambda c: not _completion(c), "`task=completion`"))
    kl_estimate: str = setting(
        "analytic", "the KL term: analytic (the prior's closed form where it has one) or monte_carlo (log q(z|x) − "
        "log p(z) at the reconstruction's z, as the VampPrior code)", parse=str, choices=KL_ESTIMATES,
        used_when=(lambda c: not _completion(c), "`task=completion`"))
    classifier_step: str = setting(
        "joint", "for `task` semi_supervised: joint, the classification term in each batch's loss; separate, a second "
        "step on it alone, on the classifier's weights (Pyro's --aux-loss)", parse=str, choices=CLASSIFIER_STEPS,
        used_when=(_semi_supervised, "`task` classes or completion"))
    classifier_average: float = setting(
        0.0, "for `task` semi_supervised: decay d of an exponential moving average of q(y|x)'s weights, which "
        "validation, the epoch kept and exports use (0: off; 0.999 averages over about 1,000 steps)", parse=float,
        used_when=(_semi_supervised, "`task` classes or completion"))
    condition_scale: float | None = setting(
        None, "factor on the condition vector before the built-in networks' dense layers (default 10 for `task` "
        "classes, 1, a plain one-hot, for semi_supervised)", parse=float,
        used_when=(lambda c: not _completion(c), "`task=completion` (its networks take no scaled condition)"))

    def __post_init__(self) -> None:
        if self.hidden_units is not None:
            self.hidden_units = tuple(int(u) for u in self.hidden_units)
        if self.log_var_range is not None:
            self.log_var_range = tuple(float(v) for v in self.log_var_range)

    def resolved_hidden_units(self) -> tuple[int, ...]:
        """The hidden units, or the architecture's default when none were given."""
        return self.hidden_units or DEFAULT_HIDDEN_UNITS[self.arch]

    def validate(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"`arch` must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.prior not in PRIORS:
            raise ConfigError(f"`prior` must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if self.prior_components is not None and self.prior_components < 1:
            raise ConfigError(f"`prior_components` must be at least 1, got {self.prior_components}")
        if self.free_bits and self.prior != "standard":
            raise ConfigError(f"`free_bits` needs a prior that factorises over latent dimensions; `prior={self.prior}` "
                              "does not")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"`activation` must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(f"`likelihood` must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}")
        if self.latent_dim < 1:
            raise ConfigError(f"`latent_dim` must be at least 1, got {self.latent_dim}")
        if self.beta < 0:
            raise ConfigError(f"`beta` must be >= 0, got {self.beta}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"`objective` must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.free_bits < 0:
            raise ConfigError(f"`free_bits` must be >= 0, got {self.free_bits}")
        if self.kl_estimate not in KL_ESTIMATES:
            raise ConfigError(f"`kl_estimate` must be one of {', '.join(KL_ESTIMATES)}, got {self.kl_estimate!r}")
        if self.free_bits and self.kl_estimate == "monte_carlo":
            raise ConfigError("`free_bits` needs the KL per dimension; `kl_estimate=monte_carlo` gives one per image")
        if self.initializer not in INITIALIZERS:
            raise ConfigError(f"`initializer` must be one of {', '.join(INITIALIZERS)}, got {self.initializer!r}")
        if self.condition_scale is not None and not self.condition_scale > 0:
            raise ConfigError(f"`condition_scale` must be > 0, got {self.condition_scale}")
        if self.classifier_weight < 0:
            raise ConfigError(f"`classifier_weight` must be >= 0, got {self.classifier_weight}")
        if not 0.0 <= self.classifier_average < 1.0:
            raise ConfigError(f"`classifier_average` must be in [0, 1), got {self.classifier_average}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"`alpha` must be in [0, 1], got {self.alpha}")
        units = self.resolved_hidden_units()
        if not units or any(u < 1 for u in units):
            raise ConfigError(f"`hidden_units` must be positive integers, got {units}")


@dataclass
class TrainConfig:
    """How training runs and where its outputs go."""

    epochs: int = setting(100, "total number of epochs, also with `resume`", parse=int, resumable=True)
    batch_size: int = setting(128, "batch size (the global batch under several replicas)", parse=int)
    learning_rate: float = setting(1e-3, "Adam learning rate", parse=float)
    seed: int = setting(0, "random seed: weights, data order, noise, sample grids", parse=int)
    kl_schedule: str = setting(
        "constant", "the KL weight over training: constant 1; linear from 1/E to 1 over `kl_warmup` E epochs; "
        "cyclical (Fu et al. 2019): `kl_cycles` cycles, each rising from 0 to 1 over its first half, then 1",
        parse=str, choices=KL_SCHEDULES, used_when=(_has_kl, "`objective` baseline or gsnn (no KL term)"))
    kl_warmup: int = setting(0, "epochs of the linear KL schedule (given alone, it means `kl_schedule` linear)",
                             parse=int, used_when=(_has_kl, "`objective` baseline or gsnn (no KL term)"))
    kl_cycles: int = setting(4, "cycles of the cyclical KL schedule", parse=int,
                             used_when=(lambda c: c.train.kl_schedule == "cyclical", "any `kl_schedule` but cyclical"))
    early_stopping: int = setting(
        0, "stop when `monitor` has not improved for N epochs after the KL warm-up, and keep the best epoch's "
        "weights (0: off; --epochs stays the cap; a patience of --epochs only keeps the best epoch)", parse=int,
        resumable=True)
    monitor: str = setting(
        "val_elbo", "what `early_stopping` watches: val_elbo, the validation ELBO at β = 1; val_accuracy, q(y|x)'s "
        "accuracy on the labelled validation images (`task` semi_supervised)", parse=str, choices=MONITORS,
        used_when=(lambda c: c.train.early_stopping > 0, "`early_stopping` 0 (off)"))
    run_dir: str | None = setting(None, "where the run's files go (default runs/<name>)", parse=str, resumable=True)
    export: str | None = setting(None, "SavedModel export root (default saved_models/<name>)", parse=str,
                                 resumable=True)
    tensorboard: bool = setting(False, "log scalars and sample grids for TensorBoard",
                                switch={"--tensorboard": True}, resumable=True)
    # None: the measured best for the device (see training.resolve_jit_compile).
    jit_compile: bool | None = setting(
        None, "XLA-compile the train step (default: on a GPU, and on a CPU for `arch` mlp in float32)",
        switch={"--jit": True, "--no-jit": False}, resumable=True)
    normalize_gradients: bool = setting(
        False, "divide each weight's gradient by its L2 norm before Adam's update (the VampPrior code's AdamNormGrad)",
        switch={"--normalize-gradients": True})
    keep_checkpoints: int = setting(2, "how many of the newest epoch checkpoints to keep", parse=int, resumable=True)
    steps_per_execution: int = setting(32, "train steps per compiled call; callbacks see every Nth batch",
                                       parse=int, resumable=True)
    mixed_precision: bool = setting(False, "compute in bfloat16 on CPU, float16 on GPU (losses and KL stay float32); a "
                                    "CPU without AVX512_BF16 or AMX emulates bfloat16, several times slower (warned)",
                                    switch={"--mixed-precision": True}, resumable=True)
    strategy: str = setting("auto", "tf.distribute strategy (auto: mirrored on >1 GPU; multi_worker: TF_CONFIG)",
                            parse=str, choices=STRATEGIES, resumable=True)

    @property
    def resolved_kl_schedule(self) -> str:
        """The schedule in force: `kl_warmup` alone means linear."""
        return "linear" if self.kl_schedule == "constant" and self.kl_warmup else self.kl_schedule

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"`epochs` must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"`learning_rate` must be > 0, got {self.learning_rate}")
        if self.kl_warmup < 0:
            raise ConfigError(f"`kl_warmup` must be >= 0, got {self.kl_warmup}")
        if self.kl_schedule not in KL_SCHEDULES:
            raise ConfigError(f"`kl_schedule` must be one of {', '.join(KL_SCHEDULES)}, got {self.kl_schedule!r}")
        if self.kl_schedule == "linear" and self.kl_warmup < 1:
            raise ConfigError("`kl_schedule` linear needs `kl_warmup` E, the epochs it rises over")
        if self.kl_schedule == "cyclical" and self.kl_warmup:
            raise ConfigError("`kl_warmup` is the linear schedule's; drop it with `kl_schedule` cyclical")
        if self.early_stopping < 0:
            raise ConfigError(f"`early_stopping` must be >= 0, got {self.early_stopping}")
        if self.early_stopping and self.resolved_kl_schedule == "cyclical":
            raise ConfigError("`early_stopping` does not apply to `kl_schedule` cyclical: its warm-up never ends "
                              "before training does; use `kl_warmup` E")
        if self.monitor not in MONITORS:
            raise ConfigError(f"`monitor` must be one of {', '.join(MONITORS)}, got {self.monitor!r}")
        if self.kl_cycles < 1:
            raise ConfigError(f"`kl_cycles` must be at least 1, got {self.kl_cycles}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"`strategy` must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"`keep_checkpoints` must be at least 1, got {self.keep_checkpoints}")
        if self.steps_per_execution < 1:
            raise ConfigError(f"`steps_per_execution` must be at least 1, got {self.steps_per_execution}")

    @property
    def warmup_epochs(self) -> int:
        """The epochs before the KL weight reaches 1 (epoch E of a linear warm-up is the first at 1)."""
        return self.kl_warmup - 1 if self.resolved_kl_schedule == "linear" else 0


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Setting:
    """One declared setting: where it lives in the config and its declaration."""

    section: str
    name: str
    default: Any
    help: str
    flag: str
    parse: Callable[[str], Any] | None
    choices: tuple | None
    resumable: bool
    switch: dict[str, Any] | None
    used_when: tuple[Callable[[RunConfig], bool], str] | None


def settings() -> list[Setting]:
    """Every declared setting, section by section, in declaration order."""
    found = []
    for section, klass in SECTIONS.items():
        for f in dataclasses.fields(klass):
            meta = dict(f.metadata["setting"])
            meta["flag"] = meta["flag"] or "--" + f.name.replace("_", "-")
            found.append(Setting(section=section, name=f.name, default=f.default, **meta))
    return found


@dataclass
class RunConfig:
    """Everything a training run needs, saved as `config.json` in the run directory; `recipe` is
    the recipe the run started from, {"name", "content"} (`keras_cvae.recipes`), or None."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    recipe: dict[str, Any] | None = None

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if self.data.task != "completion" and self.model.objective != "cvae":
            raise ConfigError(
                f"`objective` {self.model.objective} is for `task` completion (class-conditional runs are cvae)")
        if self.data.task == "completion" and self.model.arch != "mlp":
            raise ConfigError("`task` completion uses `arch` mlp (conv is not implemented for it)")
        if self.data.task == "completion" and not self.model.conditional:
            raise ConfigError("`conditional=False` does not apply to `task` completion (the condition is the image part)")
        if self.data.binarize != "none" and self.model.likelihood != "bernoulli":
            raise ConfigError(f"`binarize` {self.data.binarize} makes binary pixels: use `likelihood` bernoulli")
        if self.train.monitor == "val_accuracy" and self.data.task != "semi_supervised":
            raise ConfigError("`monitor` val_accuracy is q(y|x)'s, for `task` semi_supervised; use val_elbo")
        if self.data.task == "semi_supervised" and not self.model.conditional:
            raise ConfigError("`conditional=False` does not apply to `task` semi_supervised (the class is its condition)")

    def get(self, setting: Setting) -> Any:
        return getattr(getattr(self, setting.section), setting.name)

    def set(self, setting: Setting, value: Any) -> None:
        setattr(getattr(self, setting.section), setting.name, value)

    def refuse_unused(self, given: list[Setting]) -> None:
        """Refuse any setting in `given` (those set explicitly) that this run would ignore,
        naming the flag and why."""
        for item in given:
            if item.used_when is not None and not item.used_when[0](self):
                raise ConfigError(f"`{item.name}` does not apply to {item.used_when[1]}; drop it")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if values["recipe"] is None:
            del values["recipe"]
        return values

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from a dict, rejecting unknown sections and keys (a typo must not pass silently)."""
        unknown = set(raw) - set(SECTIONS) - {"recipe"}
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        parts = {}
        for name, klass in SECTIONS.items():
            values = raw.get(name, {})
            known = {f.name for f in dataclasses.fields(klass)}
            bad = set(values) - known
            if bad:
                raise ConfigError(f"unknown key(s) in config section {name!r}: {', '.join(sorted(bad))}")
            parts[name] = klass(**values)
        return cls(**parts, recipe=raw.get("recipe"))

    def save(self, path: str | Path) -> None:
        from keras_cvae.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        """The config saved at `path`; a ConfigError naming the file if it is unreadable, not
        JSON, or not a keras_cvae run config (unknown or ill-typed sections and keys)."""
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read config {path}: {err}") from err
        if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
            raise ConfigError(f"config {path} is not a keras_cvae run config (expected sections of key: value)")
        try:
            return cls.from_dict(raw)
        except (ConfigError, TypeError, ValueError) as err:
            raise ConfigError(f"config {path} is not a keras_cvae run config: {err}") from err
