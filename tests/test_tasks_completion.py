"""Task "completion": its export, its command-line flags, and real runs through the library and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from test_models_completion import images, small

from conftest import project_lines, run_cli
from keras_cvae.evaluation.estimators import conditional_nll
from keras_cvae.export import export_saved_model
from keras_cvae.tasks.completion import CompletionTask


def test_export_has_a_complete_signature(tmp_path):
    model = small("cvae", quadrants=2)
    version = export_saved_model(model, tmp_path / "export", dataset="fashion_mnist")
    loaded = tf.saved_model.load(str(version))
    assert set(loaded.signatures) == set(CompletionTask().endpoints(model)) == {
        "serving_default", "complete", "complete_with_noise", "complete_baseline", "log_weights",
        "baseline_log_likelihood", "latent_moments"}
    batch = images(3)
    masked = model.condition(batch)
    completed = loaded.signatures["complete"](images=masked)["images"].numpy()
    assert completed.shape == (3, 28, 28, 1) and completed.dtype == np.float32
    visible = model.visible.astype(bool)
    np.testing.assert_allclose(completed[:, visible], batch[:, visible], atol=1e-6)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError)):
        loaded.signatures["complete"](images=tf.zeros((2, 16, 16, 1)))


@pytest.mark.parametrize("objective", ["cvae", "baseline"])
def test_export_signatures_agree_with_the_in_memory_model(tmp_path, objective):
    from keras_cvae.serving_client import load_client

    model = small(objective, quadrants=1)
    client = load_client(export_saved_model(model, tmp_path / "export", dataset="fashion_mnist"))
    assert client.task == "completion" and client.latent_dim == 3
    batch = images(4)
    eps = np.random.default_rng(0).standard_normal((4, 3)).astype("float32")
    np.testing.assert_allclose(client.complete(batch, eps=eps), model.complete(batch, eps=eps), atol=1e-5)
    np.testing.assert_allclose(client.complete(batch, baseline=True), model.complete(batch, baseline=True), atol=1e-5)
    np.testing.assert_allclose(client.baseline_log_likelihood(batch), model.baseline_log_likelihood(batch), rtol=1e-5)
    weights = client.log_weights(batch, 5)
    assert weights.shape == ((1, 4) if objective == "baseline" else (5, 4)) and np.all(np.isfinite(weights))
    if objective != "baseline":  # what z carries: the recognition and prior networks' moments
        moments = client.latent_moments(batch)
        for key, value in model.latent_moments(batch).items():
            np.testing.assert_allclose(moments[key], value, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="a completion model takes no conditions"):
        client.decode(np.zeros((1, 3)), [0])


def test_cli_refuses_completion_models_for_class_conditional_runs(tmp_path):
    done = run_cli("train.py", "--objective", "gsnn", "--run-dir", str(tmp_path / "r"))
    assert done.returncode == 2
    assert project_lines(done.stderr) == [
        "train.py: error: --objective gsnn is for --task completion (class-conditional runs are cvae)"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--likelihood", "gaussian"], "--likelihood does not apply to --task completion"),
        (["--objective", "gsnn", "--beta", "2"], "--beta does not apply to --objective baseline or gsnn"),
        (["--objective", "baseline", "--kl-warmup", "3"], "--kl-warmup does not apply to --objective baseline or gsnn"),
        (["--objective", "cvae", "--alpha", "0.3"], "--alpha does not apply to anything but --objective hybrid"),
        (["--arch", "conv"], "--task completion uses --arch mlp"),
        (["--conditions", "labels"], "--conditions does not apply to --task completion"),
    ],
    ids=["likelihood", "beta", "kl-warmup", "alpha", "arch", "conditions"],
)
def test_flags_a_completion_run_would_ignore_are_refused(tmp_path, flags, message):
    """--beta, --likelihood, --kl-warmup and --arch conv, which a completion run would ignore, are refused."""
    done = run_cli("train.py", "--task", "completion", *flags, "--run-dir", str(tmp_path / "r"))
    lines = project_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "r").exists()


def test_completion_only_flags_are_refused_for_class_runs(tmp_path):
    done = run_cli("train.py", "--quadrants", "2", "--run-dir", str(tmp_path / "r"))
    assert done.returncode == 2
    assert project_lines(done.stderr) == ["train.py: error: --quadrants does not apply to --task classes or semi_supervised; drop it"]


@pytest.mark.slow
def test_short_training_beats_a_baseline_trained_the_same_way(fashion_dir, tmp_path):
    """Sohn et al.'s claim at its strongest point, 1 visible quadrant: the CVAE's −log p(y | x)
    is below that of the deterministic baseline given the same data, epochs and seed."""
    from keras_cvae.config import RunConfig
    from keras_cvae.data import load_dataset
    from keras_cvae.training import train

    dataset = load_dataset("fashion_mnist")
    test = dataset.x_test[:300].astype("float32") / 255.0
    ncll = {}
    for objective in ("cvae", "baseline"):
        config = RunConfig()
        config.data.dataset, config.data.task, config.data.quadrants = "fashion_mnist", "completion", 1
        config.data.limit, config.model.objective, config.train.epochs = 6000, objective, 2
        result = train(config, dataset, tmp_path / objective)
        ncll[objective] = float(np.mean(conditional_nll(result.model, test, 20)))
    assert (tmp_path / "cvae" / "samples" / "epoch_002.png").exists()
    assert ncll["cvae"] < ncll["baseline"] - 2.0, ncll


@pytest.mark.slow
def test_train_evaluate_and_generate_a_completion_model_from_the_cli(tmp_path, fashion_dir):
    """Every command works on a completion model, whichever form it is given in."""
    run_dir, export = tmp_path / "run", tmp_path / "export"
    trained = run_cli("train.py", "--dataset", "fashion_mnist", "--task", "completion", "--epochs", "1",
                      "--limit", "2000", "--run-dir", str(run_dir), "--export", str(export))
    assert trained.returncode == 0, trained.stderr[-3000:]
    for model, output in ((export / "1", tmp_path / "by_export"), (run_dir, tmp_path / "by_run")):
        done = run_cli("evaluate.py", "--model", str(model), "--limit", "200", "--iw-samples", "10",
                       "--output", str(output))
        assert done.returncode == 0, done.stderr[-3000:]
        metrics = json.loads((output / "metrics.json").read_text())
        assert metrics["task"] == "completion" and metrics["num_test_images"] == 200
        assert 0 < metrics["ncll"] < metrics["baseline_ncll"] + 50 and metrics["baseline_ncll"] > 0
        assert (output / "report.md").is_file() and (output / "completions.png").is_file()
        assert 0 <= metrics["active_units"] <= 20 and len(metrics["kl_per_dim"]) == 20
        assert (output / "latent_usage.png").is_file()
    by_export = json.loads((tmp_path / "by_export" / "metrics.json").read_text())
    by_run = json.loads((tmp_path / "by_run" / "metrics.json").read_text())
    assert by_export["baseline_ncll"] == pytest.approx(by_run["baseline_ncll"], rel=1e-5)
    assert by_export["kl_per_dim"] == pytest.approx(by_run["kl_per_dim"], rel=1e-4)
    grid = tmp_path / "completions.png"
    done = run_cli("-m", "keras_cvae", "generate", "--model", str(export / "1"), "--from-test", "4", "--out", str(grid))
    assert done.returncode == 0 and grid.is_file(), done.stderr[-3000:]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"label": "3", "from_test": 2}, "`label` and `style_from` are for class-conditional models"),
     ({"style_from": 0, "from_test": 2}, "`label` and `style_from` are for class-conditional models"),
     ({}, "pass `from_test` N")],
)
def test_generate_refuses_class_flags_and_needs_test_images(overrides, message):
    from keras_cvae.errors import UsageError
    from keras_cvae.tasks import GenerateRequest

    args = GenerateRequest(**({"num": 2} | overrides))
    assert CompletionTask().needs_test_images(args)
    with pytest.raises(UsageError, match=message):
        CompletionTask().generate(small("cvae"), args, None)
