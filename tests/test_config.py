"""Config: validation, the JSON round trip, and the one declaration of every setting."""

from __future__ import annotations

import dataclasses

import pytest

from keras_cvae.config import SECTIONS, TASKS, ConfigError, ModelConfig, RunConfig, TrainConfig, settings


def test_json_round_trip(tmp_path):
    config = RunConfig()
    config.model.hidden_units = (512, 256)
    config.train.epochs = 7
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config


def test_unknown_keys_are_rejected():
    with pytest.raises(ConfigError, match="unknown key.*latent_dims"):
        RunConfig.from_dict({"model": {"latent_dims": 3}})
    with pytest.raises(ConfigError, match="unknown config section"):
        RunConfig.from_dict({"optimizer": {}})


@pytest.mark.parametrize(
    "config,match",
    [
        (TrainConfig(epochs=-1), "`epochs` must be at least 1"),
        (TrainConfig(batch_size=0), "`batch_size` must be at least 1"),
        (TrainConfig(learning_rate=0), "`learning_rate` must be > 0"),
        (ModelConfig(latent_dim=0), "`latent_dim` must be at least 1"),
        (ModelConfig(beta=-0.5), "`beta` must be >= 0"),
        (ModelConfig(arch="rnn"), "`arch` must be one of mlp, conv"),
        (ModelConfig(hidden_units=(400, 0)), "`hidden_units` must be positive"),
    ],
)
def test_invalid_values_name_the_argument(config, match):
    with pytest.raises(ConfigError, match=match):
        config.validate()


@pytest.mark.parametrize(("changes", "match"), [
    ({"data.binarize": "dynamic", "model.likelihood": "gaussian"}, "`binarize` dynamic makes binary pixels"),
    ({"train.kl_schedule": "linear"}, "`kl_schedule` linear needs `kl_warmup` E"),
    ({"train.kl_schedule": "cyclical", "train.kl_warmup": 3}, "`kl_warmup` is the linear schedule's"),
    ({"model.free_bits": -1.0}, "`free_bits` must be >= 0"),
    ({"train.early_stopping": -1}, "`early_stopping` must be >= 0"),
    ({"train.early_stopping": 5, "train.kl_schedule": "cyclical"}, "`early_stopping` does not apply to `kl_schedule` cyclical"),
    ({"train.early_stopping": 5, "train.monitor": "val_accuracy"}, "`monitor` val_accuracy is q\\(y\\|x\\)'s"),
    ({"model.condition_scale": 0.0}, "`condition_scale` must be > 0"),
    ({"data.task": "semi_supervised", "data.labeled": 100, "data.validation_labels": 0}, "`validation_labels` must be at least 1"),
    ({"data.task": "semi_supervised"}, "`task` semi_supervised needs `labeled` N"),
    ({"model.free_bits": 0.5, "model.prior": "vamp"}, "`free_bits` needs a prior that factorises"),
    ({"model.prior_components": 0}, "`prior_components` must be at least 1"),
    ({"data.task": "semi_supervised", "data.labeled": 100, "model.conditional": False}, "`conditional=False` does not apply"),
])
def test_inconsistent_new_settings_are_refused(changes, match):
    config = RunConfig()
    for key, value in changes.items():
        section, name = key.split(".")
        setattr(getattr(config, section), name, value)
    with pytest.raises(ConfigError, match=match):
        config.validate()


def test_kl_warmup_alone_means_the_linear_schedule():
    assert TrainConfig(kl_warmup=5).resolved_kl_schedule == "linear"
    assert TrainConfig().resolved_kl_schedule == "constant"
    assert TrainConfig(kl_schedule="cyclical").resolved_kl_schedule == "cyclical"


def test_hidden_units_default_per_arch():
    assert ModelConfig(arch="mlp").resolved_hidden_units() == (400,)
    assert ModelConfig(arch="conv").resolved_hidden_units() == (128,)
    assert ModelConfig(hidden_units=[64, 32]).resolved_hidden_units() == (64, 32)


def test_every_setting_is_declared_once_with_a_flag_and_help():
    declared = settings()
    flags = [flag for item in declared for flag in (item.switch or {item.flag: None})]
    assert len(flags) == len(set(flags))
    assert {(item.section, item.name) for item in declared} == {
        (section, f.name) for section, klass in SECTIONS.items() for f in dataclasses.fields(klass)}
    assert all(item.help and (item.parse or item.switch) for item in declared)


def test_the_train_parser_is_generated_from_the_declarations():
    from keras_cvae.cli.common import given_settings
    from keras_cvae.cli.train import parser

    args = parser().parse_args(["--hidden-units", "64,32", "--no-jit", "--objective", "gsnn", "--task", "completion"])
    given = {item.name: value for item, value in given_settings(args)}
    assert given == {"hidden_units": (64, 32), "jit_compile": False, "objective": "gsnn", "task": "completion"}
    assert given_settings(parser().parse_args([])) == []  # left out: neither default nor saved value is overridden


def test_a_setting_the_run_would_ignore_is_refused():
    config = RunConfig()
    by_name = {item.name: item for item in settings()}
    config.refuse_unused([by_name["beta"], by_name["likelihood"]])  # a class run uses both
    with pytest.raises(ConfigError, match="`quadrants` does not apply to `task` classes"):
        config.refuse_unused([by_name["quadrants"]])
    config.data.task, config.model.objective = "completion", "gsnn"
    with pytest.raises(ConfigError, match="`kl_warmup` does not apply to `objective` baseline or gsnn"):
        config.refuse_unused([by_name["kl_warmup"]])


def test_the_task_registry_matches_the_task_choices():
    from keras_cvae.tasks import TASKS as REGISTERED

    assert tuple(REGISTERED) == TASKS
