"""Config validation and the JSON round trip."""

from __future__ import annotations

import pytest

from keras_cvae.config import ConfigError, ModelConfig, RunConfig, TrainConfig


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
        (TrainConfig(epochs=-1), "--epochs must be at least 1"),
        (TrainConfig(batch_size=0), "--batch-size must be at least 1"),
        (TrainConfig(learning_rate=0), "--learning-rate must be > 0"),
        (ModelConfig(latent_dim=0), "--latent-dim must be at least 1"),
        (ModelConfig(beta=-0.5), "--beta must be >= 0"),
        (ModelConfig(arch="rnn"), "--arch must be one of mlp, conv"),
        (ModelConfig(hidden_units=(400, 0)), "--hidden-units must be positive"),
    ],
)
def test_invalid_values_name_the_flag(config, match):
    with pytest.raises(ConfigError, match=match):
        config.validate()


def test_hidden_units_default_per_arch():
    assert ModelConfig(arch="mlp").resolved_hidden_units() == (400,)
    assert ModelConfig(arch="conv").resolved_hidden_units() == (128,)
    assert ModelConfig(hidden_units=[64, 32]).resolved_hidden_units() == (64, 32)
