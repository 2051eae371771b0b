"""A GGUF file's header — metadata and tensor table — read straight from a memory map, with the
``gguf`` package's own constants (value types, quantisation block sizes) but not its
:class:`gguf.GGUFReader`.

Why not the reader: it keeps two numpy views per string of every metadata array, so the ~49k
tokens and ~49k merges of a BPE vocabulary become ~200k small arrays (~160 MB of Python objects
for SmolLM2-135M) — the peak memory of loading a small model. Here each value is decoded once
into what ``ReaderField.contents()`` returns (str, int, float, bool, flat lists), and each
tensor is a numpy view of the mapped file as ``ReaderTensor.data`` is (same dtype and shape).

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, version u32, tensor count u64, key/value
count u64; key/value pairs (string key, u32 value type, value; a string is a u64 length and
UTF-8 bytes; an array is a u32 item type, a u64 count and the items); tensor infos (name, u32
dims count, u64 dims innermost first, u32 GGML type, u64 offset); tensor data from the next
multiple of ``general.alignment`` (default 32). Like the reader, nested arrays are flattened and
``GGUF.version`` / ``GGUF.tensor_count`` / ``GGUF.kv_count`` are listed with the metadata.

Owns :class:`RawTensor` and :func:`read_gguf_header`.
Imports: stdlib, numpy, ``gguf.constants``, ``gguf.quants``, :mod:`dhian.errors`.
"""

from __future__ import annotations

import dataclasses
import mmap
import struct
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType
from gguf.quants import quant_shape_to_byte_shape

from dhian.errors import DataError

__all__ = ["RawTensor", "read_gguf_header"]

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_ALIGNMENT = 32
# value type -> (struct format, numpy dtype) of the fixed-size scalars
_SCALARS: dict[int, tuple[str, str]] = {
    GGUFValueType.UINT8: ("<B", "<u1"),
    GGUFValueType.INT8: ("<b", "<i1"),
    GGUFValueType.UINT16: ("<H", "<u2"),
    GGUFValueType.INT16: ("<h", "<i2"),
    GGUFValueType.UINT32: ("<I", "<u4"),
    GGUFValueType.INT32: ("<i", "<i4"),
    GGUFValueType.FLOAT32: ("<f", "<f4"),
    GGUFValueType.BOOL: ("<?", "?"),
    GGUFValueType.UINT64: ("<Q", "<u8"),
    GGUFValueType.INT64: ("<q", "<i8"),
    GGUFValueType.FLOAT64: ("<d", "<f8"),
}
# unquantised GGML types -> numpy item type of their data (others: uint8 blocks)
_PLAIN = {
    GGMLQuantizationType.F16: np.float16,
    GGMLQuantizationType.F32: np.float32,
    GGMLQuantizationType.F64: np.float64,
    GGMLQuantizationType.I8: np.int8,
    GGMLQuantizationType.I16: np.int16,
    GGMLQuantizationType.I32: np.int32,
    GGMLQuantizationType.I64: np.int64,
}


@dataclasses.dataclass(frozen=True)
class RawTensor:
    """One tensor table entry: ``dims`` as stored (innermost first) and ``data``, a view of
    the mapped file (numpy dims outermost first; uint8 blocks (…, bytes per row) when
    quantised)."""

    name: str
    qtype: GGMLQuantizationType
    dims: tuple[int, ...]
    data: np.ndarray


class _Cursor:
    """Sequential little-endian reads from the mapped header."""

    def __init__(self, buf: mmap.mmap, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise DataError(f"GGUF {str(self.path)!r} ends inside its header (offset {self.pos})")
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.pos + n > len(self.buf):
            raise DataError(f"GGUF {str(self.path)!r} ends inside its header (offset {self.pos})")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return str(raw, "utf-8")

    def value(self, vtype: int) -> Any:
        """One value of type ``vtype`` as ``ReaderField.contents()`` gives it."""
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            return self.array()
        if vtype not in _SCALARS:
            raise DataError(f"GGUF {str(self.path)!r}: unknown value type {vtype} at {self.pos}")
        return self.unpack(_SCALARS[vtype][0])

    def array(self) -> list[Any]:
        """An array's items (nested arrays flattened, as the reader does)."""
        itype, count = self.unpack("<I"), self.unpack("<Q")
        if itype in _SCALARS:  # one numpy read of the whole run
            dtype = np.dtype(_SCALARS[itype][1])
            if self.pos + dtype.itemsize * count > len(self.buf):
                raise DataError(f"GGUF {str(self.path)!r} ends inside its header ({self.pos})")
            items = np.frombuffer(self.buf, dtype, count, self.pos).tolist()
            self.pos += dtype.itemsize * count
            return items
        out: list[Any] = []
        for _ in range(count):
            item = self.value(itype)
            if itype == GGUFValueType.ARRAY:
                out.extend(item)
            else:
                out.append(item)
        return out


def read_gguf_header(path: str | Path) -> tuple[dict[str, Any], list[RawTensor]]:
    """``(metadata, tensors)`` of the GGUF file ``path``: key → value in file order, and the
    tensor table in file order with each tensor's data mapped (read-only, not copied)."""
    p = Path(path)
    with p.open("rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # an empty file
            raise DataError(f"cannot read {str(p)!r} as GGUF ({exc})") from exc
    cur = _Cursor(buf, p)
    if buf[:4] != _MAGIC:
        raise DataError(f"{str(p)!r} is not a GGUF file (magic {buf[:4]!r}, expected b'GGUF')")
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in _VERSIONS:
        raise DataError(
            f"GGUF {str(p)!r} has version {version}; readable versions: {_VERSIONS} (little-endian)"
        )
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    metadata: dict[str, Any] = {
        "GGUF.version": version,
        "GGUF.tensor_count": n_tensors,
        "GGUF.kv_count": n_kv,
    }
    for _ in range(n_kv):
        key = cur.string()
        if key in metadata:
            raise DataError(f"GGUF {str(p)!r}: metadata key {key!r} appears twice")
        metadata[key] = cur.value(cur.unpack("<I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        dims = tuple(cur.unpack("<Q") for _ in range(cur.unpack("<I")))
        infos.append((name, GGMLQuantizationType(cur.unpack("<I")), dims, cur.unpack("<Q")))
    align = int(metadata.get("general.alignment", _ALIGNMENT))
    if align <= 0 or align & (align - 1):
        raise DataError(f"GGUF {str(p)!r}: general.alignment {align} is not a power of two")
    start = -(-cur.pos // align) * align
    tensors = []
    for name, qtype, dims, offset in infos:
        shape = tuple(reversed(dims))  # outermost first
        n = int(np.prod(dims))
        if qtype in _PLAIN:
            dtype, count = np.dtype(_PLAIN[qtype]), n
        else:
            block, size = GGML_QUANT_SIZES[qtype]
            dtype, count = np.dtype(np.uint8), n * size // block
            shape = quant_shape_to_byte_shape(shape, qtype)
        if start + offset + count * dtype.itemsize > len(buf):
            raise DataError(f"GGUF {str(p)!r}: tensor {name!r} lies past the end of the file")
        data = np.frombuffer(buf, dtype, count, start + offset).reshape(shape)
        tensors.append(RawTensor(name, qtype, dims, data))
    return metadata, tensors
