"""Progress bars for long work: shown on a terminal, silent when piped or asked to be."""

from __future__ import annotations

import sys
from contextlib import nullcontext


class _Silent:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


def progress(total: int, desc: str, enabled: bool | None):
    """A context manager giving a bar with ``update(n)``; ``enabled=None`` means "on a TTY"."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return nullcontext(_Silent())
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, leave=False, file=sys.stderr)
