"""Slow paths are named: the CPU probe, the warnings it drives, and their one-line form."""

from __future__ import annotations

import warnings

import pytest

from keras_cvae import hardware, training
from keras_cvae.errors import SlowPathWarning

CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize(("extra", "native"), [("", False), ("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True)])
def test_the_probe_reads_the_bfloat16_instructions(tmp_path, monkeypatch, extra, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    flags = hardware.cpu_flags.__wrapped__(cpuinfo)
    assert "avx2" in flags
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert hardware.cpu_has_bfloat16() is native


def test_an_unreadable_cpuinfo_is_unknown_and_never_warns(tmp_path, monkeypatch):
    assert hardware.cpu_flags.__wrapped__(tmp_path / "missing") is None
    monkeypatch.setattr(hardware, "cpu_flags", lambda: None)
    assert hardware.cpu_has_bfloat16()


def _warnings_of(function, *args) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args)
        if hasattr(result, "__enter__"):
            with result:
                pass
    return [str(w.message) for w in caught if issubclass(w.category, SlowPathWarning)]


@pytest.mark.parametrize("native", [False, True])
def test_mixed_precision_warns_on_a_cpu_without_bfloat16(monkeypatch, native):
    monkeypatch.setattr(training, "has_gpu", lambda: False)
    monkeypatch.setattr(training, "cpu_has_bfloat16", lambda: native)
    messages = _warnings_of(training.precision_policy, True)
    if native:
        assert messages == []
    else:
        assert len(messages) == 1 and "`mixed_precision=True`" in messages[0] and "AVX512_BF16" in messages[0]
    assert _warnings_of(training.precision_policy, False) == []


@pytest.mark.parametrize(("setting", "arch", "mixed", "warned"), [
    (True, "conv", False, True), (True, "resnet", False, True), (True, "mlp", True, True),
    (True, "mlp", False, False), (None, "conv", False, False), (False, "conv", False, False),
])
def test_xla_on_a_cpu_path_it_slows_is_warned(monkeypatch, setting, arch, mixed, warned):
    monkeypatch.setattr(training, "has_gpu", lambda: False)
    messages = _warnings_of(training.resolve_jit_compile, setting, arch, 1, mixed)
    assert len(messages) == int(warned)
    if warned:
        assert messages[0].startswith("`jit_compile=True` on a CPU")


def test_the_command_line_prints_a_slow_path_in_one_line_with_flags(capsys):
    from keras_cvae.cli.common import one_line_warnings
    from keras_cvae.cli.train import parser

    passed = []
    show = one_line_warnings("train.py", parser(), lambda *args: passed.append(args))
    show(SlowPathWarning("`mixed_precision=True` is slow here; drop `mixed_precision`"), SlowPathWarning, "f.py", 1)
    show(UserWarning("other"), UserWarning, "f.py", 2)
    assert capsys.readouterr().err == "train.py: warning: --mixed-precision is slow here; drop --mixed-precision\n"
    assert len(passed) == 1
