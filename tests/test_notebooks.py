"""The notebooks in notebooks/ are committed executed, and their outputs are what the
current code and the current cells produce.

A notebook opened on a code host shows its stored outputs; these tests re-execute each
notebook and fail when a code cell has no stored output, when a cell was edited after its
outputs were stored, or when the fresh run's outputs differ in kind (stream, image, table)
or, where the notebook is deterministic, in text. Re-run them with
``.venv/bin/python notebooks/execute.py`` and commit the result.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
_spec = importlib.util.spec_from_file_location("notebook_execute", NOTEBOOKS / "execute.py")
execute_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute_module)


def _has_python3_kernel() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return "python3" in KernelSpecManager().find_kernel_specs()
    except Exception:  # no jupyter_client or no kernels: skip, do not fail
        return False


needs_kernel = pytest.mark.skipif(not _has_python3_kernel(), reason="no 'python3' Jupyter kernel installed")

# Notebooks whose printed text depends on timing (solver time limits, seconds): their text
# is compared line by line with numbers and solver statuses masked; the others exactly.
TIMED = {"packing.ipynb"}


def stored_problems(notebook) -> list[str]:
    """What is wrong with a notebook's stored outputs, without running it."""
    problems = []
    for i, cell in enumerate(c for c in notebook.cells if c.cell_type == "code"):
        recorded = cell.metadata.get(execute_module.KEY, {}).get("source_sha256")
        if not cell.outputs:
            problems.append(f"code cell {i} has no stored output")
        if recorded != execute_module.source_hash(cell):
            problems.append(f"code cell {i} was edited after its outputs were stored")
        if any(o.output_type == "error" for o in cell.outputs):
            problems.append(f"code cell {i} stored an error")
    return problems


# What a solver time limit may change between runs: numbers, the status, column padding.
_TIMED_NOISE = re.compile(r"\d+(\.\d+)?|\b(OPTIMAL|FEASIBLE|FALLBACK|INFEASIBLE|UNKNOWN|heuristic)\b")


def _mask(text: str) -> str:
    return "\n".join(" ".join(_TIMED_NOISE.sub("#", line).split()) for line in text.splitlines())


def _shape(output, mask_numbers: bool):
    if output.output_type == "stream":
        return ("stream", output.name, _mask(output.text) if mask_numbers else output.text)
    if output.output_type in ("display_data", "execute_result"):
        data = dict(output.data)
        text = data.get("text/plain", "")
        return (output.output_type, tuple(sorted(data)), "" if "image/png" in data or mask_numbers else text)
    return (output.output_type,)


def compare(stored, fresh, mask_numbers: bool) -> list[str]:
    """Differences between the stored and the freshly produced outputs, cell by cell."""
    old = [c for c in stored.cells if c.cell_type == "code"]
    new = [c for c in fresh.cells if c.cell_type == "code"]
    problems = []
    for i, (a, b) in enumerate(zip(old, new)):
        sa, sb = [_shape(o, mask_numbers) for o in a.outputs], [_shape(o, mask_numbers) for o in b.outputs]
        if sa != sb:
            problems.append(f"code cell {i}: stored outputs differ from what the current code produces")
    return problems


@needs_kernel
@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_stored_outputs_are_present_and_current(name):
    path = NOTEBOOKS / name
    stored = nbformat.read(path, as_version=4)
    assert not stored_problems(stored), stored_problems(stored)
    fresh = execute_module.execute(path)
    assert not compare(stored, fresh, name in TIMED), compare(stored, fresh, name in TIMED)


def test_the_check_fails_on_a_missing_output_and_on_an_edited_cell():
    notebook = nbformat.read(NOTEBOOKS / "caching.ipynb", as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert not stored_problems(notebook)
    code[1].outputs = []
    code[2].source += "\nprint('changed')"
    assert stored_problems(notebook) == [
        "code cell 1 has no stored output",
        "code cell 2 was edited after its outputs were stored",
    ]


def test_the_notebooks_show_plots_and_tables():
    for name, images in (("packing.ipynb", 3), ("caching.ipynb", 2)):
        notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
        assert sum(o.output_type == "display_data" and "image/png" in o.data for o in outputs) == images, name
    caching = nbformat.read(NOTEBOOKS / "caching.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in caching.cells if c.cell_type == "code" for o in c.outputs)
    assert "belady" in text and "restarts at requests" in text
