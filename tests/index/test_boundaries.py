"""The index package depends on numpy, mmh3, faiss and the standard library only (SPEC §2)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "index"
ALLOWED = {"numpy", "mmh3", "faiss", "tensorstore_index"} | set(sys.stdlib_module_names)


def imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_every_module_imports_only_allowed_packages():
    modules = sorted(PACKAGE.glob("*.py"))
    assert len(modules) >= 8
    for module in modules:
        outside = set(imported_roots(module)) - ALLOWED
        assert not outside, f"{module.name} imports {outside}"


def test_importing_index_loads_no_sibling_package():
    code = (
        "import sys, tensorstore_index, tensorstore_index.measure, tensorstore_index.magnitude_study;"
        "print(sorted(m for m in ('tensorstore', 'tensorstore_packing', 'tensorstore_bufferpool') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=PACKAGE.parent, check=True).stdout
    assert out.strip() == "[]"
