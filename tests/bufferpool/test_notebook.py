"""notebooks/caching.ipynb runs top to bottom without an error and draws its plots."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "caching.ipynb"


def _has_python3_kernel() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return "python3" in KernelSpecManager().find_kernel_specs()
    except Exception:  # no jupyter_client or no kernels: skip, do not fail
        return False


@pytest.mark.skipif(not _has_python3_kernel(), reason="no 'python3' Jupyter kernel installed")
def test_caching_notebook_executes_without_error():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum(o.output_type == "display_data" and "image/png" in o.data for o in outputs) == 2
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "belady" in text and "restarts at requests" in text
