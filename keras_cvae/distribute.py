"""Choosing a tf.distribute strategy, and who is chief.

`--strategy`: auto (MirroredStrategy when more than one GPU is visible, else the default
strategy), one_device, mirrored (every visible GPU; with none, every logical CPU device), or
multi_worker (MultiWorkerMirroredStrategy; the cluster comes from TF_CONFIG). `--batch-size` is
the global batch: each of R replicas gets batch/R images and the per-replica losses are scaled
by 1/R, so the summed gradient equals the single-device gradient of the global batch.

`is_chief` and `cluster_task` read TF_CONFIG only (no TensorFlow import), so the command line can
decide what this process writes before anything heavy starts.
"""

from __future__ import annotations

import json
import os

from keras_cvae.config import STRATEGIES, ConfigError


def cluster_task() -> tuple[str, int, dict] | None:
    """This process's (task type, index, cluster) from TF_CONFIG, or None when TF_CONFIG is unset."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        task = config["task"]
        return str(task["type"]), int(task["index"]), dict(config.get("cluster", {}))
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"TF_CONFIG is not valid JSON with task.type and task.index: {err}") from err


def is_chief() -> bool:
    """True unless TF_CONFIG names this process as a worker other than the first (or a chief exists)."""
    task = cluster_task()
    if task is None:
        return True
    task_type, index, cluster = task
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def make_strategy(name: str):
    """The tf.distribute strategy for `name` (see the module docstring)."""
    import tensorflow as tf

    if name == "multi_worker":  # before anything else touches the runtime
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if name == "auto":
        return tf.distribute.MirroredStrategy(gpus) if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0] if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(gpus or [d.name for d in tf.config.list_logical_devices("CPU")])
    raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
