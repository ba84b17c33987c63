"""SavedModel export for TF Serving: `<export_root>/<version>/`, versioned and atomic.

The model's task supplies the signatures (`Task.endpoints`) and any extra assets; this module
writes them. Every signature has a dynamic batch dimension and declares its shapes; since a
signature call does not enforce declared shapes at run time, the task's functions also assert
them in the graph. No Python-function ops, so TF Serving (CPU or GPU) runs it, and
`tf.saved_model.load` loads it without keras_cvae installed. `assets/config.json` carries the
task, the model's config, the dataset and its data settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras

from keras_cvae.atomic import atomic_directory, publish_numbered_directory
from keras_cvae.models.base import VariationalModel
from keras_cvae.run_dir import EXPORT_CONFIG_ASSET
from keras_cvae.tasks import task_of


def next_version(export_root: str | Path) -> int:
    """1 + the largest integer version dir under `export_root` (1 when there is none)."""
    root = Path(export_root)
    versions = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.is_dir() else []
    return max(versions, default=0) + 1


def build_archive(model: VariationalModel) -> keras.export.ExportArchive:
    """An ExportArchive tracking `model`, with its task's signatures."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, endpoint in task_of(model).endpoints(model).items():
        archive.add_endpoint(name, endpoint.function, input_signature=endpoint.input_signature)
    return archive


def export_saved_model(
    model: VariationalModel, export_root: str | Path, version: int | None = None, dataset: str | None = None,
    data: dict[str, Any] | None = None,
) -> Path:
    """Write `model` as `<export_root>/<version>/`, atomically, and return the version dir.

    The SavedModel is written into a hidden directory beside the version dir and renamed into
    place only when complete, so TF Serving never sees, and an interruption never leaves, a
    partial version. Without `version` it takes the next free number at the moment of the
    rename, so concurrent exports to one root each get their own. `data` (the run's DataConfig
    fields) lets evaluation find the same test images again.
    """
    root = Path(export_root)
    model = model.float32_copy()  # a mixed-precision model is served in float32
    task = task_of(model)
    archive = build_archive(model)

    def write(directory: Path) -> None:
        archive.write_out(str(directory), verbose=False)
        assets = directory / "assets"
        assets.mkdir(exist_ok=True)
        config = {"task": task.name, "model": model.get_config(), "dataset": dataset, "data": data}
        (assets / EXPORT_CONFIG_ASSET).write_text(json.dumps(config, indent=2) + "\n")
        for name, text in task.assets(model).items():
            (assets / name).write_text(text)

    if version is None:
        return publish_numbered_directory(root, write, first=next_version(root))
    target = root / str(int(version))
    if target.exists():
        raise FileExistsError(f"export version {target} already exists; pick another `version`")
    with atomic_directory(target) as tmp:
        write(tmp)
    return target
