"""Descriptor families; :func:`make_descriptor` builds one from its configuration."""

from __future__ import annotations

from ...common.config import BehlerParrinelloConfig, ChebyshevConfig
from .base import Descriptor
from .chebyshev import ChebyshevDescriptor

__all__ = ["ChebyshevDescriptor", "Descriptor", "make_descriptor"]


def make_descriptor(elements: list[str], config: ChebyshevConfig | BehlerParrinelloConfig) -> Descriptor:
    """The descriptor a configuration names, for the given elements."""
    if isinstance(config, ChebyshevConfig):
        return ChebyshevDescriptor(elements, config)
    if isinstance(config, BehlerParrinelloConfig):
        from .behler_parrinello import BehlerParrinelloDescriptor

        return BehlerParrinelloDescriptor(elements, config)
    raise TypeError(f"no descriptor for configuration {type(config).__name__}")
