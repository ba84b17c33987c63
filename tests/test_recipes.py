"""Recipes: every shipped recipe is a valid run config; bad files are refused in one line; on the
command line a recipe sits between the defaults and the flags, and the run records it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import project_lines, run_cli
from keras_cvae.cli.train import parser, resolve_config
from keras_cvae.config import ConfigError, RunConfig
from keras_cvae.errors import UsageError
from keras_cvae.recipes import load_recipe

RECIPES = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.toml"))


def test_the_shipped_recipes_cover_the_published_setups():
    assert {path.stem for path in RECIPES} >= {"default", "exemplar_vae", "vampprior", "cvae_exemplar",
                                               "cvae_vampprior", "pyro_completion", "emoji", "pyro_m2"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: path.stem)
def test_each_shipped_recipe_is_a_valid_run_config_that_survives_config_json(path, tmp_path):
    recipe = load_recipe(path)
    config = recipe.config()
    config.validate()
    config.refuse_unused([item for item, _ in recipe.values])
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config
    assert config.recipe == {"name": path.stem, "content": recipe.content}


def test_the_exemplar_recipe_is_their_protocol():
    config = load_recipe(RECIPES[[p.stem for p in RECIPES].index("exemplar_vae")]).config()
    assert (config.model.activation, config.model.hidden_units, config.model.latent_dim) == ("gated", (300, 300), 40)
    assert config.model.log_var_range == (-6.0, 2.0) and config.model.initializer == "he_normal"
    assert config.model.kl_estimate == "monte_carlo" and config.train.normalize_gradients
    assert (config.train.learning_rate, config.train.batch_size, config.train.kl_warmup) == (5e-4, 100, 100)
    assert (config.train.early_stopping, config.train.monitor, config.train.epochs) == (50, "val_elbo", 2000)
    assert config.data.validation_size == 10000 and config.data.binarize == "dynamic"


@pytest.mark.parametrize(("text", "message"), [
    ("[modle]\nlatent_dim = 4\n", r"unknown table \[modle\]; the tables are \[data\], \[model\], \[train\]"),
    ("[model]\nlatent = 4\n", r"\[model\] has no setting 'latent'"),
    ("[model]\nlatent_dim = 'four'\n", r"\[model\] latent_dim must be a number \(int\), got 'four'"),
    ("[train]\nnormalize_gradients = 1\n", r"\[train\] normalize_gradients must be true or false"),
    ("[model]\nhidden_units = '300,x'\n", r"\[model\] hidden_units: expected integers"),
    ("[model\n", "is not valid TOML"),
])
def test_a_bad_recipe_is_refused_naming_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path)


def test_flags_override_the_recipe_and_the_run_records_it(tmp_path):
    recipe = tmp_path / "small.toml"
    recipe.write_text('[model]\nlatent_dim = 4\nhidden_units = [16]\n[train]\nepochs = 7\nlearning_rate = 3e-3\n')
    args = parser().parse_args(["--recipe", str(recipe), "--epochs", "2", "--run-dir", str(tmp_path / "run")])
    config, _ = resolve_config(args)
    assert (config.model.latent_dim, config.model.hidden_units, config.train.learning_rate) == (4, (16,), 3e-3)
    assert config.train.epochs == 2  # the flag wins
    assert config.recipe["name"] == "small" and config.recipe["content"]["train"]["epochs"] == 7
    with pytest.raises(UsageError, match="--resume continues from the run's own config.json"):
        resolve_config(parser().parse_args(["--recipe", str(recipe), "--resume", "--run-dir", str(tmp_path / "r")]))


def test_a_recipe_setting_the_run_would_ignore_is_refused(tmp_path):
    recipe = tmp_path / "odd.toml"
    recipe.write_text('[data]\nquadrants = 2\n')  # a completion setting, for the classes task
    with pytest.raises(ConfigError, match="`quadrants` does not apply"):
        resolve_config(parser().parse_args(["--recipe", str(recipe), "--run-dir", str(tmp_path / "run")]))


def test_the_cli_trains_from_a_recipe_and_writes_it_into_config_json(tmp_path, fashion_dir):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[data]\ndataset = "fashion_mnist"\nlimit = 300\n[model]\nhidden_units = [16]\n'
                      'latent_dim = 2\n[train]\nepochs = 1\n')
    result = run_cli("train.py", "--recipe", str(recipe), "--data-dir", str(fashion_dir),
                     "--run-dir", str(tmp_path / "run"), "--export", str(tmp_path / "export"))
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["recipe"]["name"] == "tiny" and saved["model"]["latent_dim"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nlatent = 2\n")
    refused = run_cli("train.py", "--recipe", str(bad), "--run-dir", str(tmp_path / "other"))
    assert refused.returncode == 2
    assert project_lines(refused.stderr) == [f"train.py: error: recipe {bad}: [model] has no setting 'latent'"]
    assert not (tmp_path / "other").exists()
