"""Reference codes as labellers behind one contract (:mod:`.base`): ``reference.labeller`` names one.

A labeller is a :class:`~.base.LabelWorkChain` registered as the ``aiida.workflows`` entry point
``annpot.labelling.<name>``: the registry is the installed entry points, so a new code is one module, its entry point
and its protocol entries, and nothing here changes. A name is looked up among those entry points only; no import
path from a campaign file is ever imported.
"""

from __future__ import annotations

from .base import LabelWorkChain

__all__ = ["ENTRY_POINT_PREFIX", "LabelWorkChain", "labeller_names", "load_labeller"]

ENTRY_POINT_PREFIX = "annpot.labelling."


def labeller_names() -> list[str]:
    """Names of the installed labellers (``quantumespresso``, ``cp2k``, ...)."""
    from aiida.plugins.entry_point import get_entry_point_names

    names = get_entry_point_names("aiida.workflows")
    return sorted(name.removeprefix(ENTRY_POINT_PREFIX) for name in names if name.startswith(ENTRY_POINT_PREFIX))


def load_labeller(name: str) -> type[LabelWorkChain]:
    """The labeller work chain called ``name``. :raises ValueError: no such labeller (the message lists them)."""
    from aiida.plugins import WorkflowFactory

    if name not in labeller_names():
        raise ValueError(f"unknown labeller {name!r}; installed: {', '.join(labeller_names())}")
    return WorkflowFactory(f"{ENTRY_POINT_PREFIX}{name}")
