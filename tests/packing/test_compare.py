"""`python -m tensorstore_packing.compare`: the comparison table and its JSON."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tensorstore_packing.compare import main


def test_json_has_one_row_per_algorithm_with_consistent_figures(capsys):
    assert main(["--blocks", "2000", "--json", "--time-limit", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["algorithm"]: r for r in report["results"]}
    assert set(rows) == {"baseline", "greedy-1", "greedy-2", "two-stage"}
    assert report["instance"]["blocks"] >= 2000
    for row in rows.values():
        assert row["pages"] >= row["pages_lower_bound"]
        assert row["page_ratio"] == pytest.approx(row["pages"] / row["pages_lower_bound"], abs=1e-4)
        assert row["mean_read_ratio"] >= 1.0
    assert rows["two-stage"]["pages"] <= rows["greedy-2"]["pages"]


def test_table_and_algorithm_filter(capsys):
    assert main(["--blocks", "2000", "--algorithm", "greedy-2", "--algorithm", "baseline"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split()[:3] == ["algorithm", "pages", "LB"]
    assert [line.split()[0] for line in out[2:]] == ["greedy-2", "baseline"]


def test_bad_usage_exits_2():
    done = subprocess.run(
        [sys.executable, "-m", "tensorstore_packing.compare", "--blocks", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--blocks must be positive" in done.stderr
