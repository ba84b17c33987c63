"""Training speed of keras_cvae against the PyTorch and keras-io references, side by side.

    python benchmarks/train_speed.py --epochs 3                # every contender, this machine
    python benchmarks/train_speed.py --epochs 3 --ablation     # plus keras_cvae with each speed-up off, and mixed precision
    python benchmarks/train_speed.py --only keras_cvae_mlp,torch_mlp --epochs 5

Contenders, all trained on the same full Fashion-MNIST training set (60k images, no
validation split), batch 128, Adam 1e-3, for the same number of epochs:

  keras_cvae_mlp   keras_cvae's MLP CVAE: 784+10 → 400 → 20, 20+10 → 400 → 784 (the pytorch/examples VAE plus the label)
  torch_mlp        the same model written the way pytorch/examples writes its VAE (needs the torch CPU build)
  keras_cvae_conv  keras_cvae's conv CVAE at keras-io's VAE size: conv 32, 64 (stride 2), dense 16, latent 2,
                   in float32 and again with --mixed-precision (bfloat16 on a CPU: oneDNN's AMX kernels)
  kerasio_conv     that network written the keras-io way: a Sampling layer, a train_step, plain fit on arrays

Each contender runs in its own process, so its peak RSS is its own. Samples/s is the median over
the epochs after the first (the first includes tracing and compilation). Over the same epochs,
ms/step is the median time of a training step and the longest pause is the most time one step
(or compiled run of steps) took beyond that: the two tell a slow step from a stalled input
pipeline, and each pair's ratio is also given from the median steps alone. Test −ELBO is one
z-sample per test image, nats per image, summed over pixels. Writes train_speed.json and
train_speed.md to --output (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
CONTENDERS = ("keras_cvae_mlp", "torch_mlp", "keras_cvae_conv", "keras_cvae_conv:mixed_precision", "kerasio_conv")
# keras_cvae with one speed-up switched off at a time (or mixed precision switched on); a
# contender's variants are joined by "+".
ABLATIONS = {
    "keras_cvae_mlp:keras_adam": "Keras's own Adam instead of FusedAdam",
    "keras_cvae_mlp:steps_per_execution_1": "one train step per compiled call",
    "keras_cvae_mlp:jit_off": "train step not XLA-compiled",
    "keras_cvae_mlp:keras_rng": "z noise from keras.random.normal (XLA's auto_select generator)",
    "keras_cvae_mlp:per_example_pipeline": "indices shuffled one example at a time, float32 batches",
    "keras_cvae_mlp:mixed_precision": "bfloat16 compute (CPU) / float16 (GPU)",
    "keras_cvae_mlp:mixed_precision+jit_on": "bfloat16 compute with an XLA-compiled train step",
    "keras_cvae_conv:jit_on": "XLA-compiled train step",
}
PAIRS = {
    "mlp": ("keras_cvae_mlp", "torch_mlp"),
    "conv": ("keras_cvae_conv", "kerasio_conv"),
    "conv_mixed_precision": ("keras_cvae_conv:mixed_precision", "kerasio_conv"),
}
LABELS = {"keras_cvae_conv:mixed_precision": "keras_cvae_conv --mixed-precision", **ABLATIONS}


# ---------------------------------------------------------------------------------------------
# Workers: each runs in a fresh process and prints one RESULT line of JSON.


def load_arrays(dataset: str, data_dir: str | None):
    from keras_cvae.data import load_dataset

    data = load_dataset(dataset, data_dir)
    # Class data has one condition: its labels as integers [N], which every contender takes.
    return data.x_train, data.y_train[:, 0].astype("int32"), data.x_test, data.y_test[:, 0].astype("int32")


class StepLog:
    """Wall time of every epoch and of every run of steps inside it: one step for torch and
    keras-io, `steps_per_execution` steps for keras_cvae. Each run is timed from the end of the
    one before (or the epoch's start), so iterator set-up and input-pipeline stalls land in the
    run they delay; the median time per step is the step's own speed, apart from those pauses."""

    def __init__(self, launched_at: float | None = None) -> None:
        self.epoch_seconds: list[float] = []
        self.runs: list[list[tuple[int, float]]] = []  # per epoch: (steps, seconds) of each run
        # Seconds from the process's launch (Python, imports, data, build and compilation
        # included) to the end of each epoch: the whole-run wall time of a run of that length.
        self.launched_at = launched_at
        self.wall_at_epoch_end: list[float] = []

    def begin_epoch(self) -> None:
        self._epoch_start = self._last = time.perf_counter()
        self.runs.append([])

    def end_run(self, steps: int) -> None:
        now = time.perf_counter()
        self.runs[-1].append((steps, now - self._last))
        self._last = now

    def end_epoch(self) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
        if self.launched_at is not None:
            self.wall_at_epoch_end.append(time.time() - self.launched_at)

    def steady(self) -> dict:
        """Over the epochs after the first (the first traces and compiles): the median seconds
        per step, and the longest pause, the most any run took beyond its steps at that median."""
        runs = [run for epoch in (self.runs[1:] or self.runs) for run in epoch]
        step_seconds = statistics.median(seconds / steps for steps, seconds in runs)
        pause = max(seconds - steps * step_seconds for steps, seconds in runs)
        return {"step_ms": round(step_seconds * 1e3, 2), "longest_pause_s": round(max(pause, 0.0), 2)}


def step_log_callback(log: StepLog):
    """A Keras callback feeding `log`; Keras calls the batch hooks once per compiled call."""
    import keras

    class StepLogCallback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            log.begin_epoch()

        def on_train_batch_begin(self, batch, logs=None):
            self.first_step = batch

        def on_train_batch_end(self, batch, logs=None):
            log.end_run(batch - self.first_step + 1)

        def on_epoch_end(self, epoch, logs=None):
            log.end_epoch()

    return StepLogCallback()


def run_keras_cvae(variants: set[str], arch: str, arrays, epochs: int, mixed_precision: bool,
                   log: StepLog) -> tuple[StepLog, float]:
    import keras

    from keras_cvae.config import RunConfig
    from keras_cvae.data import LoadedDataset, make_pipeline
    from keras_cvae.training import build_model, compile_for_run, precision_policy

    x_train, y_train, x_test, y_test = arrays
    config = RunConfig()
    config.model.arch = arch
    if arch == "conv":
        config.model.hidden_units, config.model.latent_dim = (16,), 2
    config.train.batch_size, config.train.learning_rate = BATCH_SIZE, LEARNING_RATE
    config.train.mixed_precision = mixed_precision or "mixed_precision" in variants
    if "steps_per_execution_1" in variants:
        config.train.steps_per_execution = 1
    if variants & {"jit_on", "jit_off"}:
        config.train.jit_compile = "jit_on" in variants
    if "keras_rng" in variants:
        use_keras_random_normal()
    keras.utils.set_random_seed(0)
    dataset = LoadedDataset.from_labels(x_train, y_train, x_test, y_test, class_names=tuple(str(i) for i in range(10)))
    with precision_policy(config.train.mixed_precision):
        model = build_model(config, dataset)
        if "keras_adam" in variants:
            compile_for_run(model, config, keras.optimizers.Adam(LEARNING_RATE))
        pipeline = per_example_pipeline if "per_example_pipeline" in variants else make_pipeline
        model.fit(pipeline(x_train, y_train, BATCH_SIZE, shuffle=True), epochs=epochs, verbose=0,
                  callbacks=[step_log_callback(log)])
        metrics = model.evaluate(make_pipeline(x_test, y_test, 1000, shuffle=False), verbose=0, return_dict=True)
    return log, -float(metrics["elbo"])


def use_keras_random_normal() -> None:
    """Ablation: the reparameterisation noise drawn with the algorithm `keras.random.normal`
    leaves to TensorFlow ("auto_select"), as keras_cvae drew it before naming Philox."""
    import tensorflow as tf

    stateless_normal = tf.random.stateless_normal

    def auto_select_normal(shape, seed, alg=None, **kwargs):
        return stateless_normal(shape, seed=seed, alg="auto_select", **kwargs)

    tf.random.stateless_normal = auto_select_normal  # this worker process only


def per_example_pipeline(images, labels, batch_size: int, shuffle: bool):
    """Ablation: keras_cvae's previous input pipeline, indices shuffled element by element and
    each batch gathered and cast to float32 in [0, 1] by tf.data."""
    import numpy as np
    import tensorflow as tf

    all_images, all_labels = tf.constant(images), tf.constant(labels.astype(np.int32))
    dataset = tf.data.Dataset.range(len(images)).shuffle(len(images), seed=0, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda i: (tf.cast(tf.gather(all_images, i), tf.float32) / 255.0, tf.gather(all_labels, i)),
        num_parallel_calls=1)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(2).with_options(options)


def run_torch_mlp(arrays, epochs: int, log: StepLog) -> tuple[StepLog, float]:
    """The pytorch/examples VAE (examples/vae/main.py), with the one-hot label joined to x and z."""
    import numpy as np
    import torch
    from torch import nn
    from torch.nn import functional as F

    x_train, y_train, x_test, y_test = arrays
    torch.manual_seed(0)

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(784 + 10, 400)
            self.fc21 = nn.Linear(400, 20)
            self.fc22 = nn.Linear(400, 20)
            self.fc3 = nn.Linear(20 + 10, 400)
            self.fc4 = nn.Linear(400, 784)

        def encode(self, x, c):
            h1 = F.relu(self.fc1(torch.cat([x, c], 1)))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5 * logvar)
            eps = torch.randn_like(std)
            return mu + eps * std

        def decode(self, z, c):
            h3 = F.relu(self.fc3(torch.cat([z, c], 1)))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x, c):
            mu, logvar = self.encode(x.view(-1, 784), c)
            z = self.reparameterize(mu, logvar)
            return self.decode(z, c), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kld

    def tensors(images, labels):
        return torch.from_numpy(images.reshape(-1, 784).astype(np.float32) / 255.0), torch.from_numpy(
            labels.astype(np.int64))

    train_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*tensors(x_train, y_train)), batch_size=BATCH_SIZE, shuffle=True)
    test_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*tensors(x_test, y_test)), batch_size=1000, shuffle=False)
    model = VAE()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    for _ in range(epochs):
        log.begin_epoch()
        model.train()
        for data, labels in train_loader:
            optimizer.zero_grad()
            recon_batch, mu, logvar = model(data, F.one_hot(labels, 10).float())
            loss = loss_function(recon_batch, data, mu, logvar)
            loss.backward()
            optimizer.step()
            log.end_run(1)
        log.end_epoch()
    model.eval()
    total = 0.0
    with torch.no_grad():
        for data, labels in test_loader:
            recon_batch, mu, logvar = model(data, F.one_hot(labels, 10).float())
            total += loss_function(recon_batch, data, mu, logvar).item()
    return log, total / len(x_test)


def run_kerasio_conv(arrays, epochs: int, log: StepLog) -> tuple[StepLog, float]:
    """keras-io's "Variational AutoEncoder" (Keras 3), with the label tiled into the encoder's input
    and joined to z, at the size of keras_cvae's conv model above."""
    import keras
    import numpy as np
    from keras import layers, ops

    x_train, y_train, x_test, y_test = arrays
    keras.utils.set_random_seed(0)
    latent_dim = 2

    class Sampling(layers.Layer):
        """Uses (z_mean, z_log_var) to sample z, the vector encoding a digit."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(1337)

        def call(self, inputs):
            z_mean, z_log_var = inputs
            epsilon = keras.random.normal(shape=ops.shape(z_mean), seed=self.seed_generator)
            return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    encoder_inputs = keras.Input(shape=(28, 28, 1))
    label_inputs = keras.Input(shape=(10,))
    planes = layers.UpSampling2D(size=(28, 28))(layers.Reshape((1, 1, 10))(label_inputs))
    x = layers.Concatenate()([encoder_inputs, planes])
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    z = Sampling()([z_mean, z_log_var])
    encoder = keras.Model([encoder_inputs, label_inputs], [z_mean, z_log_var, z], name="encoder")

    latent_inputs = keras.Input(shape=(latent_dim,))
    decoder_labels = keras.Input(shape=(10,))
    x = layers.Concatenate()([latent_inputs, decoder_labels])
    x = layers.Dense(16, activation="relu")(x)
    x = layers.Dense(7 * 7 * 64, activation="relu")(x)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    decoder_outputs = layers.Conv2DTranspose(1, 3, activation="sigmoid", padding="same")(x)
    decoder = keras.Model([latent_inputs, decoder_labels], decoder_outputs, name="decoder")

    class VAE(keras.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.decoder = decoder
            self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
            self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
            self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

        @property
        def metrics(self):
            return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

        def losses_of(self, data):
            images, labels = data
            z_mean, z_log_var, z = self.encoder([images, labels])
            reconstruction = self.decoder([z, labels])
            reconstruction_loss = ops.mean(
                ops.sum(keras.losses.binary_crossentropy(images, reconstruction), axis=(1, 2)))
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
            return reconstruction_loss, kl_loss

        def train_step(self, data):
            import tensorflow as tf

            with tf.GradientTape() as tape:
                reconstruction_loss, kl_loss = self.losses_of(data)
                total_loss = reconstruction_loss + kl_loss
            grads = tape.gradient(total_loss, self.trainable_weights)
            self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            self.reconstruction_loss_tracker.update_state(reconstruction_loss)
            self.kl_loss_tracker.update_state(kl_loss)
            return {m.name: m.result() for m in self.metrics}

    def inputs(images, labels):
        return (images.astype("float32") / 255,
                keras.utils.to_categorical(labels, 10).astype("float32"))

    vae = VAE(encoder, decoder)
    vae.compile(optimizer=keras.optimizers.Adam())
    vae.fit(*inputs(x_train, y_train), epochs=epochs, batch_size=BATCH_SIZE, verbose=0,
            callbacks=[step_log_callback(log)])
    images, labels = (ops.convert_to_tensor(a) for a in inputs(x_test, y_test))
    totals = [sum(float(t) for t in vae.losses_of((images[i:i + 1000], labels[i:i + 1000])))
              for i in range(0, len(images), 1000)]
    return log, float(np.mean(totals))


def worker(name: str, args: argparse.Namespace) -> dict:
    arrays = load_arrays(args.dataset, args.data_dir)
    contender, _, variant = name.partition(":")
    log = StepLog(args.launched_at)
    if contender == "torch_mlp":
        log, neg_elbo = run_torch_mlp(arrays, args.epochs, log)
    elif contender == "kerasio_conv":
        log, neg_elbo = run_kerasio_conv(arrays, args.epochs, log)
    else:
        arch = contender.rsplit("_", 1)[1]
        log, neg_elbo = run_keras_cvae(set(variant.split("+")), arch, arrays, args.epochs, args.mixed_precision, log)
    steady_epochs = log.epoch_seconds[1:] or log.epoch_seconds
    return {
        "name": name,
        "seconds_per_epoch": [round(s, 3) for s in log.epoch_seconds],
        "wall_s_at_epoch_end": [round(s, 2) for s in log.wall_at_epoch_end],
        "samples_per_s": round(len(arrays[0]) / statistics.median(steady_epochs)),
        **log.steady(),
        "test_neg_elbo": round(neg_elbo, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


# ---------------------------------------------------------------------------------------------
# The driver: runs each worker in its own process and writes the results.


def run_worker(name: str, args: argparse.Namespace) -> dict | None:
    command = [sys.executable, __file__, "--worker", name, "--epochs", str(args.epochs), "--dataset", args.dataset,
               "--launched-at", repr(time.time())]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    if args.mixed_precision:
        command.append("--mixed-precision")
    print(f"running {name} ({args.epochs} epochs) …", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            print(f"  {result['samples_per_s']} samples/s, epochs {result['seconds_per_epoch']} s, "
                  f"whole run {result['wall_s_at_epoch_end'][-1]} s, "
                  f"{result['step_ms']} ms/step, longest pause {result['longest_pause_s']} s, "
                  f"test −ELBO {result['test_neg_elbo']}, peak RSS {result['peak_rss_mib']} MiB", flush=True)
            return result
    lines = (done.stderr or done.stdout).strip().splitlines()
    print(f"  {name} failed: {lines[-1] if lines else 'no output'}", flush=True)
    return None


def torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def device_description() -> str:
    gpus = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                          text=True).stdout.strip() if _has_nvidia_smi() else ""
    cpu = platform.processor() or platform.machine()
    return f"{gpus} GPU" if gpus else f"CPU: {os.cpu_count()} cores ({cpu})"


def _has_nvidia_smi() -> bool:
    from shutil import which

    return which("nvidia-smi") is not None


WALL_EPOCHS = (3, 10)  # whole-run wall times are reported at these epoch counts


def spread(values: list[float], digits: int = 2) -> dict:
    """Median, min and max of repeated measurements."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


def summarise(results: dict[str, list[dict]], args: argparse.Namespace, notes: list[str]) -> dict:
    """Per contender, the median and range over repeats; per pair, the ratio of each repeat
    (repeats are interleaved, so repeat i of two contenders ran close together) and their
    median and range: steady state (samples/s after the first epoch), median steps alone, and
    end to end (whole-run wall time from process start, compilation included)."""
    summary: dict = {"epochs": args.epochs, "repeats": args.repeats, "dataset": args.dataset,
                     "batch_size": BATCH_SIZE, "device": device_description(),
                     "mixed_precision": args.mixed_precision,
                     "command": "python benchmarks/train_speed.py " + " ".join(args.argv), "notes": notes}
    for name, runs in results.items():
        key = name.replace(":", "__").replace("+", "__")
        speed = spread([r["samples_per_s"] for r in runs], 0)
        summary[f"{key}_samples_per_s"] = int(speed["median"])
        summary[f"{key}_samples_per_s_range"] = [int(speed["min"]), int(speed["max"])]
        summary[f"{key}_seconds_per_epoch"] = [r["seconds_per_epoch"] for r in runs]
        summary[f"{key}_step_ms"] = spread([r["step_ms"] for r in runs])["median"]
        summary[f"{key}_longest_pause_s"] = max(r["longest_pause_s"] for r in runs)
        summary[f"{key}_test_neg_elbo"] = spread([r["test_neg_elbo"] for r in runs])["median"]
        summary[f"{key}_peak_rss_mib"] = int(spread([r["peak_rss_mib"] for r in runs], 0)["median"])
        for epochs in WALL_EPOCHS:
            walls = [r["wall_s_at_epoch_end"][epochs - 1] for r in runs if len(r["wall_s_at_epoch_end"]) >= epochs]
            if walls:
                summary[f"{key}_wall_s_at_epoch_{epochs}"] = spread(walls)
    for kind, (ours, theirs) in PAIRS.items():
        if ours not in results or theirs not in results:
            continue
        pairs = list(zip(results[ours], results[theirs]))
        ratios = {
            "speed_ratio": [a["samples_per_s"] / b["samples_per_s"] for a, b in pairs],
            "step_speed_ratio": [b["step_ms"] / a["step_ms"] for a, b in pairs],
        }
        for epochs in WALL_EPOCHS:
            if all(len(r["wall_s_at_epoch_end"]) >= epochs for pair in pairs for r in pair):
                ratios[f"end_to_end_ratio_at_epoch_{epochs}"] = [
                    b["wall_s_at_epoch_end"][epochs - 1] / a["wall_s_at_epoch_end"][epochs - 1] for a, b in pairs]
        for label, values in ratios.items():
            summary[f"{kind}_{label}"] = spread(values)["median"]
            summary[f"{kind}_{label}_range"] = [spread(values)["min"], spread(values)["max"]]
    return summary


def _with_range(value, low, high, fmt: str) -> str:
    return f"{value:{fmt}} ({low:{fmt}}–{high:{fmt}})"


def markdown_table(results: dict[str, list[dict]], summary: dict) -> str:
    walls = [e for e in WALL_EPOCHS if e <= summary["epochs"]]
    lines = [
        f"# Training speed: {summary['epochs']} epochs of {summary['dataset']}, batch {BATCH_SIZE}, "
        f"{summary['repeats']} repeats",
        "",
        f"Device: {summary['device']}. Command: `{summary['command']}`. Each figure is the median over the "
        "repeats, with the range (min–max) in brackets; the longest pause is the largest in any repeat.",
        "",
        "| contender | samples/s | ms/step (median) | longest pause (s) | "
        + "".join(f"whole run to epoch {e} (s) | " for e in walls) + "test −ELBO (nats) | peak RSS (MiB) |",
        "|---|---:|---:|---:|" + "---:|" * len(walls) + "---:|---:|",
    ]
    for name in results:
        key = name.replace(":", "__").replace("+", "__")
        label = f"{name} ({LABELS[name]})" if name in LABELS else name
        low, high = summary[f"{key}_samples_per_s_range"]
        cells = [label, _with_range(summary[f"{key}_samples_per_s"], low, high, ","),
                 f"{summary[f'{key}_step_ms']:.1f}", f"{summary[f'{key}_longest_pause_s']:.2f}"]
        for e in walls:
            wall = summary.get(f"{key}_wall_s_at_epoch_{e}")
            cells.append(_with_range(wall["median"], wall["min"], wall["max"], ".1f") if wall else "—")
        cells += [f"{summary[f'{key}_test_neg_elbo']:.2f}", str(summary[f"{key}_peak_rss_mib"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for kind, (ours, theirs) in PAIRS.items():
        if f"{kind}_speed_ratio" not in summary:
            continue
        parts = [f"steady state **{_with_range(summary[f'{kind}_speed_ratio'], *summary[f'{kind}_speed_ratio_range'], '.2f')}**",
                 f"median steps alone {_with_range(summary[f'{kind}_step_speed_ratio'], *summary[f'{kind}_step_speed_ratio_range'], '.2f')}"]
        for e in walls:
            if f"{kind}_end_to_end_ratio_at_epoch_{e}" in summary:
                ratio = summary[f"{kind}_end_to_end_ratio_at_epoch_{e}"]
                parts.append(f"end to end at {e} epochs {_with_range(ratio, *summary[f'{kind}_end_to_end_ratio_at_epoch_{e}_range'], '.2f')}")
        lines.append(f"- {kind} ({ours} / {theirs}): " + "; ".join(parts))
    lines += [f"- {note}" for note in summary["notes"]]
    return "\n".join(lines) + "\n"


def write_results(output: Path, summary: dict, table: str) -> None:
    """train_speed.json and .md, each written beside its place and renamed: an interrupted or
    failed write leaves the previous results whole."""
    from keras_cvae.atomic import atomic_write_text

    atomic_write_text(output / "train_speed.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(output / "train_speed.md", table)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(CONTENDERS)} (or ablations)")
    parser.add_argument("--ablation", action="store_true", help="also run keras_cvae with each speed-up off, and in mixed precision")
    parser.add_argument("--mixed-precision", action="store_true", help="keras_cvae contenders in mixed precision")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender, interleaved (default 3)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--launched-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.epochs < 1 or args.repeats < 1:
        parser.error("--epochs and --repeats must be at least 1")
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return 0

    names = args.only.split(",") if args.only else list(CONTENDERS)
    unknown = set(names) - set(CONTENDERS) - set(ABLATIONS)
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    notes = []
    if "torch_mlp" in names and not torch_available():
        names.remove("torch_mlp")
        notes.append("torch_mlp skipped: PyTorch is not installed (pip install torch==2.13.0 for the CPU build)")
        print(notes[-1], flush=True)
    if args.ablation:
        names += list(ABLATIONS)
    results: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):  # interleaved, so each repeat's contenders ran close in time
        print(f"== repeat {repeat + 1} of {args.repeats}", flush=True)
        for name in names:
            if (result := run_worker(name, args)) is not None:
                results[name].append(result)
    complete = {name: runs for name, runs in results.items() if len(runs) == args.repeats}
    summary = summarise(complete, args, notes)
    table = markdown_table(complete, summary)
    write_results(Path(args.output), summary, table)
    print("\n" + table)
    print(f"wrote {Path(args.output) / 'train_speed.json'} and {Path(args.output) / 'train_speed.md'}")
    return 0 if len(complete) == len(names) else 1


if __name__ == "__main__":
    sys.exit(main())
