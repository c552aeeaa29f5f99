"""Arrays across process boundaries: a JSON header with dtype and shape, then the raw bytes.

Layout: 4-byte little-endian header length, the UTF-8 JSON header, then each array's bytes in
C order. Never pickle: a worker reads only numbers from what a client sent, and `np.frombuffer`
runs no code. Only the dtypes in DTYPES are accepted.
"""

from __future__ import annotations

import json
import struct
from math import prod

import numpy as np

DTYPES = ("<f4", "|u1", "<i8")  # float32 (the graphs), uint8 (pixels), int64
_LENGTH = struct.Struct("<I")
MAX_HEADER_BYTES = 64 * 1024


class WireError(ValueError):
    """Bytes that are not a packed message (truncated, a bad header, a refused dtype)."""


def pack(arrays: dict[str, np.ndarray], meta: dict | None = None) -> bytes:
    """arrays (any shapes, dtypes in DTYPES) and a JSON-able `meta` -> bytes."""
    specs, blobs = [], []
    for name, array in arrays.items():
        array = np.ascontiguousarray(array)
        if array.dtype.str not in DTYPES:
            raise WireError(f"{name}: dtype {array.dtype} cannot be sent (only {DTYPES})")
        specs.append({"name": name, "dtype": array.dtype.str, "shape": list(array.shape)})
        blobs.append(array.tobytes())
    header = json.dumps({"meta": meta or {}, "arrays": specs}).encode()
    return b"".join([_LENGTH.pack(len(header)), header, *blobs])


def unpack(data: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    """bytes from `pack` -> (meta, arrays); WireError when they are anything else."""
    if len(data) < _LENGTH.size:
        raise WireError("message shorter than its length prefix")
    (length,) = _LENGTH.unpack_from(data)
    if length > MAX_HEADER_BYTES or _LENGTH.size + length > len(data):
        raise WireError(f"header length {length} does not fit the message")
    try:
        header = json.loads(data[_LENGTH.size:_LENGTH.size + length])
        meta, specs = header["meta"], header["arrays"]
    except (ValueError, KeyError, TypeError) as error:
        raise WireError(f"unreadable header: {error}") from error
    arrays, offset = {}, _LENGTH.size + length
    for spec in specs:
        try:
            name, dtype, shape = str(spec["name"]), spec["dtype"], tuple(spec["shape"])
        except (KeyError, TypeError) as error:
            raise WireError(f"bad array spec {spec!r}") from error
        if dtype not in DTYPES or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise WireError(f"{name}: refused dtype {dtype!r} or shape {shape!r}")
        nbytes = prod(shape) * np.dtype(dtype).itemsize
        if offset + nbytes > len(data):
            raise WireError(f"{name}: {nbytes} bytes announced, {len(data) - offset} left")
        arrays[name] = np.frombuffer(data, dtype, prod(shape), offset).reshape(shape)
        offset += nbytes
    if offset != len(data):
        raise WireError(f"{len(data) - offset} bytes left over after the arrays")
    return meta, arrays
