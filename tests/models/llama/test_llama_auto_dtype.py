"""``--dtype auto`` for LLaMA files: a GGUF file whose projections are all 4-bit blocks becomes
int4-fp32 (its own weights, float32 math) on a CPU where dhian's kernels run, and fp32 when
the kernels do not run, on another device or when one projection is not 4-bit; load_model
builds what auto chose (and an explicit dtype is unchanged)."""

from __future__ import annotations

import dataclasses

import gguf
import pytest

from dhian.inference.load import load_model
from dhian.interop import gguf_quant
from dhian.interop.gguf import read_gguf
from dhian.models.precision import model_precision
from dhian.nn import cpu_kernels
from helpers.smollm2 import smollm2_path


def test_auto_is_int4_fp32_only_where_it_is_exact_and_fast(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = smollm2_path()
    monkeypatch.setattr(cpu_kernels, "kernel_available", lambda: True)
    assert gguf_quant.auto_precision(path) == "int4-fp32"
    assert gguf_quant.auto_precision("smollm2") == "int4-fp32"
    assert gguf_quant.auto_precision(path, "cuda") == "fp32"
    file = read_gguf(path)
    name = "blk.7.ffn_down.weight"
    file.tensors[name] = dataclasses.replace(
        file.tensors[name], qtype=gguf.GGMLQuantizationType.F16
    )
    monkeypatch.setattr(gguf_quant, "read_gguf", lambda p: file)
    assert gguf_quant.auto_precision(path) == "fp32"  # one projection not in 4-bit blocks
    monkeypatch.undo()
    monkeypatch.setattr(cpu_kernels, "kernel_available", lambda: False)
    assert gguf_quant.auto_precision(path) == "fp32"


def test_load_model_builds_what_auto_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gguf_quant, "auto_precision", lambda source, device: "int4-fp32")
    assert model_precision(load_model("smollm2", dtype="auto").model) == "int4-fp32"
    monkeypatch.setattr(gguf_quant, "auto_precision", lambda source, device: "fp32")
    assert model_precision(load_model(smollm2_path(), dtype="auto").model) == "fp32"
    assert model_precision(load_model("smollm2", dtype="bf16").model) == "bf16"
