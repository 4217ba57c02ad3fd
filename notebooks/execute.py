"""Execute the notebooks in place, so that they are committed with their outputs.

    .venv/bin/python notebooks/execute.py            # every notebook here
    .venv/bin/python notebooks/execute.py packing.ipynb

Each code cell's metadata records the SHA-256 of the source its outputs came from
(``tensorstore.source_sha256``); ``tests/test_notebooks.py`` re-executes the notebooks and
fails when a cell was edited without being re-run, or when a cell has no stored output.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import nbclient
import nbformat

HERE = Path(__file__).resolve().parent
KEY = "tensorstore"


def source_hash(cell) -> str:
    return hashlib.sha256(cell.source.encode()).hexdigest()


def execute(path: Path, timeout: int = 300):
    """The notebook at ``path`` executed top to bottom in a fresh kernel (not written)."""
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.metadata.pop("execution", None)  # timestamps: noise in every diff
            cell.metadata[KEY] = {"source_sha256": source_hash(cell)}
    return notebook


def main(names: list[str]) -> int:
    paths = [HERE / n for n in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        notebook = execute(path)
        nbformat.write(notebook, path)
        print(f"executed {path.name}: {sum(c.cell_type == 'code' for c in notebook.cells)} code cells")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
