"""dhian's GGUF header reader gives what ``gguf.GGUFReader`` gives: every metadata value
(``ReaderField.contents()``) and every tensor's type, dims and mapped data — on a file written
by ``gguf.GGUFWriter`` with every value type and on the built-in SmolLM2 file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from dhian.errors import DataError  # noqa: E402
from dhian.interop.gguf import read_gguf  # noqa: E402
from dhian.interop.gguf_header import read_gguf_header  # noqa: E402


def _reader_view(path: Path) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    reader = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in reader.fields.items()}
    tensors = [
        (t.name, t.tensor_type, tuple(int(n) for n in t.shape), t.data) for t in reader.tensors
    ]
    return meta, tensors


def _write(path: Path) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 250)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -300)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 0.1)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.strs", ["a", "", "ünï", "Ġthe"])
    w.add_array("t.ints", [1, -2, 3])
    w.add_array("t.floats", [0.5, -1.25])
    w.add_custom_alignment(64)
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((3, 5)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 4)).astype(np.float16))
    q8 = gguf.quants.quantize(
        rng.standard_normal((4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0
    )
    w.add_tensor("q8", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _same(path: Path) -> None:
    meta, tensors = read_gguf_header(path)
    want_meta, want_tensors = _reader_view(path)
    assert meta == want_meta
    assert list(meta) == list(want_meta)  # file order
    assert len(tensors) == len(want_tensors)
    for t, (name, qtype, dims, data) in zip(tensors, want_tensors, strict=True):
        assert (t.name, t.qtype, t.dims) == (name, qtype, dims)
        assert t.data.dtype == data.dtype and t.data.shape == data.shape
        assert np.array_equal(t.data, data)


def test_every_value_type_matches_gguf_reader(tmp_path: Path) -> None:
    path = tmp_path / "all.gguf"
    _write(path)
    _same(path)
    meta, _ = read_gguf_header(path)
    assert meta["t.strs"] == ["a", "", "ünï", "Ġthe"] and meta["general.alignment"] == 64


def test_bad_files_are_one_line_data_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + bytes(60))
    with pytest.raises(DataError, match="not a GGUF file"):
        read_gguf(bad)
    path = tmp_path / "cut.gguf"
    _write(path)
    cut = tmp_path / "cut2.gguf"
    cut.write_bytes(path.read_bytes()[:100])  # ends inside the metadata
    with pytest.raises(DataError, match=r"cut2\.gguf"):
        read_gguf(cut)


def test_smollm2_header_matches_gguf_reader() -> None:
    from helpers.smollm2 import smollm2_path

    _same(smollm2_path())
