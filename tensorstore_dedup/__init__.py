"""The ``tensorstore`` command's launcher, under an import name only this distribution uses.

Google's TensorStore (pip ``tensorstore``, a dependency of orbax-checkpoint and so of much
of JAX) also installs a top-level package named ``tensorstore``. The two cannot live in one
environment: whichever comes first on ``sys.path`` (or was installed last into the same
site-packages, overwriting the other's ``__init__.py``) is what ``import tensorstore``
gives. A launcher inside ``tensorstore`` could not even start in that case, so the
console script and ``python -m tensorstore_dedup`` start here, check what ``import
tensorstore`` gives, and say what happened instead of failing with a traceback.
"""

from __future__ import annotations

import sys

DISTRIBUTION = "tensorstore-dedup"


def _own_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "(not installed)"


def check_import() -> str | None:
    """None when ``import tensorstore`` gives this project's package; else what happened."""
    try:
        import tensorstore
    except Exception as exc:  # a half-overwritten package can fail in any way
        return (f"`import tensorstore` failed ({type(exc).__name__}: {exc}); another package named tensorstore may have "
                f"overwritten part of {DISTRIBUTION}. " + _remedy())
    if getattr(tensorstore, "__distribution__", None) == DISTRIBUTION:
        return None
    where = getattr(tensorstore, "__file__", None) or ", ".join(getattr(tensorstore, "__path__", [])) or "an unknown place"
    theirs = getattr(tensorstore, "__version__", None)
    google = any(hasattr(tensorstore, n) for n in ("TensorStore", "Spec", "KvStore"))
    what = "Google's TensorStore (pip package `tensorstore`)" if google else "another package of that name"
    return (f"`import tensorstore` gives {what}{f' {theirs}' if theirs else ''} from {where}, not {DISTRIBUTION} "
            f"{_own_version()}: both use the import name `tensorstore` and cannot share one environment. " + _remedy())


def _remedy() -> str:
    return (f"Install {DISTRIBUTION} in a virtual environment of its own (python -m venv), or remove the other package "
            f"(pip uninstall tensorstore) and reinstall this one (pip install --force-reinstall {DISTRIBUTION}); "
            "if the other comes from PYTHONPATH, take it off.")


def describe_import() -> str:
    """``tensorstore-dedup X (import name tensorstore, from PATH)``; raises if it is not ours."""
    problem = check_import()
    if problem is not None:
        raise RuntimeError(problem)
    import tensorstore

    return f"{DISTRIBUTION} {_own_version()} (import name tensorstore, from {tensorstore.__path__[0]})"


def main(argv: list[str] | None = None) -> int:
    """Run the ``tensorstore`` command line, or explain why ``tensorstore`` is not ours (exit 1)."""
    problem = check_import()
    if problem is not None:
        print(f"tensorstore: error: {problem}", file=sys.stderr)
        return 1
    from tensorstore.cli import main as cli_main

    return cli_main(argv)
