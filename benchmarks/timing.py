"""Wall time per training epoch, for the benchmarks' seconds-per-epoch and hours columns."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import keras


class EpochTimer(keras.callbacks.Callback):
    """Times each epoch (numbered from 1 in `seconds`) and, given `machine`, notes which machine
    trained it (in `machines`). With `path`, it keeps both in that JSON file, read back when it is
    made, so that the times of a resumed run add up across sessions and each stays with its machine."""

    def __init__(self, path: str | Path | None = None, machine: str | None = None) -> None:
        super().__init__()
        self.path = Path(path) if path is not None else None
        self.machine = machine
        self.seconds: dict[int, float] = {}
        self.machines: dict[int, str] = {}
        if self.path is not None and self.path.exists():
            kept = json.loads(self.path.read_text())
            if "seconds" not in kept:  # a file of seconds alone: its epochs' machines are not recorded
                kept = {"seconds": kept}
            self.seconds = {int(k): v for k, v in kept["seconds"].items()}
            self.machines = {int(k): v for k, v in kept.get("machines", {}).items()}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.seconds[epoch + 1] = time.perf_counter() - self.start
        if self.machine is None:
            self.machines.pop(epoch + 1, None)
        else:
            self.machines[epoch + 1] = self.machine
        if self.path is not None:
            from keras_cvae.atomic import atomic_write_text

            kept = {"seconds": self.seconds, "machines": self.machines}
            atomic_write_text(self.path, json.dumps(kept, indent=1) + "\n")

    def steady_seconds(self) -> float:
        """The mean epoch time without the first epoch (graph tracing), or the first if it is alone."""
        times = [self.seconds[k] for k in sorted(self.seconds)]
        rest = times[1:] or times
        return sum(rest) / len(rest)

    def first_epochs(self, epochs: int) -> list[float]:
        """The wall times of epochs 1 to `epochs` that it timed, in any session (a run resumed
        after a later epoch's crash trains that epoch again, and its time is the new one)."""
        return [self.seconds[e] for e in range(1, epochs + 1) if e in self.seconds]

    def trained_on(self, epochs: int) -> list[tuple[str | None, str]]:
        """Which machine trained each of epochs 1 to `epochs`: each run of consecutive epochs on one
        machine ("3–4", or "7" alone) with that machine (None where it is not recorded), in epoch order."""
        spans = []
        for name, run in itertools.groupby(range(1, epochs + 1), self.machines.get):
            first, *rest = run
            spans.append((name, f"{first:,}" if not rest else f"{first:,}–{rest[-1]:,}"))
        return spans
