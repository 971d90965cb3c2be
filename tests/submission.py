"""What submitting would say about a process's inputs: the spec's own validation, as ``submit`` runs it, without
creating any node. Shared by the port-validation tests of the calculations, work chains and CLI."""

from __future__ import annotations

from collections.abc import Mapping

from aiida.engine import ProcessBuilder


def copy_dicts(value):
    """Nested mappings copied, the nodes in them not: what a process does with its raw inputs."""
    return {key: copy_dicts(item) for key, item in value.items()} if isinstance(value, Mapping) else value


def validation_error(process_class, inputs: Mapping | ProcessBuilder) -> str | None:
    """What submitting ``inputs`` (a mapping or a builder) to ``process_class`` would say (None: they pass)."""
    if isinstance(inputs, ProcessBuilder):
        inputs = inputs._inputs(prune=True)
    spec = process_class.spec().inputs
    error = spec.validate(spec.pre_process(copy_dicts(inputs)))  # pre_process fills and freezes its argument
    return None if error is None else str(error)
