"""`tensorstore bench --suite serving`: processes sharing the cache take one copy between them."""

import numpy as np

import tensorstore as ts
from tensorstore.bench import serving
from tensorstore.formats import write_safetensors


def test_two_processes_serving_one_model_take_one_copy(tmp_path):
    rng = np.random.default_rng(0)
    base = {f"w{i}": rng.standard_normal(1 << 21).astype(np.float32) for i in range(4)}  # 32 MiB
    tuned = dict(base, w3=base["w3"] + 1)
    files = {}
    with ts.open(tmp_path / "store", "w") as s:
        for name, tensors in (("base", base), ("tuned", tuned)):
            s.add_model(name, tensors)
            files[name] = tmp_path / f"{name}.safetensors"
            write_safetensors(files[name], tensors)
    rows = {r["scenario"]: r for r in serving.memory(tmp_path / "store", files, 2)}
    assert set(rows) == set(serving.SCENARIOS)
    same = rows["same-fine-tune"]
    shared = same["shared"]["pss_sum"] - same["idle_shared_pss_sum"]
    plain = same["safetensors"]["pss_sum"] - same["idle_safetensors_pss_sum"]
    model = sum(a.nbytes for a in tuned.values())
    assert same["distinct_bytes"] == model
    assert plain > 1.8 * model  # each process its own copy
    assert shared < 1.2 * model  # one copy between them
    assert len(same["shared"]["load_seconds"]) == 2
