"""The command line every cached model family has: ``build``, ``evaluate NAME``, ``summary``.

``python -m tensorstore.corpora.minilm_family`` and ``... .embedding_family`` differ only in
what they build and how they evaluate; this module holds the rest.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class Family:
    """What a family's command line calls.

    ``build(out, quick, log)`` writes the family (``quick`` is offered only when
    ``quick_help`` is set); ``check(name, directory)`` raises ``KeyError`` or
    ``FileNotFoundError`` for a name the cache lacks; ``evaluate(name, tensors, directory)``
    returns the held-out accuracy; ``summary(directory)`` a markdown table.
    """

    prog: str
    description: str
    build_help: str
    evaluate_help: str
    build: Callable[[Path | None, bool, Callable[[str], None]], object]
    check: Callable[[str, Path], object]
    evaluate: Callable[[str, dict[str, np.ndarray], Path], float]
    summary: Callable[[Path | None], str]
    default_dir: Callable[[], Path]
    quick_help: str | None = None


def main(family: Family, argv: list[str] | None = None) -> int:
    """Run the family's command line; return the exit code (1 and one line on stderr for a
    missing cache, an unknown name or a missing optional dependency)."""
    parser = argparse.ArgumentParser(prog=family.prog, description=family.description)
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help=family.build_help)
    if family.quick_help:
        build.add_argument("--quick", action="store_true", help=family.quick_help)
    build.add_argument("--out", type=Path, help="directory to write (default: the cache)")
    ev = sub.add_parser("evaluate", help=family.evaluate_help)
    ev.add_argument("name")
    ev.add_argument("--family-dir", type=Path)
    summ = sub.add_parser("summary", help="a markdown table of the cached family")
    summ.add_argument("--family-dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            family.build(args.out, getattr(args, "quick", False), lambda line: print(line, flush=True))
        elif args.command == "evaluate":
            from safetensors.numpy import load_file

            directory = args.family_dir or family.default_dir()
            family.check(args.name, directory)  # a clear error for an unknown name
            t0 = time.perf_counter()
            accuracy = family.evaluate(args.name, load_file(str(directory / f"{args.name}.safetensors")), directory)
            print(f"{args.name}: held-out accuracy {accuracy:.4f} ({time.perf_counter() - t0:.1f} s)")
        else:
            print(family.summary(args.family_dir))
    except (FileNotFoundError, KeyError, ImportError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 1
    return 0
