"""Condition rows for pictures and serving: which conditions a grid's rows vary and at which values
the others are held, and the serving signatures' one input per condition, checked in the graph.

A row of conditions holds, per condition, a category index or a value in the data's units (see
`keras_cvae.conditions`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from keras_cvae.conditions import CATEGORICAL, Condition, describe, first_categorical, held_values

SWEEP_STEPS = 7  # rows of a continuous condition's sweep


@dataclass(frozen=True)
class GridRows:
    """A picture's rows: the condition rows [R, M], a label per row, and a title part that states
    the values the other conditions are held at."""

    rows: np.ndarray
    labels: list[str]
    held: str


def grid_rows(conditions: Sequence[Condition], vary: int | None, held: np.ndarray | None = None) -> GridRows:
    """Rows that vary condition `vary` (every category, or a sweep of SWEEP_STEPS values over the
    training range) with the others at `held` (default `held_values`); one row when `vary` is None."""
    held = held_values(conditions) if held is None else np.asarray(held, np.float32)
    others = ", ".join(f"{c.name}={describe(c, v)}" for i, (c, v) in enumerate(zip(conditions, held)) if i != vary)
    if vary is None:
        return GridRows(held[np.newaxis], [others or "samples"], "")
    condition = conditions[vary]
    if condition.kind == CATEGORICAL:
        values = np.arange(len(condition.values), dtype=np.float32)
        labels = list(condition.values)
    else:
        values = np.linspace(condition.low, condition.high, SWEEP_STEPS, dtype=np.float32)
        labels = [f"{condition.name}={v:.3g}" for v in values]
    rows = np.repeat(held[np.newaxis], len(values), axis=0)
    rows[:, vary] = values
    return GridRows(rows, labels, f"{others} held" if others else "")


def default_vary(conditions: Sequence[Condition], given: Collection[str] = ()) -> int | None:
    """The condition a grid's rows vary: the first categorical one not `given` (held by name),
    else the first one not given; None when all are given."""
    free = [i for i, c in enumerate(conditions) if c.name not in given]
    first = first_categorical([conditions[i] for i in free])
    return free[first] if first is not None else next(iter(free), None)


def prior_grid(model, rows: np.ndarray, num: int, seed: int, same_per_column: bool = True) -> np.ndarray:
    """z for a grid of samples, [len(rows), num, L], from the model's prior (`model` a ClassModel:
    `sample_latent(rows, seed)`). Every cell of column j is drawn with one seed, so the rows
    differ by their conditions only (under N(0, I), one z per column); with `same_per_column`
    False every cell has a seed of its own."""
    def cell(r: int, j: int) -> np.ndarray:
        cell_seed = (seed * 1_000_003 + j + (0 if same_per_column else (r + 1) * num)) % (2**31 - 1)
        return model.sample_latent(rows[r:r + 1], cell_seed)[0]

    return np.stack([np.stack([cell(r, j) for j in range(num)]) for r in range(len(rows))]).astype(np.float32)


def decode_grid(model, rows: np.ndarray, z: np.ndarray) -> np.ndarray:
    """A grid decoded under its condition rows, [rows, columns, H, W, C]: z [columns, L] is the
    same z under every row (the rows differ by their conditions only), z [rows, columns, L] one z
    per cell (`prior_grid`). `model` decodes numpy (a ClassModel)."""
    z = np.broadcast_to(z, (len(rows), *z.shape)) if z.ndim == 2 else z
    columns = z.shape[1]
    images = model.decode(np.ascontiguousarray(z).reshape(len(rows) * columns, -1), np.repeat(rows, columns, axis=0))
    return images.reshape(len(rows), columns, *images.shape[1:])


# ------------------------------------------------------------------------------------------
# Serving: one input per condition, checked in the graph


def condition_specs(conditions: Sequence[Condition]) -> list[tf.TensorSpec]:
    """One [N] input per condition, named after it: int32 category indices or float32 values."""
    return [tf.TensorSpec([None], tf.int32 if c.kind == CATEGORICAL else tf.float32, name=c.name)
            for c in conditions]


def checked_rows(conditions: Sequence[Condition], inputs: Sequence[tf.Tensor]) -> tf.Tensor:
    """The condition inputs as rows [N, M] float32, after asserting in the graph that categories
    are in range, values finite, and every input has one batch size."""
    if not inputs:
        raise ValueError("a conditional export needs at least one condition")
    checks = []
    for condition, tensor in zip(conditions, inputs):
        if condition.kind == CATEGORICAL:
            k = len(condition.values)
            message = f"{condition.name} must be integers in [0, {k}) (0 to {k - 1})"
            checks += [tf.debugging.assert_non_negative(tensor, message=message),
                       tf.debugging.assert_less(tensor, tf.constant(k, tf.int32), message=message)]
        else:
            checks.append(tf.debugging.assert_all_finite(tensor, f"{condition.name} must be finite numbers"))
        if tensor is not inputs[0]:
            checks.append(tf.debugging.assert_equal(
                tf.shape(tensor)[0], tf.shape(inputs[0])[0],
                message=f"{condition.name} and {conditions[0].name} must have the same batch size"))
    with tf.control_dependencies(checks):
        return tf.stack([tf.cast(t, tf.float32) for t in inputs], axis=1)
