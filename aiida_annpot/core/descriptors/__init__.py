"""Descriptor families; :func:`make_descriptor` builds one from its configuration.

The registry :data:`DESCRIPTORS` maps a configuration's ``type`` to the module and class that implement it, imported
on first use. A new descriptor is one module here (a :class:`~.base.Descriptor` subclass), its configuration class in
:mod:`aiida_annpot.common.config` (a ``type`` literal, added to ``DescriptorConfig``) and one line below.
"""

from __future__ import annotations

import importlib

from .base import Descriptor

__all__ = ["DESCRIPTORS", "Descriptor", "make_descriptor"]

#: Configuration ``type`` → (module under this package, class name).
DESCRIPTORS: dict[str, tuple[str, str]] = {
    "chebyshev": ("chebyshev", "ChebyshevDescriptor"),
    "behler_parrinello": ("behler_parrinello", "BehlerParrinelloDescriptor"),
}


def descriptor_class(kind: str) -> type[Descriptor]:
    """The class implementing descriptor ``kind``. :raises TypeError: no descriptor of that type is registered."""
    if kind not in DESCRIPTORS:
        raise TypeError(f"no descriptor of type {kind!r}; registered: {', '.join(DESCRIPTORS)}")
    module, name = DESCRIPTORS[kind]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def make_descriptor(elements: list[str], config) -> Descriptor:
    """The descriptor a configuration (``ChebyshevConfig``, ``BehlerParrinelloConfig``, ...) names, for ``elements``."""
    return descriptor_class(config.type)(elements, config)
