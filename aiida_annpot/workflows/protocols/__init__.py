"""Protocols (YAML) behind ``ActiveLearningWorkChain.get_builder_from_protocol``.

Inputs are merged default → protocol → overrides: mappings merge key by key, anything else is replaced. Overrides
are deep-copied, never mutated, and a key the protocol does not know raises (a typo must not be silently ignored,
see aiida-quantumespresso#745); the free-form settings (training and exploration configurations, pw.x namelists,
generation, test set, targets) are checked against their own schemas when the builder's ports validate them.
"""

from __future__ import annotations

import copy
import pathlib

import yaml

__all__ = ["ProtocolMixin", "merge", "unknown_keys"]

#: Paths (dotted) under which any key may appear; their content is validated by a schema, not by the protocol file.
FREE_FORM = (
    "generation",
    "validation_targets",
    "test_set",
    "test_targets",
    "start_supercells",
    "reference.quantumespresso.parameters",
    "reference.cp2k",  # any Cp2kSettings key over the preset, checked by the labeller's protocol schema
    "reference.ase",  # benchmarks and workflow tests: a registered calculator, checked by AseLabelSettings
    "committee.config",
    "exploration.config",
)


def merge(base: dict, changes: dict) -> dict:
    """A new mapping: ``base`` with ``changes`` merged in recursively (neither argument is modified)."""
    result = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def unknown_keys(overrides: dict, known: dict, prefix: str = "") -> list[str]:
    """Dotted paths of ``overrides`` that ``known`` does not have (free-form paths accept anything)."""
    unknown = []
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if path in FREE_FORM:
            continue
        if key not in known:
            unknown.append(path)
        elif isinstance(value, dict) and isinstance(known[key], dict):
            unknown.extend(unknown_keys(value, known[key], f"{path}."))
    return unknown


class ProtocolMixin:
    """Protocol lookup for a process whose YAML file sits in this folder under ``_protocol_file``."""

    _protocol_file = ""
    #: Called with the merged inputs; raises ValueError naming the fields of the wrong type (None: no check).
    _protocol_schema = None

    @classmethod
    def get_protocol_filepath(cls) -> pathlib.Path:
        return pathlib.Path(__file__).parent / cls._protocol_file

    @classmethod
    def _load_protocols(cls) -> dict:
        return yaml.safe_load(cls.get_protocol_filepath().read_text())

    @classmethod
    def get_default_protocol(cls) -> str:
        return cls._load_protocols()["default_protocol"]

    @classmethod
    def get_available_protocols(cls) -> dict[str, dict]:
        """Protocol name → {"description": ...}."""
        return {name: {"description": p["description"]} for name, p in cls._load_protocols()["protocols"].items()}

    @classmethod
    def get_protocol_inputs(cls, protocol: str | None = None, overrides: dict | None = None) -> dict:
        """The merged inputs of ``protocol`` (default if None) with ``overrides``.

        :raises ValueError: unknown protocol, override keys the protocol does not know, or values of the wrong type.
        """
        data = cls._load_protocols()
        name = protocol or data["default_protocol"]
        if name not in data["protocols"]:
            raise ValueError(f"unknown protocol {name!r}; available: {', '.join(data['protocols'])}")
        changes = {k: v for k, v in data["protocols"][name].items() if k != "description"}
        inputs = merge(data["default_inputs"], changes)
        overrides = overrides or {}
        unknown = unknown_keys(overrides, inputs)
        if unknown:
            raise ValueError(f"unknown override key(s): {', '.join(unknown)}")
        inputs = merge(inputs, overrides)
        if cls._protocol_schema is not None:
            cls._protocol_schema(inputs)
        return inputs
