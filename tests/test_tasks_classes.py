"""Task "classes": the model a config builds, its sample grid, its `generate` flags, and the
registry that finds it."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset
from keras_cvae.errors import UsageError
from keras_cvae.models.completion import CompletionCVAE
from keras_cvae.models.cvae import CVAE
from keras_cvae.run_dir import RunDir
from keras_cvae.tasks import TASKS, get_task, task_of
from keras_cvae.tasks.classes import ClassesTask, SampleGrid


def tiny_dataset(n: int = 40) -> LoadedDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int32)
    return LoadedDataset(images, labels, images[:10], labels[:10], class_names=("a", "b", "c"), source="tiny")


def test_the_registry_finds_each_task_by_name_and_by_model():
    assert set(TASKS) == {"classes", "completion"}
    assert task_of(CVAE(latent_dim=2, hidden_units=(8,))) is get_task("classes")
    assert task_of(CompletionCVAE(latent_dim=2, hidden_units=(8,))) is get_task("completion")
    with pytest.raises(ValueError, match="unknown task 'segmentation'; choose one of: classes, completion"):
        get_task("segmentation")


def test_build_model_takes_every_model_setting_from_the_config():
    config = RunConfig()
    config.model.arch, config.model.latent_dim, config.model.hidden_units = "conv", 3, (16,)
    config.model.likelihood, config.model.beta, config.model.conditional = "gaussian", 2.0, False
    model = ClassesTask().build_model(config, tiny_dataset())
    assert (model.arch, model.latent_dim, model.hidden_units, model.likelihood, model.beta, model.conditional) == (
        "conv", 3, (16,), "gaussian", 2.0, False)
    assert model.num_classes == 3 and model.class_names == ("a", "b", "c")


def test_sample_grid_has_a_row_per_class_and_one_noise_per_column(tmp_path):
    model = CVAE(num_classes=3, latent_dim=2, hidden_units=(8,), class_names=list("abc"))
    grid = SampleGrid(RunDir(tmp_path), list("abc"), latent_dim=2, num_columns=4, seed=1)
    grid.set_model(model)
    images = grid.grid()
    assert images.shape == (3, 4, 28, 28, 1)
    expected = np.asarray(model.generate(np.full(4, 2), z=grid.noise[0]))  # row 2 decodes column noise under class 2
    np.testing.assert_allclose(images[2], expected, atol=1e-6)
    grid.on_epoch_end(0)
    assert RunDir(tmp_path).samples_path(1).is_file()


def generate_args(**overrides) -> argparse.Namespace:
    values = {"label": "all", "num": 2, "seed": 0, "style_from": None, "from_test": None} | overrides
    return argparse.Namespace(**values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"from_test": 4}, "--from-test is for image-completion models"),
     ({"label": "7"}, r"--label 7 is out of range: labels must be in \[0, 3\)"),
     ({"label": "shirts"}, "--label must be an integer or 'all'")],
)
def test_generate_refuses_flags_and_labels_it_cannot_use(overrides, message):
    model = CVAE(num_classes=3, latent_dim=2, hidden_units=(8,), class_names=list("abc"))
    with pytest.raises(UsageError, match=message):
        ClassesTask().generate(model, generate_args(**overrides), None)
    assert not ClassesTask().needs_test_images(generate_args())
