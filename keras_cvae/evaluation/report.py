"""Writing an evaluation: metrics.json, report.md with every figure, and side-by-side tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_cvae.atomic import atomic_write_text
from keras_cvae.plotting import save_figure


def standard_error(values: np.ndarray) -> float:
    """The standard error of the mean of per-image values."""
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


class Figures:
    """Saves figures into an evaluation's output dir and remembers them for report.md."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.files: dict[str, str] = {}

    def save(self, name: str, figure) -> None:
        save_figure(figure, self.output / f"{name}.png")
        self.files[name] = f"{name}.png"

    def markdown(self) -> list[str]:
        lines = []
        for name, file in self.files.items():
            lines += [f"## {name.replace('_', ' ')}", "", f"![{name}]({file})", ""]
        return lines


def write_evaluation(output: Path, metrics: dict, report_lines: list[str], figures: Figures) -> None:
    """metrics.json and report.md (the numbers, then every figure), each written atomically."""
    atomic_write_text(output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    atomic_write_text(output / "report.md", "\n".join([*report_lines, "", *figures.markdown()]))


def comparison_table(results: Sequence[dict]) -> str:
    """Two evaluations side by side: every number both report, as a Markdown table."""
    first, second = results
    lines = [f"| metric | {first['model']} | {second['model']} |", "|---|---:|---:|"]
    for key, value in first.items():
        other = second.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(other, (int, float)):
            lines.append(f"| {key} | {value:.4g} | {other:.4g} |")
    return "\n".join(lines)
