"""The speed settings a run gets when it names none: each one the measured best for the device."""

from __future__ import annotations

import keras
import pytest

from keras_cvae.config import ConfigError
from keras_cvae.training import has_gpu, precision_policy, resolve_jit_compile


def test_xla_by_default_where_it_was_measured_faster():
    assert resolve_jit_compile(None, "mlp") is True
    assert resolve_jit_compile(None, "conv") is has_gpu()  # oneDNN's CPU convolutions beat XLA's
    assert resolve_jit_compile(False, "mlp") is False and resolve_jit_compile(True, "conv") is True
    # bfloat16 on a CPU: oneDNN's AMX matmuls beat XLA's float32-bound ones.
    assert resolve_jit_compile(None, "mlp", mixed_precision=True) is has_gpu()
    assert resolve_jit_compile(True, "mlp", mixed_precision=True) is True


def test_mixed_precision_is_bfloat16_on_a_cpu_and_restored_after():
    before = keras.mixed_precision.global_policy().name
    with precision_policy(True):
        assert keras.mixed_precision.global_policy().name == ("mixed_float16" if has_gpu() else "mixed_bfloat16")
    assert keras.mixed_precision.global_policy().name == before
    with precision_policy(False):
        assert keras.mixed_precision.global_policy().name == before


def test_no_xla_for_several_cpu_replicas():
    if has_gpu():
        pytest.skip("GPUs have XLA collectives")
    assert resolve_jit_compile(None, "mlp", replicas=2) is False
    with pytest.raises(ConfigError, match="XLA cannot compile the all-reduce of 2 CPU replicas"):
        resolve_jit_compile(True, "mlp", replicas=2)
