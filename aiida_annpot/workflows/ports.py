"""Small port validators shared by the work chains."""

from __future__ import annotations

from collections.abc import Callable

from aiida.orm import Int

__all__ = ["at_least_one"]


def at_least_one(name: str) -> Callable[[Int, object], str | None]:
    """A port validator refusing an Int below 1, naming the port (a port validator also applies where the work
    chain is exposed inside another, unlike a namespace validator that may be skipped there)."""

    def validate(value: Int, _) -> str | None:
        return None if value.value >= 1 else f"{name} must be at least 1, got {value.value}"

    return validate
