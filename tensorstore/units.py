"""Byte sizes given as ints or as strings such as ``"4MiB"`` or ``"64 KB"``."""

from __future__ import annotations

import re

from .errors import InvalidArgumentError

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str, what: str = "size") -> int:
    """Return ``value`` as a whole number of bytes.

    Accepts an ``int`` or a string of a number and an optional unit: ``B``, decimal
    ``KB``/``MB``/``GB``/``TB`` and binary ``KiB``/``MiB``/``GiB``/``TiB`` (case-insensitive).
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(f"{what} must be a number of bytes, not a bool")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE.match(value)
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise InvalidArgumentError(
                f"{what} {value!r} is not a size; write bytes as an int or a string like '4MiB' or '64KiB'"
            )
        scaled = float(m.group(1)) * _UNITS[unit]
        if scaled != int(scaled):
            raise InvalidArgumentError(f"{what} {value!r} is not a whole number of bytes")
        n = int(scaled)
    else:
        raise InvalidArgumentError(f"{what} must be an int or a string like '4MiB', not {type(value).__name__}")
    if n <= 0:
        raise InvalidArgumentError(f"{what} must be positive, got {value!r}")
    return n


def format_size(n: int | float) -> str:
    """Format a byte count for people: ``1536 -> '1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
