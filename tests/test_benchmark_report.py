"""The benchmarks' bookkeeping: train_speed.py's step times, pauses and ratios from known timings;
long_run.py's stages; the machine line; epoch times across sessions."""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np
import pytest

from conftest import REPO_ROOT, blob_dataset, blobs


def benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_speed():
    return benchmark("train_speed")


def step_log(train_speed, epochs: list[list[tuple[int, float]]]):
    log = train_speed.StepLog()
    log.runs = epochs
    log.epoch_seconds = [sum(seconds for _, seconds in runs) for runs in epochs]
    return log


def test_steady_step_time_and_pause_leave_out_the_first_epoch(train_speed):
    compile_epoch = [(32, 5.0), (32, 0.032)]
    stalled_epoch = [(1, 19.0)] + [(1, 0.002)] * 9  # a 19 s wait for the first batch
    steady_epoch = [(32, 0.064), (32, 0.064), (5, 0.010)]
    steady = step_log(train_speed, [compile_epoch, stalled_epoch, steady_epoch]).steady()
    assert steady["step_ms"] == pytest.approx(2.0)
    assert steady["longest_pause_s"] == pytest.approx(19.0 - 0.002, abs=0.01)


def test_no_pause_when_every_run_steps_at_the_median(train_speed):
    runs = [(32, 0.032), (32, 0.032), (16, 0.016)]
    steady = step_log(train_speed, [runs, runs]).steady()
    assert steady == {"step_ms": 1.0, "longest_pause_s": 0.0}


def result(name: str, samples_per_s: int, step_ms: float, pause: float, walls: list[float]) -> dict:
    return {"name": name, "seconds_per_epoch": [1.0] * len(walls), "wall_s_at_epoch_end": walls,
            "samples_per_s": samples_per_s, "step_ms": step_ms, "longest_pause_s": pause,
            "test_neg_elbo": 250.0, "peak_rss_mib": 900}


def test_ratios_per_repeat_with_their_median_and_range(train_speed):
    walls = [10.0 + e for e in range(10)]  # 13 s to epoch 3, 20 s to epoch 10
    results = {
        "keras_cvae_conv": [result("keras_cvae_conv", 3000, 40.0, 0.1, walls),
                            result("keras_cvae_conv", 3000, 40.0, 0.2, walls),
                            result("keras_cvae_conv", 2000, 40.0, 0.1, walls)],
        "kerasio_conv": [result("kerasio_conv", 1500, 44.0, 19.0, [2 * w for w in walls]),
                         result("kerasio_conv", 1000, 44.0, 0.0, [2 * w for w in walls]),
                         result("kerasio_conv", 1000, 44.0, 0.0, [3 * w for w in walls])],
    }
    args = argparse.Namespace(epochs=10, repeats=3, dataset="fashion_mnist", mixed_precision=False,
                              argv=["--epochs", "10"])
    summary = train_speed.summarise(results, args, notes=[])
    assert summary["conv_speed_ratio"] == 2.0 and summary["conv_speed_ratio_range"] == [2.0, 3.0]
    assert summary["conv_step_speed_ratio"] == 1.1
    assert summary["conv_end_to_end_ratio_at_epoch_3"] == 2.0
    assert summary["conv_end_to_end_ratio_at_epoch_10_range"] == [2.0, 3.0]
    assert summary["kerasio_conv_longest_pause_s"] == 19.0  # the largest of any repeat
    assert summary["kerasio_conv_samples_per_s"] == 1000 and summary["kerasio_conv_samples_per_s_range"] == [1000, 1500]
    assert summary["keras_cvae_conv_wall_s_at_epoch_10"] == {"median": 19.0, "min": 19.0, "max": 19.0}
    assert "mlp_speed_ratio" not in summary
    table = train_speed.markdown_table(results, summary)
    assert "| kerasio_conv | 1,000 (1,000–1,500) | 44.0 | 19.00 | 24.0 (24.0–36.0) | 38.0 (38.0–57.0) | 250.00 | 900 |" in table
    assert "steady state **2.00 (2.00–3.00)**" in table and "end to end at 10 epochs 2.00 (2.00–3.00)" in table


def test_results_are_written_atomically(train_speed, tmp_path):
    """A failed write leaves the previous results whole."""
    train_speed.write_results(tmp_path, {"mlp_speed_ratio": 1.5}, "| table |\n")
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    with pytest.raises(TypeError):
        train_speed.write_results(tmp_path, {"bad": object()}, "| new table |\n")  # not JSON-serialisable
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == before


def test_a_long_run_trains_to_the_recipes_epoch_cap_through_its_milestones():
    long_run = benchmark("long_run")
    args = argparse.Namespace(recipe=str(REPO_ROOT / "recipes" / "exemplar_vae.toml"), seed=3, epochs=None,
                              run_dir="/tmp/unused")
    recipe = long_run.stage_config(args)
    assert (recipe.train.epochs, recipe.train.seed) == (2000, 3)
    assert long_run.stage_config(args, 200).train.epochs == 200
    assert long_run.stages(args, [100, 200, 500], recipe) == [100, 200, 500, 2000]
    args.epochs = 150
    assert long_run.stages(args, [100, 200, 500], recipe) == [100, 150]


def test_the_machine_line_names_each_machine_with_its_runs():
    quality = benchmark("quality")
    runs = [{"model": "vae", "seed": 0, "machine": "A"}, {"model": "vae", "seed": 1, "machine": "A"}]
    assert quality.machines(runs) == "Machine: A."
    runs += [{"model": "cvae", "seed": 0, "machine": "B"}, {"model": "cvae", "seed": 1}]
    assert quality.machines(runs) == ("Machines (the time columns compare only within one): A: vae seed 0, "
                                      "vae seed 1; B: cvae seed 0; not recorded: cvae seed 1.")


def test_epoch_times_kept_by_an_earlier_session_add_up_to_the_epochs_trained(tmp_path):
    timing = benchmark("timing")
    (tmp_path / "epoch_seconds.json").write_text('{"1": 2.0, "2": 3.0, "3": 4.0, "5": 9.0}')
    timer = timing.EpochTimer(tmp_path / "epoch_seconds.json")
    assert timer.first_epochs(3) == [2.0, 3.0, 4.0]
    assert timer.first_epochs(5) == [2.0, 3.0, 4.0, 9.0]
    assert timer.trained_on(3) == [(None, "1–3")]


def test_each_epoch_stays_with_the_machine_that_trained_it_across_sessions(tmp_path):
    timing = benchmark("timing")
    path = tmp_path / "epoch_seconds.json"
    path.write_text('{"1": 2.0, "2": 3.0}')  # seconds alone: machines not recorded
    for machine, epochs in (("A", range(2, 5)), ("B", range(4, 6)), ("A", range(6, 7))):
        timer = timing.EpochTimer(path, machine)  # a new session resumes the run after its last epoch
        for epoch in epochs:
            timer.on_epoch_begin(epoch)
            timer.on_epoch_end(epoch)
    kept = timing.EpochTimer(path)
    assert sorted(kept.seconds) == [1, 2, 3, 4, 5, 6, 7]
    assert kept.trained_on(7) == [(None, "1–2"), ("A", "3–4"), ("B", "5–6"), ("A", "7")]
    assert kept.trained_on(4) == [(None, "1–2"), ("A", "3–4")]
    quality = benchmark("quality")
    assert quality.by_machine(kept.trained_on(7), "epochs ") == \
        "not recorded: epochs 1–2; A: epochs 3–4, 7; B: epochs 5–6"


def test_a_long_runs_machine_lines_say_where_the_epochs_trained_and_where_each_figure_was_measured():
    long_run = benchmark("long_run")
    row = {"stopped": False, "best_val_elbo": -230.0, "train_hours": 1.0, "seconds_per_epoch": 7.0}
    result = {"milestones": [{**row, "epochs": 100, "machine": "A"}, {**row, "epochs": 200, "machine": "A"},
                             {**row, "epochs": 1500, "machine": "B"}], "trained_on": "A: epochs 1–1,400"}
    text = long_run.machine_lines(result)
    assert text.startswith("Epochs trained on A: epochs 1–1,400. ")
    assert text.endswith(" was measured on A: epochs 100, 200; B: epochs 1,500.")
    del result["trained_on"]  # a long_run.json written before the epochs' machines were kept
    assert long_run.machine_lines(result).startswith("The machine of each epoch is not recorded. ")


def test_a_class_conditional_long_run_reports_log_p_x_given_y_beside_the_vaes_log_p_x_at_equal_epochs():
    long_run = benchmark("long_run")
    row = {"stopped": False, "best_val_elbo": -230.0, "train_hours": 1.0, "seconds_per_epoch": 7.0, "machine": "M"}
    cvae = {"conditional": True, "kl_warmup": 100, "patience": 50, "epoch_cap": 2000, "test_images": 10,
            "milestones": [{**row, "epochs": 100, "best_epoch": 100, "test_nll": 229.0},
                           {**row, "epochs": 150, "best_epoch": 150, "test_nll": 228.0}]}
    vae = {"epoch_cap": 2000,
           "milestones": [{**row, "epochs": 100, "best_epoch": 100, "test_nll": 232.17},
                          {**row, "epochs": 200, "best_epoch": 199, "test_nll": 230.48},
                          {**row, "epochs": 607, "best_epoch": 557, "test_nll": 229.07, "stopped": True}]}
    args = argparse.Namespace(recipe="recipes/cvae_exemplar.toml", seed=0, iw_samples=5000, argv=[],
                              unconditional="L/long_run.json")
    text = long_run.markdown(cvae, args, vae)
    assert r"| test −log p(x \| y) (nats) |" in text and "| 229.00 |" in text
    assert "| 100 | 232.17 | 229.00 | 3.17 |" in text
    assert "| 150 |" not in text.split("without the class")[-1] and "607" not in text
    assert "≤ ln 10 = 2.30" in text
    ended = {**cvae, "milestones": cvae["milestones"] + [{**row, "epochs": 300, "best_epoch": 250,
                                                          "test_nll": 226.0, "stopped": True}]}
    assert "| the end: 300 and 607 | 229.07 | 226.00 | 3.07 |" in long_run.markdown(ended, args, vae)
    at_cap = {**cvae, "epoch_cap": 150}  # a run that reaches its epoch cap has ended too
    assert "| the end: 150 and 607 | 229.07 | 228.00 | 1.07 |" in long_run.markdown(at_cap, args, vae)
    early = {**cvae, "milestones": cvae["milestones"][1:]}
    assert "No epoch measured by both yet." in long_run.markdown(early, args, vae)
    assert "goes on from the run dir's newest checkpoint" in text
    assert "goes on from the run dir's newest checkpoint" not in long_run.markdown(ended, args, vae)
    assert "| test −log p(x) (nats) |" in long_run.markdown({**cvae, "conditional": False}, args)


def test_a_benchmarks_scratch_directory_is_removed_when_it_exits(tmp_path):
    """Each benchmark's intermediate runs and data (hundreds of MB) must not pile up in /tmp."""
    import subprocess
    import sys

    script = ("import sys; sys.path.insert(0, sys.argv[1]); from quality import scratch_directory; "
              "path = scratch_directory('scratch-test-'); (path / 'run').mkdir(); (path / 'run' / 'a').write_text('x'); "
              "print(path)")
    done = subprocess.run([sys.executable, "-c", script, str(REPO_ROOT / "benchmarks")], capture_output=True,
                          text=True, check=True, env={"TMPDIR": str(tmp_path), "PATH": ""})
    scratch = tmp_path / done.stdout.strip().rsplit("/", 1)[-1]
    assert scratch.name.startswith("scratch-test-")
    assert not scratch.exists() and not list(tmp_path.iterdir())


def test_the_labels_only_baseline_averages_its_weights_as_m2_does():
    from keras_cvae.config import RunConfig
    from keras_cvae.models.semi_supervised import SemiSupervisedCVAE

    dataset = blob_dataset(120)
    config = RunConfig()
    config.data.task, config.data.labeled, config.train.batch_size = "semi_supervised", 9, 16
    model = SemiSupervisedCVAE(num_classes=3, latent_dim=2, hidden_units=(8,), num_labeled=9, num_train=100)
    split = (dataset.x_test[:30].astype("float32") / 255.0, dataset.y_test[:30, 0])
    semi_supervised = benchmark("semi_supervised")
    results = {}
    for decay in (0.0, 1e-6, 0.9):
        config.model.classifier_average = decay
        results[decay] = semi_supervised.labels_only(model, config, dataset, 2, 5, split, split)
        assert [step for step, _ in results[decay]["curve"]] == [5, 10]
    # A decay of 1e-6 keeps the average on the live weights: scored on it, the baseline is scored
    # as without an average (and not on the clone's initial weights).
    assert results[1e-6] | {"minutes": 0} == results[0.0] | {"minutes": 0}


# One semi_supervised.py run as semi_supervised.json records it.
M2_RUN = {"labeled": 100, "seed": 0, "m2_best": 0.72, "m2_validation": 0.75, "m2_last": 0.71, "baseline_best": 0.70,
          "baseline_last": 0.69, "validation_labels": 1000, "steps": 24800, "m2_minutes": 30.0,
          "baseline_minutes": 2.0, "command": "--labeled 100", "machine": "1 of the 2 CPU cores"}


def test_the_semi_supervised_table_gives_the_generative_accuracy_where_a_run_measured_it():
    semi_supervised = benchmark("semi_supervised")
    run = M2_RUN
    args = semi_supervised.parser().parse_args(["--output", "unused"])
    assert "| 100 | 1 | 0.720 (0.750) | 0.710 | — | 0.700 |" in semi_supervised.markdown([run], args)
    measured = [run | {"generative_best": 0.705}, run | {"seed": 1, "generative_best": 0.715}]
    assert "| 100 | 2 | 0.720 ± 0.000 (0.750 ± 0.000) | 0.710 ± 0.000 | 0.710 ± 0.005 | 0.700 ± 0.000 |" in \
        semi_supervised.markdown(measured, args)


def test_a_semi_supervised_flag_replaces_the_recipes_setting_in_the_runs_config_and_its_table(tmp_path):
    semi_supervised = benchmark("semi_supervised")
    recipe = semi_supervised.parser().parse_args(["--output", "unused"])
    config = semi_supervised.run_config(recipe, 100, 0, 3, tmp_path)
    assert (config.model.classifier_weight, config.model.classifier_step) == (1000.0, "joint")  # pyro_m2.toml leaves them to the library
    args = semi_supervised.parser().parse_args(["--output", "unused", "--classifier-weight", "7",
                                                "--classifier-average", "0.99", "--likelihood", "gaussian"])
    config = semi_supervised.run_config(args, 100, 0, 3, tmp_path)
    assert (config.model.classifier_weight, config.model.classifier_average, config.model.likelihood) == \
        (7.0, 0.99, "gaussian")
    assert config.model.classifier_step == "joint"  # not given: unchanged
    assert (config.data.labeled, config.train.epochs, config.train.seed) == (100, 3, 0)
    table = semi_supervised.markdown([M2_RUN], args)
    assert "gaussian likelihood; classifier weight 7 per labelled image, classifier step joint, its weights " \
           "averaged with decay 0.99" in table


def test_latent_features_keep_the_active_units_as_8_bit_pixels_in_their_order():
    latent_features = benchmark("latent_features")
    rng = np.random.default_rng(0)
    train = np.stack([rng.normal(0, 1, 500), rng.normal(3, 0.01, 500), rng.normal(0, 0.5, 500)], axis=1)
    test = train[:50] + 0.1
    train_images, test_images, active = latent_features.as_images(train, test)
    assert active.tolist() == [True, False, True]  # variances 1, 1e-4 (the prior's noise) and 0.25
    assert train_images.dtype == np.uint8 and train_images.shape == (500, 1, 2) and test_images.shape == (50, 1, 2)
    assert train_images.min() == 0 and train_images.max() == 255  # the percentile range spans [0, 1]
    for unit, column in ((0, 0), (2, 1)):
        order = np.argsort(train[:, unit], kind="stable")
        assert np.all(np.diff(train_images[order, 0, column].astype(int)) >= 0)  # monotone in the mean
    with pytest.raises(ValueError, match="no active latent unit"):
        latent_features.as_images(np.full((10, 2), 0.5), np.full((3, 2), 0.5))


def test_latent_features_write_a_data_set_the_library_loads(tmp_path):
    from keras_cvae.data import load_dataset
    from keras_cvae.models.cvae import CVAE

    images, labels = blobs(40)
    np.savez(tmp_path / "blobs.npz", x_train=images[:30, ..., 0], y_train=labels[:30].astype(np.uint8),
             x_test=images[30:, ..., 0], y_test=labels[30:].astype(np.uint8))
    CVAE(conditional=False, latent_dim=3, hidden_units=(8,), seed=0).save(tmp_path / "m1.keras")
    latent_features = benchmark("latent_features")
    assert latent_features.main(["--model", str(tmp_path / "m1.keras"), "--data-dir", str(tmp_path / "blobs.npz"),
                                 "--output", str(tmp_path / "features.npz")]) == 0
    features = load_dataset("blobs_latent", tmp_path / "features.npz")
    assert features.x_train.shape[:2] == (30, 1) and features.x_test.shape[:2] == (10, 1)
    assert features.y_train[:, 0].tolist() == labels[:30].tolist()
    conditional = tmp_path / "cvae.keras"
    CVAE(num_classes=3, latent_dim=3, hidden_units=(8,)).save(conditional)
    with pytest.raises(SystemExit):
        latent_features.main(["--model", str(conditional), "--data-dir", str(tmp_path / "blobs.npz"),
                              "--output", str(tmp_path / "other.npz")])
    assert not (tmp_path / "other.npz").exists()
