"""Task "classes": the model a config builds, its sample grid, its `generate` flags, and the
registry that finds it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import project_lines, run_cli, write_shapes_folder
from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset
from keras_cvae.errors import UsageError
from keras_cvae.models.completion import CompletionCVAE
from keras_cvae.models.cvae import CVAE
from keras_cvae.models.semi_supervised import SemiSupervisedCVAE
from keras_cvae.run_dir import RunDir
from keras_cvae.serving_client import load_client
from keras_cvae.tasks import TASKS, GenerateRequest, get_task, task_of
from keras_cvae.tasks.classes import ClassesTask, SampleGrid


def tiny_dataset(n: int = 40) -> LoadedDataset:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    labels = rng.integers(0, 3, n).astype(np.int32)
    return LoadedDataset.from_labels(images, labels, images[:10], labels[:10], class_names=("a", "b", "c"), source="tiny")


def test_the_registry_finds_each_task_by_name_and_by_model():
    assert set(TASKS) == {"classes", "completion", "semi_supervised"}
    assert task_of(CVAE(latent_dim=2, hidden_units=(8,))) is get_task("classes")
    assert task_of(CompletionCVAE(latent_dim=2, hidden_units=(8,))) is get_task("completion")
    # A subclass of CVAE belongs to its own task, not to its base's.
    assert task_of(SemiSupervisedCVAE(latent_dim=2, hidden_units=(8,))) is get_task("semi_supervised")
    with pytest.raises(ValueError, match="unknown task 'segmentation'; choose one of: classes, completion"):
        get_task("segmentation")


def test_build_model_takes_every_model_setting_from_the_config():
    config = RunConfig()
    config.model.arch, config.model.latent_dim, config.model.hidden_units = "conv", 3, (16,)
    config.model.likelihood, config.model.beta, config.model.conditional = "gaussian", 2.0, False
    model = ClassesTask().build_model(config, tiny_dataset())
    assert (model.arch, model.latent_dim, model.hidden_units, model.likelihood_name, model.beta, model.conditional) == (
        "conv", 3, (16,), "gaussian", 2.0, False)
    assert model.num_classes == 3 and model.class_names == ("a", "b", "c")


def test_sample_grid_has_a_row_per_class_and_one_noise_per_column(tmp_path):
    model = CVAE(num_classes=3, latent_dim=2, hidden_units=(8,), class_names=list("abc"))
    grid = SampleGrid(RunDir(tmp_path), model.conditions, latent_dim=2, num_columns=4, seed=1)
    grid.set_model(model)
    images = grid.grid()
    assert images.shape == (3, 4, 28, 28, 1)
    # Each column is one draw of the prior (N(0, I) ignores the class): row 2 decodes it under class 2.
    z = np.stack([model.sample_latent(tf.constant([[0.0]]), tf.constant([0, 1_000_003 + j]))[0] for j in range(4)])
    np.testing.assert_allclose(images[2], np.asarray(model.generate(np.full(4, 2), z=z)), atol=1e-6)
    np.testing.assert_array_equal(images, grid.grid())  # the same seeds every epoch
    grid.on_epoch_end(0)
    assert RunDir(tmp_path).samples_path(1).is_file()


def generate_args(**overrides) -> GenerateRequest:
    return GenerateRequest(**({"num": 2} | overrides))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"from_test": 4}, "`from_test` is for image-completion models"),
     ({"label": "7"}, "labels: unknown category '7'; choose one of: a, b, c"),
     ({"label": "shirts"}, "labels: unknown category 'shirts'"),
     ({"conditions": ("labels",)}, "expected NAME=VALUE"),
     ({"conditions": ("colour=red",)}, "unknown condition 'colour'; this model's conditions are labels")],
)
def test_generate_refuses_flags_and_labels_it_cannot_use(overrides, message):
    model = CVAE(num_classes=3, latent_dim=2, hidden_units=(8,), class_names=list("abc"))
    with pytest.raises(UsageError, match=message):
        ClassesTask().generate(model, generate_args(**overrides), None)
    assert not ClassesTask().needs_test_images(generate_args())


# -- your own images: a two-condition RGB folder with a continuous condition, end to end ------------


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    """One epoch of a conv CVAE with the discretized logistic on a metadata.csv folder of RGBA PNGs:
    conditions shape and colour (categorical) and size (continuous)."""
    root = tmp_path_factory.mktemp("shapes")
    folder = write_shapes_folder(root / "shapes", count=240)
    result = run_cli("train.py", "--data-dir", str(folder), "--epochs", "1", "--arch", "conv", "--batch-size", "32",
                     "--likelihood", "discretized_logistic", "--run-dir", str(root / "run"),
                     "--export", str(root / "export"), cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.slow
def test_a_folder_run_records_its_split_and_evaluates_every_condition(shapes_run, tmp_path):
    run = shapes_run / "run"
    assert len((run / "test_files.txt").read_text().split()) == 24  # the default 10 % test fraction
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["dataset"] == "shapes"
    result = run_cli("evaluate.py", "--model", str(shapes_run / "export"), "--iw-samples", "2", "--limit", "24",
                     "--output", str(tmp_path / "eval"), cwd=shapes_run)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["per_condition_accuracy"]) == {"shape", "colour"}
    assert set(metrics["continuous_condition_error"]) == set(metrics["regressor_test_error"]) == {"size"}
    assert metrics["conditional_accuracy"] == pytest.approx(np.mean(list(metrics["per_condition_accuracy"].values())))
    # Bits per dimension: the IW NLL in nats over H·W·C, in base 2.
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_nll_iw"] / (16 * 16 * 3 * np.log(2)))
    for figure in ("sweep_size", "categories_colour", "categories_shape", "style_transfer"):
        assert (tmp_path / "eval" / f"{figure}.png").is_file()


@pytest.mark.slow
def test_a_folder_export_takes_one_input_per_condition(shapes_run, tmp_path):
    version = shapes_run / "export" / "1"
    cli = Path(sys.executable).with_name("saved_model_cli")
    command = [str(cli), "run", "--dir", str(version), "--tag_set", "serve", "--signature_def", "serving_default"]
    served = subprocess.run([*command, "--input_exprs", "shape=[0,1];colour=[2,0];size=[2.5,5.0]"],
                            capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr[-2000:]
    assert "Result for output key images" in served.stdout
    client = load_client(version)
    assert [c.name for c in client.conditions] == ["shape", "colour", "size"]
    images = client.generate({"shape": ["square", "bar"], "colour": "red", "size": 4.0}, num=2, seed=1)
    assert images.shape == (4, 16, 16, 3) and 0 <= images.min() and images.max() <= 1
    np.testing.assert_allclose(images, client.generate([[1, 2, 4.0], [0, 2, 4.0]], num=2, seed=1), atol=1e-6)
    # The export standardises continuous values in its graph exactly as the Keras model does.
    import keras

    model = keras.saving.load_model(shapes_run / "run" / "model.keras", safe_mode=True)
    rows = np.array([[1, 2, 2.0], [0, 1, 6.0], [1, 0, 3.3]], "float32")
    z = np.random.default_rng(2).standard_normal((3, model.latent_dim)).astype("float32")
    np.testing.assert_allclose(client.decode(z, rows), model.decode(z, rows), atol=1e-5)
    with pytest.raises(ValueError, match="colour: unknown category 'purple'"):
        client.generate({"colour": "purple"})
    import tensorflow as tf

    signature = tf.saved_model.load(str(version)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"colour must be integers in \[0, 3\)"):
        signature(shape=tf.constant([0, 1]), colour=tf.constant([2, 3]), size=tf.constant([2.5, 5.0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="size must be finite numbers"):
        signature(shape=tf.constant([0]), colour=tf.constant([2]), size=tf.constant([float("nan")]))
    assets = version / "assets"
    assert (assets / "colour_vocabulary.txt").read_text().split() == ["blue", "green", "red"]
    size = json.loads((assets / "conditions.json").read_text())[2]
    assert size["kind"] == "continuous" and 2 <= size["mean"] <= 6

    out = tmp_path / "grid.png"
    result = run_cli("-m", "keras_cvae", "generate", "--model", str(version), "--condition", "colour=red",
                     "--condition", "shape=square", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file()
    with pytest.raises(UsageError, match="unknown condition 'hue'; this model's conditions are shape, colour, size"):
        ClassesTask().generate(client, generate_args(conditions=("hue=red",)), None)


def test_a_bad_folder_is_one_line_and_writes_nothing(tmp_path):
    folder = write_shapes_folder(tmp_path / "shapes", count=20)
    (folder / "0003.png").write_text("not a png")
    result = run_cli("train.py", "--data-dir", str(folder), "--run-dir", str(tmp_path / "run"), "--epochs", "1")
    assert result.returncode == 2
    assert project_lines(result.stderr) == [f"train.py: error: {folder / '0003.png'}: not a readable image "
                                            f"(cannot identify image file '{folder / '0003.png'}')"]
    assert not (tmp_path / "run").exists()
