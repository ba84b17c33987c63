"""Matplotlib figures: sample grids and ELBO curves, written atomically as PNG files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_cvae.atomic import atomic_path  # noqa: E402


def save_figure(figure: plt.Figure, path: str | Path) -> Path:
    """Write `figure` to `path` atomically and close it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def tile(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """Tile a [rows, cols, H, W, C] array into one [rows·(H+pad), cols·(W+pad)] grey or RGB mosaic."""
    rows, cols, height, width, channels = images.shape
    mosaic = np.ones((rows * (height + pad) - pad, cols * (width + pad) - pad, channels), images.dtype)
    for r in range(rows):
        for c in range(cols):
            top, left = r * (height + pad), c * (width + pad)
            mosaic[top:top + height, left:left + width] = images[r, c]
    return mosaic[..., 0] if channels == 1 else mosaic


def sample_grid_figure(
    images: np.ndarray, row_labels: Sequence[str], title: str | None = None,
    column_labels: Sequence[str] | None = None,
) -> plt.Figure:
    """A grid of images in [0, 1], shape [rows, cols, H, W, C] (grey or RGB), with each row
    labelled. A cell gets at least one screen pixel per image pixel, so large images stay sharp."""
    rows, cols, height, width, _ = images.shape
    cell = max(0.6, max(height, width) / 100)  # inches, at 100 dpi
    figure, axes = plt.subplots(figsize=(cell * cols + 1.6, cell * rows + 0.6))
    axes.imshow(tile(np.clip(images, 0.0, 1.0)), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axes.set_yticks([r * (height + 1) + height / 2 for r in range(rows)], list(row_labels))
    if column_labels is not None:
        axes.set_xticks(
            [c * (width + 1) + width / 2 for c in range(cols)], list(column_labels), rotation=40, ha="right"
        )
    else:
        axes.set_xticks([])
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    if title:
        axes.set_title(title)
    return figure


def elbo_curve_figure(history: Sequence[Mapping[str, float]]) -> plt.Figure:
    """Train and validation ELBO per epoch (nats per image; higher is better)."""
    epochs = [int(row["epoch"]) for row in history]
    figure, axes = plt.subplots(figsize=(6, 4))
    for key, label in (("elbo", "train"), ("val_elbo", "validation")):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            axes.plot(epochs, values, marker="o", markersize=3, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel("ELBO (nats per image)")
    axes.set_title("ELBO per epoch")
    axes.grid(alpha=0.3)
    axes.legend()
    if epochs:
        axes.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    return figure


def latent_scatter_figure(
    points: np.ndarray, labels: np.ndarray, class_names: Sequence[str], axis_name: str = "z"
) -> plt.Figure:
    """2-D latent codes coloured by class."""
    figure, axes = plt.subplots(figsize=(7, 6))
    colours = plt.get_cmap("tab10")
    for c, name in enumerate(class_names):
        chosen = labels == c
        axes.scatter(points[chosen, 0], points[chosen, 1], s=3, alpha=0.6, color=colours(c % 10), label=name)
    axes.set_xlabel(f"{axis_name} 1")
    axes.set_ylabel(f"{axis_name} 2")
    axes.set_title("latent space of test images (posterior means)")
    axes.legend(markerscale=4, fontsize=8, loc="best")
    return figure


def completion_figure(
    inputs: np.ndarray, truth: np.ndarray, baseline: np.ndarray, samples: np.ndarray, title: str | None = None
) -> plt.Figure:
    """Image completion, one example per row: the visible part (masked pixels grey), the truth,
    the baseline's prediction, then the samples. inputs/truth/baseline [N, H, W, C], samples [N, S, H, W, C]."""
    shown_inputs = np.where(inputs < 0, 0.5, inputs)  # MASK_VALUE is negative
    columns = np.concatenate([shown_inputs[:, None], truth[:, None], baseline[:, None], samples], axis=1)
    labels = ["input", "truth", "baseline", *(f"sample {i + 1}" for i in range(samples.shape[1]))]
    return sample_grid_figure(columns, [str(i + 1) for i in range(len(inputs))], title=title, column_labels=labels)


def captioned_images_figure(images: np.ndarray, captions: Sequence[str], title: str, columns: int = 8) -> plt.Figure:
    """Images [N, H, W, C] in [0, 1], each with its caption below, `columns` to a row."""
    rows = -(-len(images) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(1.5 * columns, 1.8 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < len(images):
            image = np.clip(images[index], 0.0, 1.0)
            axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0.0, vmax=1.0)
            axis.set_title(captions[index], fontsize=7, y=-0.32)
    figure.suptitle(title)
    return figure


def latent_usage_figure(kl_per_dim: np.ndarray | None, activity: np.ndarray, threshold: float) -> plt.Figure:
    """Two bar charts over the latent dimensions: the mean KL to the prior (nats; empty where the
    prior does not factorise) and the activity Cov_x(E_q[z]) (log scale, with the active-unit
    threshold), dimensions sorted by activity."""
    order = np.argsort(-activity)
    figure, (kl_axis, activity_axis) = plt.subplots(2, 1, figsize=(max(4.0, 0.3 * len(order) + 1.5), 5), sharex=True)
    positions = np.arange(len(order))
    if kl_per_dim is not None:
        kl_axis.bar(positions, kl_per_dim[order], color="tab:blue")
    kl_axis.set_ylabel("KL (nats)")
    activity_axis.bar(positions, np.maximum(activity[order], 1e-8), color="tab:orange")
    activity_axis.axhline(threshold, color="black", linestyle="--", linewidth=1, label=f"active: > {threshold}")
    activity_axis.set_yscale("log")
    activity_axis.set_ylabel("Cov_x(E_q[z])")
    activity_axis.set_xticks(positions, [str(i) for i in order], fontsize=7)
    activity_axis.set_xlabel("latent dimension")
    activity_axis.legend(fontsize=8)
    kl_axis.set_title(f"latent usage: {int(np.sum(activity > threshold))} of {len(order)} units active")
    return figure
