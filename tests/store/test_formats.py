"""safetensors and npz import/export: faithful for good files, refused for bad ones."""

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

import tensorstore as ts
from tensorstore.formats import read_model_file, write_safetensors


def test_safetensors_round_trip_keeps_dtypes_and_metadata(tmp_path, store):
    tensors = {
        "w": np.arange(12, dtype=np.float32).reshape(3, 4),
        "bf": np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16),
        "mask": np.array([True, False]),
        "idx": np.arange(3, dtype=np.int64),
    }
    src = tmp_path / "m.safetensors"
    save_file(tensors, str(src), metadata={"format": "pt"})
    loaded, meta = read_model_file(src)
    store.add_model("m", loaded, meta)
    out = tmp_path / "out.safetensors"
    write_safetensors(out, store.load_model("m"), store.model_info("m").metadata)
    again, meta2 = read_model_file(out)
    assert meta2["safetensors_metadata"] == {"format": "pt"}
    for k, v in tensors.items():
        assert again[k].dtype == v.dtype and again[k].tobytes() == v.tobytes()


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, ok=np.zeros(3), bad=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ts.FileFormatError, match="pickled"):
        read_model_file(path)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\xff" * 8,
        b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\":1}",
        # header says the tensor runs past the end of the file
        (lambda h: len(h).to_bytes(8, "little") + h)(b'{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}') + b"\x00" * 16,
    ],
)
def test_corrupt_safetensors_files_are_refused(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(ts.FileFormatError, match="not a valid safetensors file"):
        read_model_file(path)


def test_corrupt_npz_and_unknown_suffix(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ts.FileFormatError, match="not a valid .npz"):
        read_model_file(tmp_path / "x.npz")
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(ts.FileFormatError, match="unknown file type"):
        read_model_file(tmp_path / "x.onnx")
    (tmp_path / "x.pt").write_bytes(b"")
    with pytest.raises(ts.FileFormatError, match="convert it to safetensors"):
        read_model_file(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        read_model_file(tmp_path / "missing.safetensors")
