"""The run directory and the locating of saved models: every path a run writes, in one place.

`RunDir` owns the layout (config.json, history.csv, samples/, elbo_curve.png, checkpoints/,
model.keras, tensorboard/, backup/, evaluation/), the config and history I/O, the checkpoint
list, the resume rule and the default names. `locate(path)` tells a run dir, a checkpoint and
a SavedModel export apart and reads what each says about itself, without TensorFlow, so the
command line can refuse a wrong path at once; `load(location)` then loads the model.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keras_cvae.atomic import atomic_write_text
from keras_cvae.config import METRIC_NAMES, ConfigError, RunConfig
from keras_cvae.distribute import cluster_task
from keras_cvae.errors import UsageError

HISTORY_COLUMNS = ("epoch", *METRIC_NAMES, *(f"val_{name}" for name in METRIC_NAMES))
# Columns a model adds after those when it reports them (the semi-supervised classifier's accuracy).
OPTIONAL_HISTORY_COLUMNS = ("accuracy", "val_accuracy")
CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d{3,})\.keras$")
EXPORT_CONFIG_ASSET = "config.json"  # the export's assets/ file: {"task", "model", "dataset", …}


def default_name(config: RunConfig) -> str:
    """The default name of a run's dir and export: `<dataset>-<arch>`, for image completion
    `<dataset>-completion<N>-<objective>`, for semi-supervised runs `<dataset>-labeled<N>-<arch>`."""
    if config.data.task == "completion":
        return f"{config.data.dataset}-completion{config.data.quadrants}-{config.model.objective}"
    if config.data.task == "semi_supervised":
        return f"{config.data.dataset}-labeled{config.data.labeled}-{config.model.arch}"
    return f"{config.data.dataset}-{config.model.arch}"


def default_run_dir(config: RunConfig) -> Path:
    return Path(config.train.run_dir or Path("runs") / default_name(config))


def default_export_root(config: RunConfig) -> Path:
    return Path(config.train.export or Path("saved_models") / default_name(config))


class RunDir:
    """One training run's directory. Epochs are numbered from 1 in every file name and row."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- paths ------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def history_path(self) -> Path:
        return self.path / "history.csv"

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    @property
    def test_files_path(self) -> Path:
        """An image folder's held-out test images, one path per line (the split's record)."""
        return self.path / "test_files.txt"

    @property
    def elbo_curve_path(self) -> Path:
        return self.path / "elbo_curve.png"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def evaluation_dir(self) -> Path:
        return self.path / "evaluation"

    def samples_path(self, epoch: int) -> Path:
        return self.path / "samples" / f"epoch_{epoch:03d}.png"

    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch_{epoch:03d}.keras"

    @property
    def backup_root(self) -> Path:
        return self.path / "backup"

    def backup_dir(self) -> Path:
        """Where this process's BackupAndRestore keeps its epoch-boundary backup (one per worker)."""
        task = cluster_task()
        return self.backup_root / ("chief" if task is None else f"{task[0]}-{task[1]}")

    def has_backup(self) -> bool:
        """Whether an interrupted multi-worker run left a backup here to resume from."""
        return self.backup_root.is_dir() and any(path.is_file() for path in self.backup_root.rglob("*"))

    # -- config and history -------------------------------------------------------------------

    def load_config(self) -> RunConfig:
        return RunConfig.load(self.config_path)

    def save_config(self, config: RunConfig) -> None:
        config.save(self.config_path)

    def read_history(self) -> list[dict[str, float]]:
        """Rows of history.csv as dicts, `epoch` as int; [] when there is none yet."""
        if not self.history_path.exists():
            return []
        with self.history_path.open(newline="") as handle:
            return [
                {key: (int(value) if key == "epoch" else float(value)) for key, value in row.items() if value != ""}
                for row in csv.DictReader(handle)
            ]

    def write_history(self, rows: Sequence[dict[str, float]]) -> None:
        buffer = io.StringIO()
        extra = [name for name in OPTIONAL_HISTORY_COLUMNS if any(name in row for row in rows)]
        writer = csv.DictWriter(buffer, fieldnames=[*HISTORY_COLUMNS, *extra], extrasaction="ignore",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.history_path, buffer.getvalue())

    # -- checkpoints and the resume rule --------------------------------------------------------

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, path) of every complete checkpoint, oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoint_dir.iterdir()
                 if (m := CHECKPOINT_PATTERN.match(p.name))]
        return sorted(found)

    def is_empty(self) -> bool:
        return not self.path.exists() or not any(self.path.iterdir())

    def resumes(self, resume: bool, strategy: str) -> bool:
        """The resume rule: `--resume`, or a multi-worker run restarted after a failure (it
        continues from its BackupAndRestore backup without being asked)."""
        return resume or (strategy == "multi_worker" and self.has_backup())

    def refuse_to_overwrite(self) -> None:
        if not self.is_empty():
            raise UsageError(
                f"run dir {self.path} is not empty; pass `resume=True` to continue it, or choose another `run_dir`")


# ------------------------------------------------------------------------------------------
# Locating a saved model


@dataclass(frozen=True)
class ModelLocation:
    """A saved model found on disk: what it is, its task and dataset, and where its evaluation goes.

    kind is "run" (a run dir's model.keras), "checkpoint" (a `.keras` file) or "export" (a
    SavedModel version dir); `run_dir` is the run it belongs to, when known.
    """

    kind: str
    path: Path
    task: str
    dataset: str | None
    run_dir: RunDir | None
    default_output: Path
    export_config: dict[str, Any] | None = None
    # The run's data settings (DataConfig's fields: data_dir, conditions, image_size, …), when known.
    data: dict[str, Any] | None = None


def is_saved_model_dir(path: str | Path) -> bool:
    return (Path(path) / "saved_model.pb").is_file()


def resolve_version_dir(path: str | Path) -> Path:
    """`path` itself if it is a SavedModel, else its newest integer version subdirectory."""
    path = Path(path)
    if is_saved_model_dir(path):
        return path
    if path.is_dir():
        versions = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit() and is_saved_model_dir(p))
        if versions:
            return path / str(versions[-1])
    raise FileNotFoundError(f"{path} is not a SavedModel version dir (no saved_model.pb) nor an export root")


def read_export_config(version_dir: str | Path) -> dict[str, Any]:
    """The export's `assets/config.json`: {"task", "model": {...}, "dataset", …}. Exports written
    before the task was recorded name it by their model config (completion ones have no classes)."""
    path = Path(version_dir) / "assets" / EXPORT_CONFIG_ASSET
    if not is_saved_model_dir(version_dir) or not path.is_file():
        raise FileNotFoundError(f"{version_dir} is not a keras_cvae SavedModel version dir (no assets/{EXPORT_CONFIG_ASSET})")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise ConfigError(f"{path} is not a keras_cvae export config (no \"model\" section)")
    config.setdefault("task", "completion" if "quadrants" in config["model"] else "classes")
    return config


def locate(path: str | Path) -> ModelLocation:
    """What `path` holds: a run dir, a checkpoint file, or a SavedModel (version dir or export
    root, the newest version). A UsageError in one line when it is none of them."""
    path = Path(path)
    if path.is_file() and path.suffix == ".keras":
        owner = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        run_dir = RunDir(owner) if RunDir(owner).config_path.is_file() else None
        return _located("checkpoint", path, run_dir, path.with_name(f"{path.stem}-evaluation"))
    if RunDir(path).model_path.is_file():
        run_dir = RunDir(path)
        return _located("run", run_dir.model_path, run_dir, run_dir.evaluation_dir)
    try:
        version_dir = resolve_version_dir(path)
    except FileNotFoundError:
        raise UsageError(
            f"{path} is neither a SavedModel version dir (saved_model.pb), a run dir (model.keras) "
            f"nor a checkpoint (.keras)") from None
    config = read_export_config(version_dir)
    return ModelLocation("export", version_dir, config["task"], config.get("dataset"), None,
                         version_dir.with_name(f"{version_dir.name}-evaluation"), config, config.get("data"))


def _located(kind: str, path: Path, run_dir: RunDir | None, output: Path) -> ModelLocation:
    if run_dir is None or not run_dir.config_path.is_file():
        raise UsageError(f"{path} has no config.json beside it, so its task and dataset are unknown; "
                         f"give the run dir it was trained in")
    config = run_dir.load_config()
    return ModelLocation(kind, path, config.data.task, config.data.dataset, run_dir, output,
                         data=dataclasses.asdict(config.data))
