"""Task "classes": p(x | c) with the prior N(0, I), c any mix of categorical and continuous
conditions (a plain VAE with `--no-conditional`). Its model is `CVAE`; its sample grids have one
row per category of the first categorical condition (or a sweep of a continuous one) and one fixed
noise per column; its export takes one input per condition and answers generate / encode / decode /
reconstruct / log_likelihood; its evaluation reports the ELBO, the importance-weighted NLL (and
bits per dimension for 8-bit likelihoods) and the reference judge's verdict on samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_cvae.conditions import CATEGORICAL, Condition, first_categorical, rows_from_mapping
from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset
from keras_cvae.errors import DataError, UsageError
from keras_cvae.evaluation.classifier import is_judge_cached, judge_at, judge_cache_path
from keras_cvae.evaluation.estimators import (
    ACTIVE_UNIT_THRESHOLD,
    ClassModel,
    KerasBackend,
    elbo_terms,
    generate_samples,
    iw_log_likelihood,
    kl_per_dimension,
    latent_usage,
    mean_pairwise_distance,
    pca_2d,
    posterior_moments,
    sample_requests,
)
from keras_cvae.evaluation.report import Figures, standard_error, write_evaluation
from keras_cvae.evaluation.sample_quality import frechet_distance, kernel_distance
from keras_cvae.likelihoods import LIKELIHOODS
from keras_cvae.models.cvae import CVAE
from keras_cvae.plotting import (
    elbo_curve_figure,
    latent_scatter_figure,
    sample_grid_figure,
    save_figure,
    tile,
)
from keras_cvae.run_dir import RunDir
from keras_cvae.tasks.base import (
    Endpoint,
    EvaluationOptions,
    GenerateRequest,
    Task,
    check_image_shape,
    checked,
    latent_usage_results,
    model_config,
)
from keras_cvae.tasks.conditioning import (
    checked_rows,
    condition_specs,
    decode_grid,
    default_vary,
    grid_rows,
    prior_grid,
)

CONDITIONS_ASSET = "conditions.json"
BITS_PER_NAT = 1.0 / np.log(2.0)


class SampleGrid(keras.callbacks.Callback):
    """Writes `samples/epoch_NNN.png` each epoch: one row per category of the first categorical
    condition (else a sweep of the first continuous one), the other conditions held at stated
    values, and one fixed noise per column.

    Each column's z comes from the model's prior with a seed fixed for the whole run
    (`conditioning.prior_grid`), so the same column shows the same draw all run long and the
    pictures show how the model changes, not how the noise does.
    """

    def __init__(self, run_dir: RunDir, conditions: tuple[Condition, ...], latent_dim: int, num_columns: int = 8,
                 seed: int = 0, tensorboard_dir: Path | None = None) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.rows = grid_rows(conditions, default_vary(conditions))
        self.num_columns, self.seed = num_columns, seed
        self.tensorboard_dir = tensorboard_dir
        self._writer = None
        self._backend = None

    def grid(self) -> np.ndarray:
        """Decoded samples [rows, columns, H, W, C]. A conditional model reuses each column's
        seed across rows; a plain VAE gets a seed for every cell (its rows carry no condition)."""
        if self._backend is None or self._backend.model is not self.model:
            self._backend = KerasBackend(self.model)
        z = prior_grid(self._backend, self.rows.rows, self.num_columns, self.seed, self.model.conditional)
        return decode_grid(self._backend, self.rows.rows, z)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        images = self.grid()
        conditional = self.model.conditional
        labels = self.rows.labels if conditional else ["sample"] * len(self.rows.labels)
        title = f"epoch {epoch + 1}" + (f" ({self.rows.held})" if conditional and self.rows.held else "")
        save_figure(sample_grid_figure(images, labels, title=title), self.run_dir.samples_path(epoch + 1))
        if self.tensorboard_dir is not None:
            self._log_to_tensorboard(images, epoch + 1)

    def _log_to_tensorboard(self, images: np.ndarray, step: int) -> None:
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(str(Path(self.tensorboard_dir) / "samples"))
        mosaic = tile(images)
        mosaic = mosaic[np.newaxis, ..., np.newaxis] if mosaic.ndim == 2 else mosaic[np.newaxis]
        with self._writer.as_default():
            tf.summary.image("samples", mosaic, step=step)
        self._writer.flush()


def restyle(model: ClassModel, images: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each image's posterior mean z decoded under every category of the first categorical
    condition (its other conditions kept), [N, K, H, W, C]: the "same z, another class" picture."""
    rows = np.asarray(rows, np.float32).reshape(len(images), -1)
    z_mean, _ = model.encode(images, rows)
    first = first_categorical(model.conditions)
    every = np.arange(len(model.conditions[first].values), dtype=np.float32)
    restyled = np.repeat(rows, len(every), axis=0)
    restyled[:, first] = np.tile(every, len(rows))
    decoded = model.decode(np.repeat(z_mean, len(every), axis=0), restyled)
    return decoded.reshape(len(z_mean), len(every), *decoded.shape[1:])


def as_class_model(model: Any) -> ClassModel:
    """What `run_dir`'s loading gave (an in-memory CVAE or a SavedModelClient) as a ClassModel."""
    return KerasBackend(model) if isinstance(model, CVAE) else model


class ClassesTask(Task):
    name = "classes"
    model_class = CVAE

    def build_model(self, config: RunConfig, dataset: LoadedDataset) -> CVAE:
        return CVAE(**self.model_arguments(config, dataset))

    @staticmethod
    def model_arguments(config: RunConfig, dataset: LoadedDataset) -> dict[str, Any]:
        """CVAE's constructor arguments for a run's config and data."""
        m = config.model
        return {"image_shape": dataset.x_train.shape[1:], "conditions": dataset.conditions, "latent_dim": m.latent_dim,
                "arch": m.arch, "hidden_units": m.resolved_hidden_units(), "activation": m.activation,
                "likelihood": m.likelihood, "prior": m.prior, "prior_components": m.prior_components, "beta": m.beta,
                "conditional": m.conditional, "seed": config.train.seed, "free_bits": m.free_bits,
                "condition_scale": m.condition_scale, "initializer": m.initializer, "log_var_range": m.log_var_range,
                "kl_estimate": m.kl_estimate}

    def sample_callback(self, model, config, dataset, run_dir, validation_images):
        tensorboard_dir = run_dir.tensorboard_dir if config.train.tensorboard else None
        return SampleGrid(run_dir, model.conditions, model.latent_dim, seed=config.train.seed,
                          tensorboard_dir=tensorboard_dir)

    # -- serving ------------------------------------------------------------------------------

    def endpoints(self, model: CVAE) -> dict[str, Endpoint]:
        """Every signature takes one input per condition, named after it (see tasks.conditioning)."""
        conditions = model.conditions
        first = conditions[0].name if conditions else "conditions"
        image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
        z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
        specs = condition_specs(conditions)
        image_shape, z_shape = model.image_shape, (model.latent_dim,)

        def serving_default(*inputs):
            rows = checked_rows(conditions, inputs)
            seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)  # fresh noise on every call
            return {"images": model.decode(model.sample_latent(rows, seed), rows)}

        def sample_latent(seed, *inputs):
            rows = checked_rows(conditions, inputs)
            return {"z": model.sample_latent(rows, seed)}

        def elbo_terms(images, eps, *inputs):
            rows = checked_rows(conditions, inputs)
            images = checked(images, "images", image_shape, rows, first)
            return model.elbo_terms(images, rows, checked(eps, "eps", z_shape, images, "images"))

        def kl_per_dimension(images, *inputs):
            rows = checked_rows(conditions, inputs)
            return {"kl": model.kl_per_dimension(checked(images, "images", image_shape, rows, first), rows)}

        def decode(z, *inputs):
            rows = checked_rows(conditions, inputs)
            return {"images": model.decode(checked(z, "z", z_shape, rows, first), rows)}

        def encode(images, *inputs):
            rows = checked_rows(conditions, inputs)
            z_mean, z_log_var = model.encode(checked(images, "images", image_shape, rows, first), rows)
            return {"z_mean": z_mean, "z_log_var": z_log_var}

        def reconstruct(images, *inputs):
            rows = checked_rows(conditions, inputs)
            return {"images": model((checked(images, "images", image_shape, rows, first), rows))}

        def log_likelihood(images, z, *inputs):
            rows = checked_rows(conditions, inputs)
            images = checked(images, "images", image_shape, rows, first)
            return {"log_likelihood": model.log_likelihood(images, rows, checked(z, "z", z_shape, rows, first))}

        def log_importance_weights(images, eps, *inputs):
            rows = checked_rows(conditions, inputs)
            images = checked(images, "images", image_shape, rows, first)
            fits = tf.debugging.assert_equal(tf.shape(eps)[1:], tf.stack([tf.shape(images)[0], model.latent_dim]),
                                             message=f"eps must have shape K×N×{model.latent_dim}, N images")
            with tf.control_dependencies([fits]):
                return {"log_weights": model.log_importance_weights(images, rows, tf.identity(eps))}

        eps_spec = tf.TensorSpec([None, None, model.latent_dim], tf.float32, name="eps")
        seed_spec = tf.TensorSpec([2], tf.int32, name="seed")
        per_image_eps = tf.TensorSpec([None, model.latent_dim], tf.float32, name="eps")
        optional = {"kl_per_dimension": Endpoint(kl_per_dimension, [image_spec, *specs])} if model.prior.factorises else {}
        return {
            **optional,
            "sample_latent": Endpoint(sample_latent, [seed_spec, *specs]),
            "elbo_terms": Endpoint(elbo_terms, [image_spec, per_image_eps, *specs]),
            "log_importance_weights": Endpoint(log_importance_weights, [image_spec, eps_spec, *specs]),
            "serving_default": Endpoint(serving_default, specs),
            "decode": Endpoint(decode, [z_spec, *specs]),
            "encode": Endpoint(encode, [image_spec, *specs]),
            "reconstruct": Endpoint(reconstruct, [image_spec, *specs]),
            "log_likelihood": Endpoint(log_likelihood, [image_spec, z_spec, *specs]),
        }

    def assets(self, model: CVAE) -> dict[str, str]:
        """conditions.json (every condition's kind, vocabulary or scaling) and, per categorical
        condition, `<name>_vocabulary.txt` (one category per line, in index order)."""
        assets = {CONDITIONS_ASSET: json.dumps([c.to_dict() for c in model.conditions], indent=2) + "\n"}
        for condition in model.conditions:
            if condition.kind == CATEGORICAL:
                assets[f"{condition.name}_vocabulary.txt"] = "\n".join(condition.values) + "\n"
        return assets

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, model: Any, dataset: LoadedDataset, output: Path, options: EvaluationOptions,
                 history: list[dict[str, float]] | None = None, samples_per_class: int = 100) -> dict[str, Any]:
        backend = as_class_model(model)
        check_image_shape(backend.image_shape, dataset)
        if [c.to_dict() for c in backend.conditions] != [c.to_dict() for c in dataset.conditions]:
            raise UsageError(f"the model's conditions ({', '.join(c.name for c in backend.conditions)}) are not "
                             f"{dataset.source}'s; evaluate on the data the model was trained on")
        x_test = dataset.x_test[:options.limit].astype(np.float32) / 255.0
        y_test = dataset.y_test[:options.limit]
        stem = judge_cache_path(dataset, options.dataset_name) if options.judge else None
        print(self.plan(backend, stem, len(x_test), samples_per_class, options.iw_samples), flush=True)
        judge = judge_at(stem, dataset, options.dataset_name) if stem is not None else None
        rng = np.random.default_rng(options.seed)

        terms, log_px, derived = self._likelihoods(backend, x_test, y_test, options.iw_samples, rng)
        requests = sample_requests(backend.conditions, y_test, samples_per_class, rng)
        samples = generate_samples(backend, requests, rng)
        accuracy, error = judge.score(samples, requests) if judge is not None else ({}, {})
        likelihood = model_config(model)["likelihood"]
        metrics = {
            "task": self.name,
            "likelihood": likelihood,
            "binarized": dataset.binarized,
            "test_elbo": float(terms["elbo"].mean()),
            "test_reconstruction": float(terms["reconstruction"].mean()),
            "test_kl": float(terms["kl"].mean()),
            "test_nll_iw": float(-log_px.mean()),
            "iw_samples": int(options.iw_samples),
            "num_test_images": int(len(x_test)),
            "test_elbo_stderr": standard_error(terms["elbo"]),
            "test_nll_iw_stderr": standard_error(log_px),
            "seed": int(options.seed),
            "dataset": dataset.source,
            **derived,
        }
        if LIKELIHOODS[likelihood].discrete:
            # A probability mass over 8-bit values: −log2 p(x) per pixel and channel.
            metrics["test_bits_per_dim"] = metrics["test_nll_iw"] * BITS_PER_NAT / float(np.prod(backend.image_shape))
        if accuracy:
            metrics["conditional_accuracy"] = float(np.mean(list(accuracy.values())))
            metrics["per_condition_accuracy"] = accuracy
            metrics["classifier_test_accuracy"] = float(judge.test_accuracy)
            metrics["classifier_per_condition_test_accuracy"] = judge.per_condition_test_accuracy
            metrics["classifier_blurred_test_accuracy"] = float(judge.blurred_test_accuracy)
            metrics.update(self._per_class(backend, samples, requests, x_test, y_test, judge, samples_per_class))
        if error:
            metrics["continuous_condition_error"] = error
            metrics["regressor_test_error"] = judge.test_error
        if judge is not None:
            metrics.update(self._sample_quality(backend, judge, x_test, y_test, rng, dataset.binarized))
        output.mkdir(parents=True, exist_ok=True)
        figures = Figures(output)
        q_mean, _ = posterior_moments(backend, x_test, y_test)
        metrics.update(latent_usage_results(latent_usage(q_mean, kl_per_dimension(backend, x_test, y_test)), figures))
        metrics.update(self._own_metrics(model, backend, x_test, y_test, figures))
        self._figures(figures, backend, x_test, y_test, samples, rng, history)
        write_evaluation(output, metrics, self._report(metrics, options), figures)
        return metrics

    @staticmethod
    def plan(backend: ClassModel, judge_stem: Path | None, test_images: int, samples_per_class: int,
             iw_samples: int) -> str:
        """What `evaluate` will compute, in order, said before it starts: the likelihoods, and
        whether the judge (`judge_stem`, its cache path; None: no judge) is loaded from its cache
        or trained first."""
        steps = [f"the test ELBO of {test_images:,} test images",
                 f"their importance-weighted NLL with K={iw_samples:,} draws each"]
        if judge_stem is not None:
            stem = judge_stem
            steps.append(f"the judge, loaded from {stem}.keras" if is_judge_cached(stem) else
                         f"the judge, trained first (about a minute for 60,000 28×28 images on 2 CPU cores) and "
                         f"cached as {stem}.keras")
            first = first_categorical(backend.conditions)
            count = samples_per_class * (len(backend.conditions[first].values) if first is not None else 10)
            steps += [f"how well {count:,} samples show their conditions",
                      f"FID and KID of {test_images:,} samples against the test images"]
        else:
            steps.append("no judge (likelihoods only): no conditional accuracy, FID or KID")
        steps.append("latent usage and the figures")
        return "Evaluation plan: " + "; ".join(f"({i}) {step}" for i, step in enumerate(steps, 1))

    @staticmethod
    def _sample_quality(backend: ClassModel, judge, x_test: np.ndarray, y_test: np.ndarray,
                        rng: np.random.Generator, binarized: bool) -> dict[str, Any]:
        """FID and KID of one sample per test image (at that image's conditions) against the test
        images, on the judge's features; per category of the first categorical condition, FID.
        Against a binarized test set the samples are Bernoulli draws from the decoder's pixel
        probabilities (binary, like the images they are compared with), else its mean images."""
        samples = generate_samples(backend, y_test, rng)
        if binarized:
            samples = (rng.random(samples.shape, dtype=np.float32) < samples).astype(np.float32)
        real, fake = judge.features(x_test), judge.features(samples)
        quality = {"fid": frechet_distance(real, fake), "kid": kernel_distance(real, fake, rng),
                   "fid_samples": int(len(samples))}
        first = first_categorical(backend.conditions)
        if first is not None:
            names = backend.conditions[first].values
            quality["per_class_fid"] = {name: frechet_distance(real[y_test[:, first] == c], fake[y_test[:, first] == c])
                                        for c, name in enumerate(names) if np.sum(y_test[:, first] == c) > 1}
        return quality

    @staticmethod
    def _likelihoods(backend: ClassModel, x_test: np.ndarray, y_test: np.ndarray, iw_samples: int,
                     rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, Any]]:
        """Per test image: the ELBO's terms and the importance-weighted log p(x | c); and the
        metrics a task derives from those estimates (none here)."""
        return (elbo_terms(backend, x_test, y_test, rng), iw_log_likelihood(backend, x_test, y_test, iw_samples, rng),
                {})

    def _own_metrics(self, model: Any, backend: ClassModel, x_test: np.ndarray, y_test: np.ndarray,
                     figures: Figures) -> dict[str, Any]:
        """Metrics (and figures) a task built on this one adds."""
        return {}

    @staticmethod
    def _per_class(backend, samples, requests, x_test, y_test, judge, per_class) -> dict[str, Any]:
        """Per category of the first categorical condition: the judge's accuracy on samples, and
        the diversity of samples and of real test images (mean pairwise L2)."""
        first = first_categorical(backend.conditions)
        names = list(backend.conditions[first].values)
        predicted = judge.predict(samples)[:, first]
        hits = (predicted == requests[:, first]).reshape(len(names), per_class)
        groups = samples.reshape(len(names), per_class, *samples.shape[1:])
        sample_div = [mean_pairwise_distance(group) for group in groups]
        real_div = [mean_pairwise_distance(x_test[y_test[:, first] == c][:per_class])
                    if np.sum(y_test[:, first] == c) > 1 else float("nan") for c in range(len(names))]
        return {
            "per_class_accuracy": dict(zip(names, (float(v) for v in hits.mean(axis=1)))),
            "sample_diversity": float(np.mean(sample_div)),
            "real_diversity": float(np.nanmean(real_div)),
            "per_class_sample_diversity": dict(zip(names, sample_div)),
            "per_class_real_diversity": dict(zip(names, real_div)),
        }

    def summary(self, metrics: dict[str, Any]) -> str:
        parts = [f"test ELBO {metrics['test_elbo']:.2f}", f"IW-NLL (K={metrics['iw_samples']}) {metrics['test_nll_iw']:.2f}",
                 *([f"FID {metrics['fid']:.2f}"] if "fid" in metrics else []), f"active units {metrics['active_units']}"]
        if "test_bits_per_dim" in metrics:
            parts.append(f"{metrics['test_bits_per_dim']:.3f} bits/dim")
        if "conditional_accuracy" in metrics:
            parts.append(f"conditional accuracy {metrics['conditional_accuracy']:.3f} "
                         f"(classifier on real test images {metrics['classifier_test_accuracy']:.3f})")
        for name, value in metrics.get("continuous_condition_error", {}).items():
            parts.append(f"{name} error {value:.3g} (regressor on real test images {metrics['regressor_test_error'][name]:.3g})")
        return ", ".join(parts)

    @staticmethod
    def _figures(figures: Figures, backend: ClassModel, x_test, y_test, samples, rng, history) -> None:
        conditions = backend.conditions
        first = first_categorical(conditions)
        if first is not None:
            names = list(conditions[first].values)
            grid = samples.reshape(len(names), -1, *samples.shape[1:])[:, :10]
            figures.save("samples", sample_grid_figure(grid, names, title=f"samples (rows: {conditions[first].name} asked for)"))
            # One test image of each class: real above, reconstruction (decoded posterior mean) below.
            shown = np.array([np.flatnonzero(y_test[:, first] == c)[0] for c in range(len(names))
                              if np.any(y_test[:, first] == c)])
        else:
            figures.save("samples", sample_grid_figure(samples[:80].reshape(8, 10, *samples.shape[1:]), [""] * 8,
                                                       title="samples at test images' conditions"))
            shown = np.arange(min(10, len(x_test)))
        z_mean, _ = backend.encode(x_test[shown], y_test[shown])
        recon = backend.decode(z_mean, y_test[shown])
        figures.save("reconstructions", sample_grid_figure(np.stack([x_test[shown], recon]), ["real", "reconstructed"],
                                                           title="reconstructions"))

        # The same 8 z under every row of each condition's grid: its categories, or a sweep.
        z = rng.standard_normal((8, backend.latent_dim)).astype(np.float32)
        for index, condition in enumerate(conditions):
            rows = grid_rows(conditions, index)
            kind = "sweep" if condition.kind != CATEGORICAL else "categories"
            figures.save(f"{kind}_{condition.name}", sample_grid_figure(
                decode_grid(backend, rows.rows, z), rows.labels,
                title=f"same z, every {condition.name}" + (f" ({rows.held})" if rows.held else "")))
        if first is not None:
            ClassesTask._category_figures(figures, backend, x_test, y_test, shown, first, rng)
        if history:
            figures.save("elbo_curve", elbo_curve_figure(history))

    @staticmethod
    def _category_figures(figures: Figures, backend: ClassModel, x_test, y_test, shown, first: int, rng) -> None:
        """The figures organised by the first categorical condition's categories: the latent
        space coloured by them, the 2-D manifold, an interpolation and the style transfer."""
        conditions = backend.conditions
        names = list(conditions[first].values)
        subset = slice(0, min(len(x_test), 5000))
        z_mean, _ = backend.encode(x_test[subset], y_test[subset])
        axes_label = "z" if backend.latent_dim <= 2 else "principal component"
        figures.save("latent_space", latent_scatter_figure(pca_2d(z_mean), y_test[subset, first], names, axes_label))

        held = grid_rows(conditions, first)
        if backend.latent_dim == 2:
            # Grid over the prior's quantiles (−1.5σ … 1.5σ), for the first four categories.
            steps = np.linspace(-1.5, 1.5, 10, dtype=np.float32)
            grid = np.stack(np.meshgrid(steps, steps[::-1]), axis=-1).reshape(-1, 2)
            panels = decode_grid(backend, held.rows[:4], grid)  # [categories, 100, H, W, C]
            rows = [np.concatenate([p.reshape(10, 10, *p.shape[1:])[r] for p in panels]) for r in range(10)]
            figures.save("manifold", sample_grid_figure(np.stack(rows), [""] * 10,
                                                        title=f"2-D manifold for {', '.join(names[:4])}"))

        # Interpolation between two fixed z, decoded under every category.
        z_pair = rng.standard_normal((2, backend.latent_dim)).astype(np.float32)
        weights = np.linspace(0.0, 1.0, 10, dtype=np.float32)[:, None]
        path = (1 - weights) * z_pair[0] + weights * z_pair[1]
        figures.save("interpolation", sample_grid_figure(
            decode_grid(backend, held.rows, path), names, title=f"interpolation between two z, per {conditions[first].name}"))

        # Style transfer: each category's first test image, its z decoded under every category.
        rows = np.concatenate([x_test[shown][:, None], restyle(backend, x_test[shown], y_test[shown])], axis=1)
        figures.save("style_transfer", sample_grid_figure(rows, [names[int(y_test[i, first])] for i in shown],
                                                          title="same z, every category", column_labels=["input", *names]))

    @staticmethod
    def _report(m: dict[str, Any], options: EvaluationOptions) -> list[str]:
        lines = [
            f"# Evaluation of `{options.model_name}`",
            "",
            f"Test set: {m['num_test_images']} images from {m['dataset']}; seed {m['seed']}. Nats per image.",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| test ELBO | {m['test_elbo']:.2f} ± {m['test_elbo_stderr']:.2f} |",
            f"| reconstruction (−log p(x\\|z,c)) | {m['test_reconstruction']:.2f} |",
            f"| KL(q ‖ p) | {m['test_kl']:.2f} |",
            f"| importance-weighted NLL, K={m['iw_samples']} | {m['test_nll_iw']:.2f} ± {m['test_nll_iw_stderr']:.2f} |",
        ]
        if "test_bits_per_dim" in m:
            lines.append(f"| the same in bits per dimension | {m['test_bits_per_dim']:.4f} |")
        if "fid" in m:
            lines += [f"| FID, judge's features ({m['fid_samples']} samples vs as many test images) | {m['fid']:.3f} |",
                      f"| KID (same features and images) | {m['kid']:.4f} |"]
        lines += [
            f"| active units (Cov_x(E_q[z]) > {ACTIVE_UNIT_THRESHOLD}) | {m['active_units']} of {len(m['latent_activity'])} |",
        ]
        for name, accuracy in m.get("per_condition_accuracy", {}).items():
            lines.append(f"| samples showing the {name} asked for (judge) | {accuracy:.3f} |")
            lines.append(f"| judge's {name} accuracy on real test images | "
                         f"{m['classifier_per_condition_test_accuracy'][name]:.3f} |")
        for name, value in m.get("continuous_condition_error", {}).items():
            lines.append(f"| samples' {name} error (regressor, mean absolute, data units) | {value:.4g} |")
            lines.append(f"| regressor's {name} error on real test images | {m['regressor_test_error'][name]:.4g} |")
        if "per_class_accuracy" not in m:
            return lines
        lines += [
            f"| reference classifier on blurred real test images (σ = 1 px) | {m['classifier_blurred_test_accuracy']:.3f} |",
            f"| sample diversity (mean pairwise L2, per class) | {m['sample_diversity']:.2f} |",
            f"| real-image diversity (same measure) | {m['real_diversity']:.2f} |",
            "",
            "| class | conditional accuracy | sample diversity | real diversity | FID |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, accuracy in m["per_class_accuracy"].items():
            lines.append(f"| {name} | {accuracy:.3f} | {m['per_class_sample_diversity'][name]:.2f} "
                         f"| {m['per_class_real_diversity'][name]:.2f} | {m['per_class_fid'].get(name, float('nan')):.3f} |")
        return lines

    # -- generate -----------------------------------------------------------------------------

    def needs_test_images(self, request: GenerateRequest) -> bool:
        return request.style_from is not None

    def generate(self, model: Any, request: GenerateRequest, dataset: LoadedDataset | None):
        if request.from_test is not None:
            raise UsageError("`from_test` is for image-completion models; use `condition` or `style_from`")
        backend = as_class_model(model)
        conditions = backend.conditions
        first = first_categorical(backend.conditions)
        if request.style_from is not None:
            if first is None:
                raise UsageError("`style_from` needs a model with a categorical condition")
            if not 0 <= request.style_from < len(dataset.x_test):
                raise UsageError(f"`style_from` must be in [0, {len(dataset.x_test)}), got {request.style_from}")
            image = dataset.x_test[request.style_from].astype("float32") / 255.0
            row = dataset.y_test[request.style_from:request.style_from + 1]
            names = list(conditions[first].values)
            grid = np.concatenate([image[np.newaxis, np.newaxis], restyle(backend, image[np.newaxis], row)], axis=1)
            return sample_grid_figure(grid, [f"test #{request.style_from}"], title="same z, every category",
                                      column_labels=[f"input ({names[int(row[0, first])]})", *names])
        given = self._given(request, conditions, first)
        vary = default_vary(conditions, given)
        try:
            held = rows_from_mapping(conditions, given, 1)[0]
        except DataError as err:
            raise UsageError(f"`condition`: {err}") from None
        rows = grid_rows(conditions, vary, held)
        grid = decode_grid(backend, rows.rows, prior_grid(backend, rows.rows, request.num, request.seed))
        title = f"samples, seed {request.seed}" + (f" ({rows.held})" if rows.held else "")
        return sample_grid_figure(grid, rows.labels, title=title)

    @staticmethod
    def _given(request: GenerateRequest, conditions: tuple[Condition, ...], first: int | None) -> dict[str, str]:
        """`condition` NAME=VALUE pairs, and `label` as the first categorical condition's value."""
        given = {}
        for text in request.conditions:
            name, sep, value = text.partition("=")
            if not sep:
                raise UsageError(f"`condition` {text!r}: expected NAME=VALUE, e.g. labels=3")
            given[name] = value
        if request.label not in (None, "all"):
            if first is None:
                raise UsageError("`label` needs a model with a categorical condition; use `condition` NAME=VALUE")
            given.setdefault(conditions[first].name, request.label)
        return given
