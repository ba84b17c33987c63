"""What this machine's CPU can do fast, read from /proc/cpuinfo (no TensorFlow import here), and
the one-line warning for a setting that would run far slower on it than its alternative."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from keras_cvae.errors import SlowPathWarning

# Instructions that compute in bfloat16 natively; without them oneDNN emulates bfloat16 math
# in float32, with a cast around every operation.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The first CPU's feature flags, or None where /proc/cpuinfo is not readable (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_bfloat16() -> bool:
    """Whether the CPU computes bfloat16 natively (AVX512_BF16 or AMX); True where unknown."""
    flags = cpu_flags()
    return flags is None or any(flag in flags for flag in BFLOAT16_FLAGS)


def warn_slow(message: str) -> None:
    """Warn once, in one line, that a setting takes a slow path on this machine (what to use
    instead belongs in `message`); the command line prints it as `<command>: warning: …`."""
    warnings.warn(message, SlowPathWarning, stacklevel=3)
