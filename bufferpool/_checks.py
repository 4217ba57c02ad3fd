"""Argument checks shared by the package: one place for the wording of bad-argument errors."""

from __future__ import annotations

import operator
from collections.abc import Hashable, Iterable, Mapping

from .errors import InvalidArgumentError, InvalidTypeError


def as_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` (numpy integers accepted), or raise ``InvalidTypeError``."""
    if isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be an int, got a bool ({value!r})")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InvalidTypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})") from None


def positive_int(value: object, name: str) -> int:
    """Return ``value`` as an ``int`` >= 1, or raise a clear error naming ``name``."""
    number = as_int(value, name)
    if number < 1:
        raise InvalidArgumentError(f"{name} must be >= 1, got {number}")
    return number


def positive_float(value: object, name: str) -> float:
    """Return ``value`` as a finite ``float`` > 0, or raise a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise InvalidArgumentError(f"{name} must be a finite number > 0, got {value!r}")
    return number


def probability(value: object, name: str) -> float:
    """Return ``value`` as a ``float`` in [0, 1], or raise a clear error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    if not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def sharing_map(sharing: object) -> dict[int, frozenset[Hashable]]:
    """Validate ``{page_id: [model, ...]}`` and return it as ``{int: frozenset}``."""
    if not isinstance(sharing, Mapping):
        raise InvalidTypeError(
            f"sharing must be a mapping {{page_id: [model, ...]}}, got {type(sharing).__name__}"
        )
    result: dict[int, frozenset[Hashable]] = {}
    for page_id, models in sharing.items():
        key = as_int(page_id, "a sharing page id")
        # A bare string would silently become a set of its characters.
        if isinstance(models, (str, bytes)) or not isinstance(models, Iterable):
            raise InvalidTypeError(
                f"sharing[{key}] must be a collection of model names, got {models!r}"
            )
        try:
            result[key] = frozenset(models)
        except TypeError:
            raise InvalidTypeError(f"sharing[{key}] holds an unhashable model name: {models!r}") from None
    return result
