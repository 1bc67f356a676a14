"""What a GGUF model file says about itself: architecture, name, context length, parameters,
quantisation. Read from the file's header only (its metadata and tensor table, never the
weights), with every count and length bounded, so a damaged or hostile file gives None, not a
hang or a crash. The probe reports it (``workers.probe``); the coordinator lists the models its
nodes serve from it (``app.catalog``), as claims.

GGUF (llama.cpp's format): ``GGUF``, a version, the tensor count and the metadata count (64-bit
in versions 2 and 3), then the metadata as (key, type, value) and the tensors as (name,
dimensions, type, offset), all little-endian.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"
VERSIONS = (2, 3)
#: Bounds on what a header may hold: beyond them the file is taken as unreadable.
MAX_ENTRIES = 100_000
MAX_STRING_BYTES = 1 << 20
MAX_ARRAY_ITEMS = 10_000_000
MAX_DIMENSIONS = 4
MAX_HEADER_BYTES = 256 << 20

# Value types, and the size of the fixed-size ones.
_STRING, _ARRAY = 8, 9
_FIXED = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}

#: llama.cpp's ``general.file_type`` values: how the file's weights are mostly stored.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
}
#: ggml's tensor types, to name the quantisation of a file that does not say its file type.
TENSOR_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    6: "Q5_0",
    7: "Q5_1",
    8: "Q8_0",
    10: "Q2_K",
    11: "Q3_K",
    12: "Q4_K",
    13: "Q5_K",
    14: "Q6_K",
    15: "Q8_K",
    30: "BF16",
}


class Unreadable(ValueError):
    """Not a GGUF header this reader can read within its bounds."""


class _Reader:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle

    def take(self, size: int) -> bytes:
        data = self.handle.read(size)
        if len(data) != size:
            raise Unreadable("the file ends inside its header")
        if self.handle.tell() > MAX_HEADER_BYTES:
            raise Unreadable(f"a header over {MAX_HEADER_BYTES} bytes")
        return data

    def fixed(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, limit: int) -> int:
        value = self.fixed("<Q")
        if value > limit:
            raise Unreadable(f"a count of {value}, over {limit}")
        return value

    def string(self) -> str:
        return self.take(self.count(MAX_STRING_BYTES)).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        size = self.count(MAX_STRING_BYTES)
        self.handle.seek(size, 1)

    def value(self, kind: int) -> Any:
        """A metadata value; arrays are skipped (None): nothing read here is an array."""
        if kind in _FIXED:
            return self.fixed(_FIXED[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind = self.fixed("<I")
            items = self.count(MAX_ARRAY_ITEMS)
            if item_kind in _FIXED:
                self.handle.seek(items * struct.calcsize(_FIXED[item_kind]), 1)
            elif item_kind == _STRING:
                for _ in range(items):
                    self.skip_string()
            else:
                raise Unreadable(f"an array of type {item_kind}")
            if self.handle.tell() > MAX_HEADER_BYTES:
                raise Unreadable(f"a header over {MAX_HEADER_BYTES} bytes")
            return None
        raise Unreadable(f"unknown value type {kind}")


def read(path: Path) -> dict[str, Any]:
    """The header's facts, or ``Unreadable``: ``architecture``, ``name``, ``context_length``,
    ``parameters`` (the tensors' elements, summed) and ``quantisation``; a fact the file does
    not hold is None."""
    try:
        with Path(path).open("rb") as handle:
            return _read(_Reader(handle))
    except (OSError, struct.error, OverflowError) as exc:
        raise Unreadable(f"{type(exc).__name__}: {exc}") from None


def _read(reader: _Reader) -> dict[str, Any]:
    if reader.take(4) != MAGIC:
        raise Unreadable("not a GGUF file")
    version = reader.fixed("<I")
    if version not in VERSIONS:
        raise Unreadable(f"GGUF version {version}")
    tensors = reader.count(MAX_ENTRIES)
    entries = reader.count(MAX_ENTRIES)
    meta: dict[str, Any] = {}
    for _ in range(entries):
        key = reader.string()
        value = reader.value(reader.fixed("<I"))
        if value is not None:
            meta[key] = value
    parameters = 0
    by_type: Counter[int] = Counter()
    for _ in range(tensors):
        reader.skip_string()
        dimensions = reader.fixed("<I")
        if dimensions > MAX_DIMENSIONS:
            raise Unreadable(f"a tensor of {dimensions} dimensions")
        elements = 1
        for _ in range(dimensions):
            elements *= reader.fixed("<Q")
        kind = reader.fixed("<I")
        reader.fixed("<Q")  # its offset in the data
        parameters += elements
        by_type[kind] += elements
    architecture = meta.get("general.architecture")
    architecture = architecture if isinstance(architecture, str) else None
    context = meta.get(f"{architecture}.context_length") if architecture else None
    file_type = meta.get("general.file_type")
    quantisation = FILE_TYPES.get(file_type) if isinstance(file_type, int) else None
    if quantisation is None and by_type:
        # The type most of the weights are stored in.
        quantisation = TENSOR_TYPES.get(by_type.most_common(1)[0][0])
    name = meta.get("general.name")
    return {
        "architecture": architecture,
        "name": name if isinstance(name, str) else None,
        "context_length": context if isinstance(context, int) and not isinstance(context, bool) else None,
        "parameters": parameters or None,
        "quantisation": quantisation,
    }


def describe(path: Path) -> dict[str, Any]:
    """``read``'s facts, or all None when the file is not a readable GGUF header."""
    try:
        return read(path)
    except Unreadable:
        return dict.fromkeys(("architecture", "name", "context_length", "parameters", "quantisation"))
