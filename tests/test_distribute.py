"""tf.distribute on CPU: MirroredStrategy over two logical CPUs equals one device; two local
MultiWorkerMirroredStrategy workers train, the chief alone writes, and a killed run resumes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO_ROOT, project_lines, run_cli
from keras_cvae.run_dir import RunDir

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np
    from keras_cvae.data import make_pipeline
    from keras_cvae.distribute import make_strategy
    from keras_cvae.models.cvae import CVAE
    from keras_cvae.models.base import VariationalModel
    from keras_cvae.models.optimizers import FusedAdam

    # Replicas draw their own noise (test_replicas_draw_independent_noise checks that, unstubbed),
    # so this comparison with one device fixes ε = 0.5: it tests how gradients and metrics are
    # reduced, which is what the strategy changes.
    VariationalModel.sample = lambda self, posterior, num_samples=None: posterior.mean() + 0.5 * posterior.stddev()
    rng = np.random.default_rng(0)
    # 257 images in batches of 64: the last global batch holds one image, so one replica gets none.
    images, labels = rng.integers(0, 256, (257, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 257)

    def train(strategy, weights=None):
        with strategy.scope():
            model = CVAE(latent_dim=4, hidden_units=(32,), seed=0)
            model.compile(optimizer=FusedAdam(1e-3), jit_compile=False)
        if weights is not None:
            model.set_weights(weights)
        start = model.get_weights()
        model.fit(make_pipeline(images, labels, 64, shuffle=False), epochs=2, verbose=0)  # 10 steps
        return start, model.get_weights(), {k: float(v) for k, v in model.get_metrics_result().items()}

    start, one, one_metrics = train(tf.distribute.get_strategy())
    mirrored = make_strategy("mirrored")
    _, two, two_metrics = train(mirrored, start)
    worst = max(float(np.max(np.abs(a - b) / (np.abs(a) + 1e-6))) for a, b in zip(one, two))
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(one, start))
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "worst_rel": worst, "moved": moved,
                      "one": one_metrics, "two": two_metrics, "equal": all(
                          # float32 all-reduce order moves weights by ~1e-7; a missing or wrong
                          # reduction moves them by ~the learning rate (1e-3) per step.
                          np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(one, two))}))
""")


def test_mirrored_two_cpus_equals_one_device_on_the_global_batch(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    done = run_cli(str(script), timeout=300)
    assert done.returncode == 0, project_lines(done.stderr)[-5:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3  # training did change the weights
    assert result["equal"], result["worst_rel"]
    for name in ("loss", "kl_loss", "elbo"):
        assert result["two"][name] == pytest.approx(result["one"][name], rel=1e-5)


NOISE_SCRIPT = textwrap.dedent("""
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np, tensorflow_probability as tfp
    from keras_cvae.data import make_pipeline
    from keras_cvae.distribute import make_strategy
    from keras_cvae.models.cvae import CVAE
    from keras_cvae.models.optimizers import FusedAdam

    strategy = make_strategy("mirrored")
    with strategy.scope():
        model = CVAE(latent_dim=4, hidden_units=(32,), seed=0)
        model.compile(optimizer=FusedAdam(1e-3), jit_compile=False)
    unit = tfp.distributions.MultivariateNormalDiag(tf.zeros([3, 4]), tf.ones([3, 4]))
    draws = strategy.experimental_local_results(strategy.run(tf.function(lambda: model.sample(unit))))
    rng = np.random.default_rng(0)
    # 65 images in batches of 64: the last global batch has one image, and one replica none.
    images, labels = rng.integers(0, 256, (65, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, 65)
    history = model.fit(make_pipeline(images, labels, 64, shuffle=True), epochs=2, verbose=0).history
    evaluated = model.evaluate(make_pipeline(images, labels, 64, shuffle=False), verbose=0, return_dict=True)
    print(json.dumps({"draws": [np.asarray(d).tolist() for d in draws], "history": history,
                      "evaluated": evaluated}))
""")


def test_replicas_draw_independent_noise_and_an_empty_replica_adds_nothing(tmp_path):
    """Every replica draws its own ε, and a replica with an empty share of the last batch adds
    nothing to the metrics (no NaN, training goes on). Nothing is stubbed."""
    script = tmp_path / "noise.py"
    script.write_text(NOISE_SCRIPT)
    done = run_cli(str(script), timeout=300)
    assert done.returncode == 0, project_lines(done.stderr)[-5:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = (np.array(d) for d in result["draws"])
    assert first.shape == second.shape == (3, 4)
    assert not np.allclose(first, second)  # each replica its own noise
    for name in ("loss", "reconstruction_loss", "kl_loss", "elbo"):
        assert all(np.isfinite(result["history"][name])), result["history"]
        assert np.isfinite(result["evaluated"][name])
    assert result["evaluated"]["elbo"] < 0


# ------------------------------------------------------------------------------------------
# Multi-worker: two local processes


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(run_dir: Path, export: Path, epochs: int, limit: int, log_dir: Path) -> list[subprocess.Popen]:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes = []
    for index in range(2):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT),
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        log = open(log_dir / f"worker{index}.log", "w")  # noqa: SIM115 - closed with the process
        processes.append(subprocess.Popen(
            [sys.executable, "train.py", "--dataset", "fashion_mnist", "--strategy", "multi_worker",
             "--epochs", str(epochs), "--limit", str(limit), "--batch-size", "100",
             "--run-dir", str(run_dir), "--export", str(export)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        ))
    return processes


def wait_all(processes: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait())
    return codes


@pytest.mark.slow
def test_two_workers_train_and_only_the_chief_writes(fashion_dir, tmp_path):
    run_dir, export = tmp_path / "run", tmp_path / "export"
    codes = wait_all(start_workers(run_dir, export, epochs=1, limit=1000, log_dir=tmp_path), timeout=300)
    logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], [log[-800:] for log in logs]
    assert [row["epoch"] for row in RunDir(run_dir).read_history()] == [1]
    assert (run_dir / "model.keras").exists() and (run_dir / "samples" / "epoch_001.png").exists()
    assert (export / "1" / "saved_model.pb").exists() and not (export / "2").exists()
    assert not (run_dir / "backup").exists()  # removed once training finished
    assert "SavedModel" in logs[0] and "Done (worker)" in logs[1]


@pytest.mark.slow
def test_killed_worker_resumes_from_backup_and_finishes_the_history(fashion_dir, tmp_path):
    run_dir, export, epochs = tmp_path / "run", tmp_path / "export", 4
    workers = start_workers(run_dir, export, epochs=epochs, limit=2000, log_dir=tmp_path)
    metadata = [run_dir / "backup" / f"worker-{i}" / "training_metadata.json" for i in range(2)]
    deadline = time.monotonic() + 240
    while not all(path.exists() for path in metadata):  # both have backed up epoch 1
        assert time.monotonic() < deadline, (tmp_path / "worker0.log").read_text()[-800:]
        assert all(w.poll() is None for w in workers), "training finished before the kill"
        time.sleep(0.2)
    workers[1].send_signal(signal.SIGKILL)  # a worker dies mid-training…
    time.sleep(1.0)
    workers[0].send_signal(signal.SIGKILL)  # …and the chief, stuck in a collective, is restarted too
    wait_all(workers, timeout=30)
    done_before = len(RunDir(run_dir).read_history())
    assert 1 <= done_before < epochs and RunDir(run_dir).has_backup()

    for i in range(2):
        (tmp_path / f"worker{i}.log").rename(tmp_path / f"worker{i}.first.log")
    codes = wait_all(start_workers(run_dir, export, epochs=epochs, limit=2000, log_dir=tmp_path), timeout=300)
    chief_log = (tmp_path / "worker0.log").read_text()
    assert codes == [0, 0], chief_log[-800:]
    assert [row["epoch"] for row in RunDir(run_dir).read_history()] == list(range(1, epochs + 1))
    assert "Epoch 1/" not in chief_log  # resumed from the backup, not from scratch
    assert (export / "1" / "saved_model.pb").exists()


def test_malformed_tf_config_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    done = run_cli("train.py", "--strategy", "multi_worker", "--run-dir", str(tmp_path / "r"))
    lines = project_lines(done.stderr)
    assert done.returncode == 2 and len(lines) == 1 and "TF_CONFIG is not valid JSON" in lines[0]


def test_strategy_flag_is_validated(tmp_path):
    done = run_cli("train.py", "--strategy", "tpu", "--run-dir", str(tmp_path / "r"))
    assert done.returncode == 2 and "argument --strategy: invalid choice: 'tpu'" in project_lines(done.stderr)[0]
