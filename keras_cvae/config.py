"""Run configuration: three dataclasses and their JSON round trip.

The configuration is plain data so that it can be validated before TensorFlow is imported,
stored beside the weights (`config.json`), and reloaded without asking for anything again.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHITECTURES = ("mlp", "conv")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
# "classes": p(x | one-hot class); "quadrants": complete an image from some of its quadrants.
TASKS = ("classes", "quadrants")
QUADRANT_COUNTS = (1, 2, 3)
OBJECTIVES = ("baseline", "cvae", "gsnn", "hybrid")  # see structured_cvae.py
LIKELIHOODS = ("bernoulli", "gaussian")
DEFAULT_HIDDEN_UNITS = {"mlp": (400,), "conv": (128,)}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the value and the fix."""


# Settings that only some runs use, with the reason; a flag given for a run that does not use it
# is refused rather than silently ignored. field → (does the run use it?, what the run is)
KL_OBJECTIVES = ("cvae", "hybrid")  # the completion objectives with a KL term


def _completion(config: RunConfig) -> bool:
    return config.data.task == "quadrants"


CONDITIONAL_SETTINGS = {
    "quadrants": (_completion, "--task classes"),
    "objective": (_completion, "--task classes"),
    "alpha": (lambda c: _completion(c) and c.model.objective == "hybrid", "anything but --model hybrid"),
    "likelihood": (lambda c: not _completion(c), "--task quadrants (Bernoulli pixels only)"),
    "beta": (lambda c: not _completion(c) or c.model.objective in KL_OBJECTIVES,
             "--model baseline or gsnn (no KL term)"),
    "kl_warmup": (lambda c: not _completion(c) or c.model.objective in KL_OBJECTIVES,
                  "--model baseline or gsnn (no KL term)"),
}


@dataclass
class DataConfig:
    """Where the data comes from and how much of it is used."""

    dataset: str = "mnist"
    task: str = "classes"
    quadrants: int = 1  # visible quadrants, for task "quadrants"
    data_dir: str | None = None
    limit: int | None = None
    validation_fraction: float = 0.1

    def validate(self) -> None:
        if self.task not in TASKS:
            raise ConfigError(f"--task must be one of {', '.join(TASKS)}, got {self.task!r}")
        if self.quadrants not in QUADRANT_COUNTS:
            raise ConfigError(f"--quadrants must be 1, 2 or 3, got {self.quadrants!r}")
        if self.limit is not None and self.limit < 2:
            raise ConfigError(f"--limit must be at least 2, got {self.limit}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(
                f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
            )


@dataclass
class ModelConfig:
    """The CVAE's architecture and objective; exactly the model's constructor arguments."""

    arch: str = "mlp"
    hidden_units: tuple[int, ...] | None = None
    latent_dim: int = 20
    likelihood: str = "bernoulli"
    beta: float = 1.0
    conditional: bool = True
    objective: str = "cvae"  # baseline, gsnn and hybrid are for task "quadrants"
    alpha: float = 0.5  # the hybrid objective's weight of the CVAE term

    def __post_init__(self) -> None:
        if self.hidden_units is not None:
            self.hidden_units = tuple(int(u) for u in self.hidden_units)

    def resolved_hidden_units(self) -> tuple[int, ...]:
        """The hidden units, or the architecture's default when none were given."""
        return self.hidden_units or DEFAULT_HIDDEN_UNITS[self.arch]

    def validate(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"--likelihood must be one of {', '.join(LIKELIHOODS)}, got {self.likelihood!r}"
            )
        if self.latent_dim < 1:
            raise ConfigError(f"--latent-dim must be at least 1, got {self.latent_dim}")
        if self.beta < 0:
            raise ConfigError(f"--beta must be >= 0, got {self.beta}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"--model must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"--alpha must be in [0, 1], got {self.alpha}")
        units = self.resolved_hidden_units()
        if not units or any(u < 1 for u in units):
            raise ConfigError(f"--hidden-units must be positive integers, got {units}")


@dataclass
class TrainConfig:
    """How training runs and where its outputs go."""

    epochs: int = 100
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    kl_warmup: int = 0
    run_dir: str | None = None
    export: str | None = None
    tensorboard: bool = False
    jit_compile: bool | None = None  # None: the measured best for the device (see training.py)
    steps_per_execution: int = 32
    mixed_precision: bool = False
    strategy: str = "auto"  # see distribute.py; batch_size is the global batch

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ConfigError(f"--learning-rate must be > 0, got {self.learning_rate}")
        if self.kl_warmup < 0:
            raise ConfigError(f"--kl-warmup must be >= 0, got {self.kl_warmup}")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.steps_per_execution < 1:
            raise ConfigError(f"--steps-per-execution must be at least 1, got {self.steps_per_execution}")


@dataclass
class RunConfig:
    """Everything a training run needs, saved as `config.json` in the run directory."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.train.validate()
        if self.data.task == "classes" and self.model.objective != "cvae":
            raise ConfigError(f"--model {self.model.objective} is for --task quadrants (class-conditional runs are cvae)")
        if self.data.task == "quadrants" and self.model.arch != "mlp":
            raise ConfigError("--task quadrants uses --arch mlp (conv is not implemented for it)")
        if self.data.task == "quadrants" and not self.model.conditional:
            raise ConfigError("--no-conditional does not apply to --task quadrants (the condition is the image part)")

    def refuse_unused(self, given: set[str]) -> None:
        """Refuse any setting in `given` (names of the fields set explicitly) that this run
        would ignore, naming the flag and why."""
        for name in sorted(given & set(CONDITIONAL_SETTINGS)):
            used, unused_by = CONDITIONAL_SETTINGS[name]
            if not used(self):
                flag = "--model" if name == "objective" else "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} does not apply to {unused_by}; drop it")

    def run_name(self) -> str:
        """The default name of the run dir and export: `<dataset>-<arch>`, or for image completion
        `<dataset>-quadrants<N>-<model>`."""
        if self.data.task == "quadrants":
            return f"{self.data.dataset}-quadrants{self.data.quadrants}-{self.model.objective}"
        return f"{self.data.dataset}-{self.model.arch}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build from a dict, rejecting unknown sections and keys (a typo must not pass silently)."""
        sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        parts = {}
        for name, klass in sections.items():
            values = raw.get(name, {})
            known = {f.name for f in dataclasses.fields(klass)}
            bad = set(values) - known
            if bad:
                raise ConfigError(f"unknown key(s) in config section {name!r}: {', '.join(sorted(bad))}")
            parts[name] = klass(**values)
        return cls(**parts)

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
