"""The notebooks in notebooks/ run top to bottom without an error and draw their plots."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _has_python3_kernel() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return "python3" in KernelSpecManager().find_kernel_specs()
    except Exception:  # no jupyter_client or no kernels: skip, do not fail
        return False


needs_kernel = pytest.mark.skipif(not _has_python3_kernel(), reason="no 'python3' Jupyter kernel installed")


def _execute(name: str) -> list:
    """Run a notebook; return every output of its code cells."""
    path = NOTEBOOKS / name
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return outputs


@needs_kernel
def test_packing_notebook():
    outputs = _execute("packing.ipynb")
    assert sum(o.output_type == "display_data" for o in outputs) >= 3  # the plots


@needs_kernel
def test_caching_notebook():
    outputs = _execute("caching.ipynb")
    assert sum(o.output_type == "display_data" and "image/png" in o.data for o in outputs) == 2
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "belady" in text and "restarts at requests" in text
