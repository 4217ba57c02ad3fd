"""PyTorch state_dicts in and out of the store: every dtype both keep, bit-exact."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[test]' installs the CPU build)")

import tensorstore as ts  # noqa: E402
from tensorstore.torch import load_model, load_tensor, to_numpy, to_torch  # noqa: E402

DTYPES = [
    torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2, torch.float16, torch.float32, torch.float64,
    torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint16, torch.uint32, torch.uint64,
]
GRAD = {torch.bfloat16, torch.float16, torch.float32, torch.float64}


def random_tensor(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Random bits of ``dtype`` (NaNs and infinities included), not values drawn by torch."""
    n = int(np.prod(shape, dtype=np.int64))
    size = torch.empty(0, dtype=dtype).element_size()
    raw = np.random.default_rng(seed).integers(0, 256, n * size, dtype=np.uint8)
    if dtype == torch.bool:
        raw %= 2
    same_width = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}[size]
    return torch.from_numpy(raw.view(same_width)).view(dtype).reshape(shape)


def bits(t: torch.Tensor) -> bytes:
    t = t.detach().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


@pytest.fixture
def store(tmp_path):
    with ts.open(tmp_path / "s", "w", page_size="64KiB", block_bytes="4KiB") as s:
        yield s


@settings(max_examples=60)
@given(
    dtypes=st.lists(st.sampled_from(DTYPES), min_size=1, max_size=4),
    shape=array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=40),
    seed=st.integers(0, 2**32 - 1),
    transpose=st.booleans(),
    grad=st.booleans(),
)
def test_state_dict_round_trips_bit_exact(tmp_path_factory, dtypes, shape, seed, transpose, grad):
    state = {}
    for i, dtype in enumerate(dtypes):
        t = random_tensor(dtype, shape, seed + i)
        if transpose and t.dim() >= 2:
            t = t.transpose(0, 1)  # non-contiguous
        if grad and dtype in GRAD:
            t = t.clone().requires_grad_(True)
        state[f"layer.{i}.{str(dtype).split('.')[-1]}"] = t
    with ts.open(tmp_path_factory.mktemp("s") / "s", "w", page_size="64KiB", block_bytes="4KiB") as store:
        store.add_model("m", state)
        back = load_model(store, "m")
        one = load_tensor(store, "m", next(iter(state)))
    assert list(back) == list(state)
    for k, t in state.items():
        assert back[k].dtype == t.dtype and back[k].shape == t.shape, k
        assert bits(back[k]) == bits(t), k
        assert not back[k].requires_grad and back[k].device.type == "cpu"
    first = next(iter(state))
    assert one.dtype == state[first].dtype and bits(one) == bits(state[first])


def test_a_bf16_module_state_dict_loads_back_into_a_module(store):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).to(torch.bfloat16)
    store.add_model("mlp", model.state_dict())
    fresh = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4)).to(torch.bfloat16)
    fresh.load_state_dict(load_model(store, "mlp"))
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    assert torch.equal(model(x), fresh(x))
    assert store.model_info("mlp").tensor("0.weight").dtype == "BF16"


def test_fp8_nan_payloads_and_the_numpy_side(store):
    raw = torch.arange(256, dtype=torch.int32).to(torch.uint8)  # every fp8 bit pattern, NaNs included
    state = {"e4m3": raw.view(torch.float8_e4m3fn), "e5m2": raw.view(torch.float8_e5m2)}
    store.add_model("fp8", state)
    arrays = store.load_model("fp8")
    assert str(arrays["e4m3"].dtype) == "float8_e4m3fn" and str(arrays["e5m2"].dtype) == "float8_e5m2"
    assert arrays["e4m3"].view(np.uint8).tolist() == list(range(256))
    assert [store.model_info("fp8").tensor(n).dtype for n in state] == ["F8_E4M3", "F8_E5M2"]


def test_a_meta_tensor_is_refused_naming_it(store):
    # The meta device holds no data; every other device is copied to host (.cpu()).
    with pytest.raises(ts.InvalidTensorError, match="'w'.*meta"):
        store.add_model("m", {"w": torch.empty(3, device="meta")})
    assert "m" not in store


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz])
def test_dtypes_the_store_does_not_keep_are_refused_and_the_store_is_unchanged(store, dtype):
    store.add_model("keep", {"w": torch.ones(3)})
    with pytest.raises(ts.InvalidTensorError, match=rf"'bad'.*{str(dtype)}"):
        store.add_model("new", {"ok": torch.ones(3), "bad": torch.zeros(3, dtype=dtype)})
    assert list(store) == ["keep"]


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
def test_sparse_and_quantized_tensors_are_refused(store):
    with pytest.raises(ts.InvalidTensorError, match="to_dense"):
        store.add_model("m", {"s": torch.eye(3).to_sparse()})
    q = torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8)
    with pytest.raises(ts.InvalidTensorError, match="int_repr"):
        store.add_model("m", {"q": q})
    assert len(store) == 0


def test_store_loads_share_a_private_writable_copy(store):
    store.add_model("m", {"w": torch.arange(10, dtype=torch.float32)})
    t = load_model(store, "m")["w"]
    t += 1  # writable, and private: the store keeps what was added
    assert torch.equal(load_model(store, "m")["w"], torch.arange(10, dtype=torch.float32))


def test_reader_views_are_copied_unless_shared_read_only(tmp_path):
    store = ts.open(tmp_path / "raw", "w", page_size="64KiB", block_bytes="4KiB", codec="raw")  # blocks as they are
    store.add_model("m", {"w": torch.arange(100, dtype=torch.bfloat16)})
    with store.reader() as r:
        view = r.load_tensor("m", "w")
        assert r.is_view(view) and not view.flags.writeable
        address = view.__array_interface__["data"][0]
        copied = load_tensor(r, "m", "w")
        shared = load_tensor(r, "m", "w", share_readonly=True)
        assert copied.data_ptr() != address
        assert shared.data_ptr() == address  # the store's memory map itself, no copy
        assert bits(shared) == bits(copied) == bits(torch.arange(100, dtype=torch.bfloat16))
        del view, shared
    store.close()


def test_device_other_than_cpu_moves_the_tensors(store):
    store.add_model("m", {"w": torch.ones(2, 2)})
    assert load_model(store, "m", device="meta")["w"].device.type == "meta"
    assert load_tensor(store, "m", "w", device=torch.device("cpu")).device.type == "cpu"


def test_to_numpy_and_to_torch_are_inverse_on_bits():
    t = random_tensor(torch.bfloat16, (7, 5), 3).t()
    a = to_numpy(t)
    assert str(a.dtype) == "bfloat16" and a.shape == (5, 7)
    assert bits(to_torch(np.ascontiguousarray(a))) == bits(t)


def test_importing_tensorstore_never_imports_torch(tmp_path):
    code = (
        "import sys, numpy as np, tensorstore as ts, tensorstore.cli\n"
        f"with ts.open({str(tmp_path / 's')!r}, 'w') as s:\n"
        "    s.add_model('m', {'w': np.ones(3, np.float32)}); s.load_model('m')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
