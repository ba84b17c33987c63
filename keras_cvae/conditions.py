"""Conditions: what each condition column is (categorical or continuous), and how a column of
text becomes numbers.

A dataset's conditions travel as one float32 array [N, M], a column per condition: a categorical
condition holds its category index (exact in float32), a continuous one its value in the data's
own units. The model turns a row into the networks' condition vector (one-hot groups and
standardised values); the mean and std used for that are stored here, so that the run dir, the
`.keras` file and the export all carry them.

The rule that tells the kinds apart (`infer_kind`): a column is continuous when every value is a
number and it has more than CATEGORICAL_MAX_VALUES distinct values; otherwise categorical.
`--conditions NAME:continuous` or `NAME:categorical` overrides it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_cvae.errors import DataError

CATEGORICAL = "categorical"
CONTINUOUS = "continuous"
KINDS = (CATEGORICAL, CONTINUOUS)
CATEGORICAL_MAX_VALUES = 20
# Names that the serving signatures use for other inputs, so no condition may take them.
RESERVED_NAMES = ("images", "z", "eps", "num_samples")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Condition:
    """One condition: its name, kind, and its vocabulary (categorical) or scaling (continuous)."""

    name: str
    kind: str
    values: tuple[str, ...] = ()
    mean: float = 0.0
    std: float = 1.0
    # The training data's range (continuous), for the sweeps in sample grids.
    low: float = 0.0
    high: float = 0.0

    @property
    def width(self) -> int:
        """How many entries the condition takes in the networks' condition vector."""
        return len(self.values) if self.kind == CATEGORICAL else 1

    def to_dict(self) -> dict[str, Any]:
        if self.kind == CATEGORICAL:
            return {"name": self.name, "kind": self.kind, "values": list(self.values)}
        return {"name": self.name, "kind": self.kind, "mean": self.mean, "std": self.std,
                "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Condition:
        if raw.get("kind") == CATEGORICAL:
            return cls(raw["name"], CATEGORICAL, values=tuple(str(v) for v in raw["values"]))
        return cls(raw["name"], CONTINUOUS, mean=float(raw["mean"]), std=float(raw["std"]),
                   low=float(raw.get("low", 0.0)), high=float(raw.get("high", 0.0)))

    def index(self, value: Any) -> int:
        """A categorical value as its index: a category's name first, else an index (an integer,
        an integral float, or digits); a DataError listing the categories otherwise."""
        text = str(value)
        if text in self.values:
            return self.values.index(text)
        number = -1
        if isinstance(value, int | float | np.integer | np.floating) and float(value).is_integer():
            number = int(value)
        elif text.isdigit():
            number = int(text)
        if 0 <= number < len(self.values):
            return number
        raise DataError(f"{self.name}: unknown category {value!r}; choose one of: {', '.join(self.values)}")

    def value(self, given: Any) -> float:
        """`given` as this condition's number: a category index, or a value in the data's units."""
        if self.kind == CATEGORICAL:
            return float(self.index(given))
        number = _number(str(given))
        if number is None:
            raise DataError(f"{self.name}: expected a number, got {given!r}")
        return number


def first_categorical(conditions: Sequence[Condition]) -> int | None:
    """The index of the first categorical condition (the one sample grids' rows and the class
    names follow), None without one."""
    return next((i for i, c in enumerate(conditions) if c.kind == CATEGORICAL), None)


def class_names(conditions: Sequence[Condition]) -> tuple[str, ...]:
    """The categories of the first categorical condition; () without one."""
    first = first_categorical(conditions)
    return conditions[first].values if first is not None else ()


def class_labels(class_names: Sequence[str]) -> Condition:
    """The one categorical condition `labels` of class data (IDX, npz, class subfolders)."""
    return Condition("labels", CATEGORICAL, values=tuple(str(name) for name in class_names))


def checked_name(name: str, source: str) -> str:
    """`name` if it can name a serving input (letters, digits, _), else a DataError naming it."""
    if not _NAME.match(name) or name in RESERVED_NAMES:
        raise DataError(
            f"{source}: condition column {name!r} cannot name a serving input; rename it to letters, digits "
            f"and _ (not {', '.join(RESERVED_NAMES)})")
    return name


def parse_condition_list(text: str | None) -> list[tuple[str, str | None]]:
    """`--conditions` text, `NAME[:KIND][,NAME[:KIND]…]`, as (name, kind or None) pairs."""
    if not text:
        return []
    picked = []
    for part in text.split(","):
        name, _, kind = part.strip().partition(":")
        if not name:
            raise DataError(f"`conditions` {text!r}: an empty name; use NAME[:KIND],… ")
        if kind and kind not in KINDS:
            raise DataError(f"`conditions` {text!r}: kind {kind!r} must be one of {', '.join(KINDS)}")
        picked.append((name, kind or None))
    return picked


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def infer_kind(values: Sequence[str]) -> str:
    """CONTINUOUS when every value is a finite number and there are more than
    CATEGORICAL_MAX_VALUES distinct ones, else CATEGORICAL (the module docstring's rule)."""
    distinct = set(values)
    if len(distinct) > CATEGORICAL_MAX_VALUES and all(_number(v) is not None for v in distinct):
        return CONTINUOUS
    return CATEGORICAL


def _sorted_vocabulary(values: set[str]) -> tuple[str, ...]:
    """Categories sorted by number when all are numbers (2 before 10), else by text."""
    if all(_number(v) is not None for v in values):
        return tuple(sorted(values, key=lambda v: (_number(v), v)))
    return tuple(sorted(values))


def encode_column(name: str, column: Sequence[str], kind: str | None, source: str,
                  train_rows: np.ndarray) -> tuple[np.ndarray, Condition]:
    """A column of text as float32 numbers and its Condition.

    `kind` None applies `infer_kind`. The vocabulary covers every row; the scaling of a continuous
    column comes from the training rows (`train_rows`, a boolean mask) alone.
    """
    kind = kind or infer_kind(column)
    distinct = set(column)
    if len(distinct) < 2:
        raise DataError(f"{source}: condition column {name!r} has one value ({next(iter(distinct), '')!r}) for "
                        f"every image, so it cannot condition anything; drop it from `conditions`")
    if kind == CATEGORICAL:
        vocabulary = _sorted_vocabulary(distinct)
        lookup = {value: index for index, value in enumerate(vocabulary)}
        return np.array([lookup[v] for v in column], np.float32), Condition(name, CATEGORICAL, values=vocabulary)
    numbers = np.empty(len(column), np.float32)
    for row, text in enumerate(column):
        value = _number(text)
        if value is None:
            raise DataError(f"{source}: column {name!r} is continuous but row {row + 1} holds {text!r}, not a number")
        numbers[row] = value
    return numbers, continuous_condition(name, numbers[train_rows], source)


def continuous_condition(name: str, train_values: np.ndarray, source: str) -> Condition:
    """A continuous Condition scaled by the training values' mean and std."""
    std = float(np.std(train_values))
    if not std > 0:
        raise DataError(f"{source}: condition column {name!r} has one value in the training split; drop it")
    return Condition(name, CONTINUOUS, mean=float(np.mean(train_values)), std=std,
                     low=float(np.min(train_values)), high=float(np.max(train_values)))


def check_conditions(conditions: Sequence[Condition], rows: np.ndarray, source: str) -> None:
    """DataError unless `rows` [N, M] fits `conditions`: categorical indices within the vocabulary,
    continuous values finite."""
    if rows.ndim != 2 or rows.shape[1] != len(conditions):
        raise DataError(f"{source}: conditions have shape {rows.shape}, expected N×{len(conditions)}")
    for column, condition in zip(rows.T, conditions):
        if condition.kind == CATEGORICAL:
            if len(column) and (column.min() < 0 or column.max() >= len(condition.values)
                                or np.any(column != np.round(column))):
                raise DataError(f"{source}: {condition.name} outside [0, {len(condition.values)})")
        elif not np.all(np.isfinite(column)):
            raise DataError(f"{source}: {condition.name} holds values that are not finite")


def held_values(conditions: Sequence[Condition]) -> np.ndarray:
    """The values a picture holds conditions at unless told otherwise, [M]: a categorical
    condition's first category, a continuous condition's training mean."""
    return np.array([0.0 if c.kind == CATEGORICAL else c.mean for c in conditions], np.float32)


def describe(condition: Condition, value: float) -> str:
    return condition.values[int(value)] if condition.kind == CATEGORICAL else f"{value:.3g}"


def rows_from_mapping(conditions: Sequence[Condition], given: Mapping[str, object], count: int,
                      held: np.ndarray | None = None) -> np.ndarray:
    """Rows [count, M] from {name: value or values} (category names or indices, numbers in the data's
    units); conditions not given are held at `held`. A DataError names an unknown condition or category."""
    names = [c.name for c in conditions]
    unknown = [name for name in given if name not in names]
    if unknown:
        raise DataError(f"unknown condition {unknown[0]!r}; this model's conditions are {', '.join(names)}")
    rows = np.repeat((held_values(conditions) if held is None else held)[np.newaxis], count, axis=0)
    for index, condition in enumerate(conditions):
        if condition.name in given:
            values = np.atleast_1d(np.asarray(given[condition.name], dtype=object))
            column = [condition.value(v) for v in values]
            rows[:, index] = np.broadcast_to(np.asarray(column, np.float32), (count,))
    return rows
