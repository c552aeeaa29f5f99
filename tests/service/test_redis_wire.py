"""The wire format of the Redis engine: exact round trips, and nothing but numbers accepted."""

import json
import pickle
import struct

import numpy as np
import pytest

from service.engine import wire


def test_arrays_and_meta_round_trip_exactly():
    rng = np.random.default_rng(0)
    arrays = {"video": rng.random((2, 8, 3, 4, 4), dtype=np.float32),
              "pixels": rng.integers(0, 256, (5, 3), dtype=np.uint8),
              "empty": np.zeros((0, 7), np.float32)}
    meta, back = wire.unpack(wire.pack(arrays, {"status": "ok"}))
    assert meta == {"status": "ok"} and back.keys() == arrays.keys()
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype
        np.testing.assert_array_equal(back[name], array)
    # a transposed (non-contiguous) array is sent in C order
    _, back = wire.unpack(wire.pack({"t": arrays["pixels"].T}))
    np.testing.assert_array_equal(back["t"], arrays["pixels"].T)


def test_hostile_or_broken_messages_are_refused():
    good = wire.pack({"x": np.ones((2, 3), np.float32)})
    with pytest.raises(wire.WireError, match="cannot be sent"):
        wire.pack({"x": np.array([object()])})
    bad = [
        pickle.dumps({"x": np.ones(3)}),  # a pickle is never unpickled
        good[:-4],  # truncated
        good + b"\0",  # trailing bytes
        b"\x02\x00",  # shorter than the length prefix
    ]
    for message in bad:
        with pytest.raises(wire.WireError):
            wire.unpack(message)
    for spec, error in [({"name": "x", "dtype": "|O", "shape": [1]}, "refused dtype"),
                        ({"name": "x", "dtype": "<f4", "shape": [-1]}, "refused dtype"),
                        ({"name": "x", "dtype": "<f4", "shape": [10**6]}, "bytes announced")]:
        header = json.dumps({"meta": {}, "arrays": [spec]}).encode()
        with pytest.raises(wire.WireError, match=error):
            wire.unpack(struct.pack("<I", len(header)) + header + b"\0" * 8)
