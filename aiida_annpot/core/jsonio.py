"""Standard JSON for the files the engine writes: NaN and infinities (an error with no labels to measure it, an
unbounded range) become ``null``, because ``NaN`` is not JSON and other readers (jq, JavaScript, AiiDA) refuse it."""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "finite_or_none"]


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float in nested dicts, lists and tuples replaced by None."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(value: Any, **kwargs) -> str:
    """``json.dumps`` of :func:`finite_or_none` (``value``); never writes ``NaN`` or ``Infinity``."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
