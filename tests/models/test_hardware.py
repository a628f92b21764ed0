"""Device, dtype and attention selection pick what the machine has and never crash without a GPU."""

from __future__ import annotations

import pytest
import torch

from pagelens.errors import ModelLoadError
from pagelens.models import hardware


class _FlashCapable:
    _supports_flash_attn = True
    _supports_sdpa = True


class _EagerOnly:
    _supports_flash_attn = False
    _supports_sdpa = False


def test_auto_device_is_cpu_without_accelerators(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert hardware.resolve_device("auto").type == "cpu"
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        hardware.resolve_device("cuda")


def test_cpu_dtype_follows_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert hardware.resolve_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: False)
    assert hardware.resolve_dtype("auto", cpu) == torch.float32
    assert hardware.resolve_dtype("float16", cpu) == torch.float16
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        hardware.resolve_dtype("int3", cpu)


def test_cuda_dtype_is_bf16_where_supported(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert hardware.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert hardware.resolve_dtype("auto", torch.device("cuda")) == torch.float16


def test_this_machine_reports_its_bf16_capability_from_cpu_flags():
    flags = hardware.cpu_flags()
    assert hardware.cpu_has_native_bf16() == bool(flags & {"amx_bf16", "avx512_bf16"})


def test_attention_prefers_flash_on_cuda_only_when_installed(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    monkeypatch.setattr(hardware, "flash_attention_available", lambda: True)
    assert hardware.attention_candidates("auto", cuda, torch.bfloat16, _FlashCapable) == [
        "flash_attention_2",
        "sdpa",
        "eager",
    ]
    assert hardware.attention_candidates("auto", cuda, torch.float32, _FlashCapable)[0] == "sdpa"
    assert hardware.attention_candidates("auto", cpu, torch.bfloat16, _FlashCapable) == ["cpu_blocked", "sdpa", "eager"]
    assert hardware.attention_candidates("auto", cpu, torch.float32, _FlashCapable) == ["sdpa", "eager"]
    monkeypatch.setattr(hardware, "flash_attention_available", lambda: False)
    assert hardware.attention_candidates("auto", cuda, torch.bfloat16, _FlashCapable)[0] == "sdpa"
    assert hardware.attention_candidates("auto", cpu, torch.float32, _EagerOnly) == ["eager"]
    assert hardware.attention_candidates("eager", cuda, torch.bfloat16, _FlashCapable) == ["eager"]
    with pytest.raises(ModelLoadError, match="unknown attention"):
        hardware.attention_candidates("xformers", cpu, torch.float32, _FlashCapable)


def test_cpu_threads_are_the_given_number_and_never_read_from_the_environment(monkeypatch):
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    try:
        for name in ("PAGELENS_CPU_THREADS", "PAGELENS_THREADS", "CPU_THREADS"):
            monkeypatch.setenv(name, str(other))
        hardware.configure_cpu_threads(None)
        assert torch.get_num_threads() == before, "None keeps torch's default; Settings reads the variables"
        hardware.configure_cpu_threads(other)
        assert torch.get_num_threads() == other
        with pytest.raises(ModelLoadError):
            hardware.configure_cpu_threads(0)
    finally:
        torch.set_num_threads(before)
