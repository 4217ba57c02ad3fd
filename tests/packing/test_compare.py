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


def test_reads_bound_row_is_a_real_layout_within_the_page_target(capsys):
    args = ["--blocks", "300", "--models", "6", "--groups", "2", "--block-kib", "16", "--page-kib", "256",
            "--encoded", "--algorithm", "two-stage", "--time-limit", "1", "--reads-bound", "5", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    bound = report["instance"]["reads_bound"]
    rows = {r["algorithm"]: r for r in report["results"]}
    assert set(rows) == {"two-stage", "reads-bound"}
    lower = rows["two-stage"]["pages_lower_bound"]
    assert bound["max_pages"] == int(1.02 * lower + 1)
    assert rows["reads-bound"]["pages"] <= bound["max_pages"]
    # no layout within the target reads less than the bound, Two-Stage's included
    for row in rows.values():
        if row["pages"] <= bound["max_pages"]:
            assert row["mean_model_read_ratio"] >= bound["lower_bound"] - 1e-4
    assert bound["lower_bound"] <= bound["best"] + 1e-9


def test_reads_bound_needs_positive_seconds():
    done = subprocess.run(
        [sys.executable, "-m", "tensorstore_packing.compare", "--reads-bound", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--reads-bound must be a positive number of seconds" in done.stderr


def test_plan_time_must_not_be_negative():
    done = subprocess.run(
        [sys.executable, "-m", "tensorstore_packing.compare", "--plan-time", "-1"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert "--plan-time must be >= 0 seconds" in done.stderr
