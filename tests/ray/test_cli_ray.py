"""`tensorstore add --ray` and `tensorstore dedup --ray`: the same store as without; Ray
stays optional (never imported by `import tensorstore`; a one-line error when missing)."""

import json
import subprocess
import sys

import numpy as np
from safetensors.numpy import save_file

import tensorstore as ts
from tensorstore.cli import main
from tensorstore.corpora import digits


def write_family(tmp_path):
    """A base, two fine-tunes (every weight moved a little: stored as deltas) and a model
    directory with its config: several files of 4 KiB blocks."""
    rng = np.random.default_rng(3)
    base = {"w": rng.standard_normal((512, 96)).astype(np.float32), "h": rng.standard_normal((96, 10)).astype(np.float16)}
    out = [tmp_path / "base.safetensors"]
    save_file(base, str(out[0]))
    for i in range(2):
        tuned = {k: (v + (1e-3 * rng.standard_normal(v.shape)).astype(v.dtype)).astype(v.dtype) for k, v in base.items()}
        out.append(tmp_path / f"tuned{i}.safetensors")
        save_file(tuned, str(out[-1]))
    model_dir = tmp_path / "dir-model"
    model_dir.mkdir()
    save_file(dict(base, extra=rng.integers(0, 9, (64, 64), dtype=np.int32)), str(model_dir / "model.safetensors"))
    (model_dir / "config.json").write_text('{"hidden": 96}')
    out.append(model_dir)
    return out


def store_bytes(path):
    """Everything a store holds, byte for byte: its pages, and its catalog without times."""
    with ts.open(path, "r") as s:
        with s.env.read() as txn:
            pages = {i: bytes(s.page_file.read(txn, i)) for i in s.page_file.ids(txn)}
        cat = s.catalog()
        tables = {k: cat[k].to_pylist() for k in ("tensors", "blocks", "pages", "distinct_blocks")}
        stats = s.stats().to_dict()
        files = {n: s.load_files(n) for n in s}
    stats.pop("file_bytes", None)
    return pages, tables, stats, files


def test_add_on_ray_stores_what_a_serial_add_stores(tmp_path, ray_cluster, capsys):
    files = write_family(tmp_path)
    args = ["--block-bytes", "4KiB", "--page-size", "64KiB", "--json"]
    assert main(["add", str(tmp_path / "serial"), *map(str, files), *args]) == 0
    serial_out = json.loads(capsys.readouterr().out)
    assert main(["add", str(tmp_path / "ray"), *map(str, files), *args, "--ray"]) == 0
    ray_out = json.loads(capsys.readouterr().out)
    assert ray_out == serial_out
    serial, on_ray = store_bytes(tmp_path / "serial"), store_bytes(tmp_path / "ray")
    assert serial == on_ray
    encodings = {b["encoding"] for b in serial[1]["distinct_blocks"]}
    assert {"delta", "packed"} <= encodings  # the workers chose real encodings
    assert serial[3]["dir-model"] == {"config.json": b'{"hidden": 96}'}


def test_dedup_on_ray_from_the_command_line_changes_what_the_serial_pass_changes(tmp_path, ray_cluster, capsys):
    family = digits.build_family()
    for tag in ("serial", "ray"):
        with ts.open(tmp_path / tag, "w", page_size="256KiB", block_bytes="16KiB", codec="raw") as s:
            for n, t in family.items():
                s.add_model(n, t)
    reports = []
    for tag, extra in (("serial", []), ("ray", ["--ray"])):
        assert main(["dedup", str(tmp_path / tag), "--evaluator", "tensorstore.corpora.digits:evaluate",
                     "--tolerance", "0.05", "--max-accuracy-drop", "0.01", "--json", *extra]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1]
    assert reports[0]["bytes_saved"] > 0
    assert store_bytes(tmp_path / "serial")[0] == store_bytes(tmp_path / "ray")[0]


def test_importing_tensorstore_does_not_import_ray():
    code = "import sys, tensorstore, tensorstore.cli, tensorstore.executor; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_ray_flag_without_ray_installed_is_one_line_and_touches_nothing(tmp_path):
    files = write_family(tmp_path)
    assert main(["add", str(tmp_path / "s"), *map(str, files[:2])]) == 0
    before = store_bytes(tmp_path / "s")
    # `import ray` fails in this child as it would without the package.
    code = ("import sys; sys.modules['ray'] = None; from tensorstore.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    for argv in (["add", str(tmp_path / "new"), str(files[0]), "--ray"],
                 ["add", str(tmp_path / "s"), str(files[2]), "--ray"],
                 ["dedup", str(tmp_path / "s"), "--evaluator", "tensorstore.corpora.digits:evaluate", "--ray"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert out.returncode == 1
        assert out.stderr.strip().count("\n") == 0
        assert "pip install 'tensorstore-dedup[ray]'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "new").exists()
    assert store_bytes(tmp_path / "s") == before


def test_blocks_are_encoded_by_the_executor_within_encoding_on(tmp_path):
    from tensorstore.executor import SerialExecutor, encoding_on

    class Counting(SerialExecutor):
        workers = 2

        def __init__(self):
            self.jobs = 0

        def submit(self, fn, /, *args, **kwargs):
            self.jobs += len(args[0])
            return super().submit(fn, *args, **kwargs)

    rng = np.random.default_rng(4)
    base = {"w": rng.standard_normal((256, 64)).astype(np.float32)}
    tuned = {"w": base["w"] + (1e-3 * rng.standard_normal((256, 64))).astype(np.float32)}
    stored = []
    for tag, executor in (("here", None), ("elsewhere", Counting())):
        with ts.open(tmp_path / tag, "w", block_bytes="4KiB", page_size="64KiB") as s:
            if executor is None:
                s.add_model("base", base)
                s.add_model("tuned", tuned)
            else:
                with encoding_on(executor):
                    s.add_model("base", base)
                    s.add_model("tuned", tuned)
                assert executor.jobs == 32  # every new block: 16 of the base, 16 deltas of the fine-tune
        stored.append(store_bytes(tmp_path / tag))
    assert stored[0] == stored[1]


def test_ray_address_where_no_cluster_answers_is_one_line_and_touches_nothing(tmp_path):
    from remote_support import free_port

    files = write_family(tmp_path)
    assert main(["add", str(tmp_path / "s"), *map(str, files[:2])]) == 0
    before = store_bytes(tmp_path / "s")
    port = free_port()  # bound and released: nothing listens there
    for address, says in ((f"127.0.0.1:{port}", f"nothing answers at 127.0.0.1:{port}"),
                          (f"ray://127.0.0.1:{port}", f"nothing answers at 127.0.0.1:{port}"),
                          ("127.0.0.1:notaport", "is not HOST:PORT")):
        for argv in (["dedup", str(tmp_path / "s"), "--evaluator", "tensorstore.corpora.digits:evaluate", "--ray", address],
                     ["add", str(tmp_path / "s"), str(files[2]), "--ray", address]):
            # Its own process: a Ray already initialised here would be used whatever the address.
            # Without the probe Ray retries for over two minutes; the timeout bounds a hang.
            out = subprocess.run([sys.executable, "-m", "tensorstore", *argv], capture_output=True, text=True, timeout=90)
            assert out.returncode == 1, out.stderr
            assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
            assert says in out.stderr and repr(address) in out.stderr
    assert store_bytes(tmp_path / "s") == before
