"""The ``aiida-annpot`` command group: verdi-style ``-p/--profile`` and verbosity, shared node loading."""

from __future__ import annotations

import click
from aiida.cmdline.groups import VerdiCommandGroup
from aiida.cmdline.params import options, types
from aiida.cmdline.utils import echo

__all__ = ["NODE", "cmd_root", "load_campaign", "load_campaign_or_validation"]

#: A node argument: PK, UUID or label, as in ``verdi node show``.
NODE = types.NodeParamType()


@click.group("aiida-annpot", cls=VerdiCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@options.VERBOSITY()
@options.PROFILE(type=types.ProfileParamType(load_profile=True), expose_value=False)
def cmd_root():
    """Launch, follow and inspect aiida-annpot active-learning campaigns and validations."""


def load_campaign(node):
    """``node`` if it is an ActiveLearningWorkChain; otherwise a clear error and exit code 1."""
    from ..workflows.published import CAMPAIGN_PROCESS_TYPE  # not the work chain: its imports take seconds

    if node.process_type != CAMPAIGN_PROCESS_TYPE:
        echo.echo_critical(f"node {node.pk} is {describe(node)}, not an active-learning campaign")
    return node


def load_campaign_or_validation(node):
    """``node`` if it is an ActiveLearningWorkChain or a ValidationWorkChain; otherwise a clear error, exit code 1."""
    from ..workflows.published import CAMPAIGN_PROCESS_TYPE, VALIDATION_PROCESS_TYPE

    kinds = (CAMPAIGN_PROCESS_TYPE, VALIDATION_PROCESS_TYPE)
    if node.process_type not in kinds:
        echo.echo_critical(f"node {node.pk} is {describe(node)}, not an active-learning campaign or a validation")
    return node


def describe(node) -> str:
    """``a WorkChainNode (ReferenceWorkChain)`` for processes, ``an Int`` for data."""
    name = type(node).__name__
    label = getattr(node, "process_label", None)
    return ("an " if name[0] in "AEIOU" else "a ") + (f"{name} ({label})" if label else name)
