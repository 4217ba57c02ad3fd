"""zstd frames through the cffi binding: the same bytes as python-zstandard's C binding,
decompressed into place, and refused when they do not fill their place exactly."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from hypothesis import given, strategies as st

from tensorstore import zstdframes


def test_the_binding_that_lets_go_of_the_gil_is_in_use():
    # the package depends on cffi: falling back to the C binding would hold the GIL
    assert zstdframes.BACKEND == "cffi"


@given(st.binary(max_size=40000) | st.builds(lambda n: bytes(n), st.integers(0, 70000)))
def test_frames_are_python_zstandards_and_decompress_into_place(data):
    frame = zstdframes.compress(data)
    assert frame == zstdframes._zc().compress(data)
    out = np.full(len(data) + 8, 7, dtype=np.uint8)
    zstdframes.decompress_into(frame, out[4 : 4 + len(data)])
    assert out[4 : 4 + len(data)].tobytes() == data
    assert out[:4].tolist() == [7] * 4 and out[-4:].tolist() == [7] * 4  # nothing written past the place


def test_a_frame_that_does_not_fill_its_place_exactly_is_refused():
    frame = zstdframes.compress(b"abc" * 1000)
    for size in (2999, 3001):
        with pytest.raises(ValueError, match="bytes where|does not decompress"):
            zstdframes.decompress_into(frame, np.empty(size, dtype=np.uint8))
    with pytest.raises(ValueError, match="does not decompress"):
        zstdframes.decompress_into(frame[:-3], np.empty(3000, dtype=np.uint8))
    with pytest.raises(ValueError, match="does not decompress"):
        zstdframes.decompress_into(zstandard.ZstdCompressor().compress(b"abc" * 1000), np.empty(3000, dtype=np.uint8))


def test_without_cffi_the_c_binding_makes_and_reads_the_same_frames(monkeypatch):
    data = np.arange(20000, dtype=np.uint16).tobytes()
    frame = zstdframes.compress(data)
    monkeypatch.setattr(zstdframes, "_lib", None)
    assert zstdframes.compress(data) == frame
    out = np.empty(len(data), dtype=np.uint8)
    zstdframes.decompress_into(frame, out)
    assert out.tobytes() == data
    with pytest.raises(ValueError, match="bytes where|does not decompress"):
        zstdframes.decompress_into(frame, np.empty(len(data) + 1, dtype=np.uint8))
