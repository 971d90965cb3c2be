"""The labeller contract: what every reference code's work chain takes and yields.

Modelled on aiida-common-workflows: one work chain per code, with common input and output ports, so that the
campaign, validation and the CLI speak only this contract and adding a code is one new module (plus its protocol
entries and an ``aiida.workflows`` entry point ``annpot.labelling.<name>``).

Inputs
    ``structure`` (the structure to label), ``code``, ``settings`` (a Dict of the code's campaign-wide settings,
    the same for every label of a campaign so energies stay comparable; checked against the labeller's
    :attr:`~LabelWorkChain.settings_model` when the process is built), ``options`` (scheduler options) and
    ``fixed`` (inputs fixed per ideal cell, made once by :meth:`~LabelWorkChain.fixed_inputs` and shared by every
    strained, rattled or MD copy of that cell: Quantum ESPRESSO's k-point mesh).
Output
    ``label``, an :class:`~aiida_annpot.data.label.LabelData`: energy (eV), forces (eV/Å), stress (eV/Å³, ASE's
    sign) and the UUID of the calculation that computed them.
Failure
    ``ERROR_CALCULATION_FAILED`` (the code's own work chain failed after its restart handlers) or
    ``ERROR_INVALID_LABEL`` (it finished but gave no usable energy and forces); the exit message says why, and the
    reference work chain lists it under ``failed``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from aiida.engine import WorkChain
from aiida.orm import AbstractCode, Data, Dict, StructureData
from pydantic import BaseModel

from ...common.config import ConfigError, load_config
from ...data.label import LabelData

__all__ = ["LabelWorkChain"]


class LabelWorkChain(WorkChain):
    """Base class of the labellers: common ports and the class-level hooks the campaign calls before labelling."""

    #: Name in campaign files and protocols (``reference.labeller``); the entry point is ``annpot.labelling.<name>``.
    name: ClassVar[str] = ""
    #: Schema of ``settings``.
    settings_model: ClassVar[type[BaseModel]]
    #: Schema of the labeller's protocol entries (``reference.<name>`` in the campaign protocol).
    protocol_model: ClassVar[type[BaseModel]]
    #: The code's calculation plugin(s), checked when a campaign file names the code.
    calc_job_plugins: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=StructureData, help="The structure to label.")
        spec.input("code", valid_type=AbstractCode, help="The reference code.")
        spec.input(
            "settings",
            valid_type=Dict,
            validator=cls.validate_settings,
            help="The code's settings, fixed for the whole campaign (see the labeller's settings_model).",
        )
        spec.input(
            "options",
            valid_type=Dict,
            default=lambda: Dict({}),
            help="Scheduler options of the calculation (resources, max_wallclock_seconds, queue_name, ...).",
        )
        spec.input_namespace(
            "fixed",
            valid_type=Data,
            dynamic=True,
            required=False,
            help="Inputs fixed per ideal cell (from fixed_inputs), shared by every copy of that cell.",
        )
        spec.output("label", valid_type=LabelData, help="Energy, forces and stress in eV, eV/Å, eV/Å³ (ASE sign).")
        spec.exit_code(310, "ERROR_CALCULATION_FAILED", message="{process}<{pk}> failed: {message}")
        spec.exit_code(311, "ERROR_INVALID_LABEL", message="{process}<{pk}> gave no usable label: {reason}")

    # --- hooks the campaign calls before any label runs ---------------------------------------------------------
    @classmethod
    def validate_settings(cls, settings: Dict, _=None) -> str | None:
        """Port validator: the settings against :attr:`settings_model`, naming the field at fault."""
        try:
            cls.load_settings(settings.get_dict())
        except ConfigError as exc:
            return f"{cls.name} settings: {exc}"
        return None

    @classmethod
    def load_settings(cls, settings: dict) -> BaseModel:
        """:raises ConfigError: settings that do not fit the schema."""
        return load_config(settings, cls.settings_model)

    @classmethod
    def check_structures(cls, settings: dict, structures: dict[str, StructureData]) -> str | None:
        """Why the code cannot label one of ``structures`` with ``settings`` (a missing pseudopotential or basis
        set), naming the structure; None when it can label all. Called at launch, before anything runs."""
        return None

    @classmethod
    def fixed_inputs(cls, cell: StructureData, settings: Dict, label: str) -> dict[str, Data]:
        """Inputs fixed for ``cell`` and shared by its copies (the ``fixed`` namespace); may call calcfunctions, so
        call it from a work chain step. ``label`` names the cell in link labels."""
        return {}

    @classmethod
    def settings_from_protocol(cls, entries: dict, code: AbstractCode, structure: StructureData) -> dict[str, Any]:
        """The ``settings`` Dict's content from the labeller's protocol entries (``reference.<name>``)."""
        raise NotImplementedError(f"labeller {cls.name!r} has no protocol")
