"""Task "completion": the structured-output CVAE of Sohn et al. (2015) for image completion. The
condition is the visible part of an image (1, 2 or 3 quadrants), the output the missing pixels.
Its model is `CompletionCVAE`; its sample grids show held-out images completed from fixed noise;
its export answers complete (also serving_default), complete_with_noise, complete_baseline,
log_weights and baseline_log_likelihood; its evaluation reports −log p(y | x) of the model and
of its baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_cvae.config import RunConfig
from keras_cvae.data import LoadedDataset
from keras_cvae.errors import UsageError
from keras_cvae.evaluation.estimators import conditional_nll, latent_usage
from keras_cvae.evaluation.report import Figures, standard_error, write_evaluation
from keras_cvae.models.completion import CompletionCVAE
from keras_cvae.models.quadrants import masked_input, visible_mask
from keras_cvae.plotting import completion_figure, save_figure
from keras_cvae.priors import diagonal_gaussian_kl
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
    shape_check,
)

SAMPLES_PER_ROW = 6

tfd = tfp.distributions


def completion_columns(model: Any, images: np.ndarray, noise: np.ndarray) -> tuple[np.ndarray, ...]:
    """Masked inputs [N, H, W, C], the baseline's completions [N, H, W, C] and one completion per
    noise row [N, S, H, W, C] (`noise` [S, N, latent_dim]). `model` is a CompletionCVAE or a
    SavedModelClient of one."""
    inputs = masked_input(images, completion_mask(model))
    baseline = np.asarray(model.complete(images, baseline=True))
    samples = np.stack([np.asarray(model.complete(images, eps=eps)) for eps in noise], axis=1)
    return inputs, baseline, samples


def completion_mask(model: Any) -> np.ndarray:
    """1 where a pixel is visible: the model's own mask, or rebuilt from an export's config."""
    if isinstance(model, CompletionCVAE):
        return model.visible
    return visible_mask(tuple(model.image_shape), int(model.config["quadrants"]))


class CompletionGrid(keras.callbacks.Callback):
    """Writes `samples/epoch_NNN.png`: one held-out image per row, shown as its visible part, the
    truth, the baseline's ŷ and completions from fixed noise per column."""

    def __init__(self, run_dir: RunDir, images: np.ndarray, latent_dim: int, seed: int = 0) -> None:
        super().__init__()
        self.run_dir = run_dir
        self.images = np.asarray(images, np.float32)
        rng = np.random.default_rng(seed)
        self.noise = rng.standard_normal((SAMPLES_PER_ROW, len(images), latent_dim)).astype("float32")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        inputs, baseline, samples = completion_columns(self.model, self.images, self.noise)
        figure = completion_figure(inputs, self.images, baseline, samples, title=f"epoch {epoch + 1}")
        save_figure(figure, self.run_dir.samples_path(epoch + 1))


class CompletionTask(Task):
    name = "completion"
    model_class = CompletionCVAE

    def build_model(self, config: RunConfig, dataset: LoadedDataset) -> CompletionCVAE:
        m = config.model
        return CompletionCVAE(
            image_shape=dataset.x_train.shape[1:],
            quadrants=config.data.quadrants,
            objective=m.objective,
            alpha=m.alpha,
            beta=m.beta,
            latent_dim=m.latent_dim,
            hidden_units=m.resolved_hidden_units(),
            class_names=dataset.class_names,
            seed=config.train.seed,
            free_bits=m.free_bits,
        )

    def sample_callback(self, model, config, dataset, run_dir, validation_images):
        return CompletionGrid(run_dir, validation_images[:8].astype("float32") / 255.0, model.latent_dim,
                              seed=config.train.seed)

    # -- serving ------------------------------------------------------------------------------

    def endpoints(self, model: CompletionCVAE) -> dict[str, Endpoint]:
        image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
        eps_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="eps")
        count_spec = tf.TensorSpec([], tf.int32, name="num_samples")

        def images_checked(images):
            with tf.control_dependencies([shape_check(images, "images", model.image_shape)]):
                return tf.identity(images)

        def complete(images):
            images = images_checked(images)
            return {"images": model.complete(images, eps=tf.random.normal([tf.shape(images)[0], model.latent_dim]))}

        def complete_with_noise(images, eps):
            images = images_checked(images)
            return {"images": model.complete(images, eps=checked(eps, "eps", (model.latent_dim,), images, "images"))}

        def complete_baseline(images):
            return {"images": model.complete(images_checked(images), baseline=True)}

        def log_weights(images, num_samples):
            positive = tf.debugging.assert_positive(num_samples, message="num_samples must be at least 1")
            with tf.control_dependencies([positive]):
                return {"log_weights": model.log_weights(images_checked(images), num_samples)}

        def baseline_log_likelihood(images):
            return {"log_likelihood": model.baseline_log_likelihood(images_checked(images))}

        def latent_moments(images):
            return model.latent_moments(images_checked(images))

        endpoints = {
            "serving_default": Endpoint(complete, [image_spec]),
            "complete": Endpoint(complete, [image_spec]),
            "complete_with_noise": Endpoint(complete_with_noise, [image_spec, eps_spec]),
            "complete_baseline": Endpoint(complete_baseline, [image_spec]),
            "log_weights": Endpoint(log_weights, [image_spec, count_spec]),
            "baseline_log_likelihood": Endpoint(baseline_log_likelihood, [image_spec]),
        }
        if model.objective != "baseline":  # a baseline model has no z
            endpoints["latent_moments"] = Endpoint(latent_moments, [image_spec])
        return endpoints

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, model: Any, dataset: LoadedDataset, output: Path, options: EvaluationOptions,
                 history: list[dict[str, float]] | None = None) -> dict[str, Any]:
        check_image_shape(model.image_shape, dataset)
        x_test = dataset.x_test[:options.limit].astype(np.float32) / 255.0
        ncll = conditional_nll(model, x_test, options.iw_samples)
        baseline_ncll = -np.concatenate([np.asarray(model.baseline_log_likelihood(x_test[i:i + 1000]))
                                         for i in range(0, len(x_test), 1000)])
        config = model_config(model)
        metrics = {
            "task": self.name,
            "likelihood": "bernoulli",
            "binarized": dataset.binarized,
            "quadrants": int(config["quadrants"]),
            "objective": config["objective"],
            "ncll": float(ncll.mean()),
            "ncll_stderr": standard_error(ncll),
            "baseline_ncll": float(baseline_ncll.mean()),
            "baseline_ncll_stderr": standard_error(baseline_ncll),
            "iw_samples": int(options.iw_samples),
            "num_test_images": int(len(x_test)),
            "seed": int(options.seed),
            "dataset": dataset.source,
        }
        output.mkdir(parents=True, exist_ok=True)
        figures = Figures(output)
        if config["objective"] != "baseline":
            moments = [model.latent_moments(x_test[i:i + 1000]) for i in range(0, len(x_test), 1000)]
            moments = {key: np.concatenate([np.asarray(m[key]) for m in moments]) for key in moments[0]}
            q, p = (tfd.Normal(moments[f"{d}_mean"], np.exp(0.5 * moments[f"{d}_log_var"])) for d in ("q", "p"))
            usage = latent_usage(moments["q_mean"], diagonal_gaussian_kl(q, p).numpy())
            metrics.update(latent_usage_results(usage, figures))
        examples = x_test[:8]
        noise = np.random.default_rng(options.seed).standard_normal(
            (SAMPLES_PER_ROW, len(examples), int(config["latent_dim"]))).astype("float32")
        figures.save("completions", completion_figure(*self._columns(model, examples, noise),
                                                      title="test images completed"))
        write_evaluation(output, metrics, self._report(metrics, options), figures)
        return metrics

    @staticmethod
    def _columns(model, examples, noise):
        inputs, baseline, samples = completion_columns(model, examples, noise)
        return inputs, examples, baseline, samples

    def summary(self, metrics: dict[str, Any]) -> str:
        usage = f", active units {metrics['active_units']}" if "active_units" in metrics else ""
        return (f"−log p(y|x) (K={metrics['iw_samples']}) {metrics['ncll']:.2f} nats, "
                f"its baseline {metrics['baseline_ncll']:.2f} ({metrics['quadrants']} visible quadrant(s), "
                f"{metrics['objective']}){usage}")

    @staticmethod
    def _report(m: dict[str, Any], options: EvaluationOptions) -> list[str]:
        return [
            f"# Evaluation of `{options.model_name}`",
            "",
            f"Image completion, {m['quadrants']} visible quadrant(s), objective {m['objective']}. Test set: "
            f"{m['num_test_images']} images from {m['dataset']}; seed {m['seed']}. −log p(y | x) in nats per "
            f"image, summed over the missing pixels (lower is better).",
            "",
            "| metric | value |",
            "|---|---:|",
            f"| −log p(y \\| x), importance-weighted, K={m['iw_samples']} | {m['ncll']:.2f} ± {m['ncll_stderr']:.2f} |",
            f"| its deterministic baseline ŷ(x) | {m['baseline_ncll']:.2f} ± {m['baseline_ncll_stderr']:.2f} |",
            *([f"| active units (Cov_x(E_q[z]) > 0.01) | {m['active_units']} of {len(m['kl_per_dim'])} |",
               f"| KL(q ‖ p(z\\|x, ŷ)), summed over dimensions | {sum(m['kl_per_dim']):.3f} |"]
              if "active_units" in m else []),
        ]

    # -- generate -----------------------------------------------------------------------------

    def needs_test_images(self, request: GenerateRequest) -> bool:
        return True

    def generate(self, model: Any, request: GenerateRequest, dataset: LoadedDataset | None):
        if request.label != "all" or request.style_from is not None:
            raise UsageError("`label` and `style_from` are for class-conditional models; use `from_test` N")
        if request.from_test is None:
            raise UsageError("an image-completion model completes test images: pass `from_test` N")
        if not 1 <= request.from_test <= len(dataset.x_test):
            raise UsageError(f"`from_test` must be in [1, {len(dataset.x_test)}], got {request.from_test}")
        examples = dataset.x_test[:request.from_test].astype("float32") / 255.0
        latent_dim = model.latent_dim
        noise = np.random.default_rng(request.seed).standard_normal(
            (request.num, len(examples), latent_dim)).astype("float32")
        return completion_figure(*self._columns(model, examples, noise), title=f"completions, seed {request.seed}")
