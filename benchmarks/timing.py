"""Wall time per training epoch, for the benchmarks' seconds-per-epoch and hours columns."""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras


class EpochTimer(keras.callbacks.Callback):
    """Times each epoch (numbered from 1 in `seconds`). With `path`, it keeps them in that JSON
    file, read back when it is made, so that the times of a resumed run add up across sessions."""

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else None
        self.seconds: dict[int, float] = {}
        if self.path is not None and self.path.exists():
            self.seconds = {int(k): v for k, v in json.loads(self.path.read_text()).items()}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds[epoch + 1] = time.perf_counter() - self.start
        if self.path is not None:
            from keras_cvae.atomic import atomic_write_text

            atomic_write_text(self.path, json.dumps(self.seconds, indent=1) + "\n")

    def steady_seconds(self) -> float:
        """The mean epoch time without the first epoch (graph tracing), or the first if it is alone."""
        times = [self.seconds[k] for k in sorted(self.seconds)]
        rest = times[1:] or times
        return sum(rest) / len(rest)

    def first_epochs(self, epochs: int) -> list[float]:
        """The wall times of epochs 1 to `epochs` that it timed, in any session (a run resumed
        after a later epoch's crash trains that epoch again, and its time is the new one)."""
        return [self.seconds[e] for e in range(1, epochs + 1) if e in self.seconds]
