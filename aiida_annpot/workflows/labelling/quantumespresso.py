"""Quantum ESPRESSO (pw.x) as a labeller: everything the campaign needs to know about pw.x lives here.

- **Settings** (:class:`QuantumEspressoSettings`): pseudopotential family, pw.x namelists, k-point density and
  shift, bands. Resolved once per campaign from aiida-quantumespresso's own PwBaseWorkChain protocol plus the
  campaign protocol's cutoffs (:meth:`QuantumEspressoLabelWorkChain.settings_from_protocol`).
- **The k-point mesh policy**: one mesh per ideal cell from ``kpoints_distance`` (:func:`kpoints_mesh`), made once
  and shared by every strained, rattled and MD copy of the cell (the ``fixed.kpoints`` input). A distance-based mesh
  per structure would jump between sizes as a cell is strained, shifting energies by far more than the potential's
  target error. An optional shift (``kpoints_offset``, Monkhorst–Pack for [0.5, 0.5, 0.5]) stays commensurate
  between a cell and its supercells when the supercell's mesh divides the cell's.
- **Bands**: ``bands_factor`` × the occupied bands per structure, from the pseudopotentials' valence charges.
- **Units and signs**: aiida-quantumespresso parses energies in eV, forces in eV/Å and stress in GPa with QE's
  sign (positive under compression); the label carries ASE's (eV/Å³, positive under tension).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Literal

import numpy as np
from aiida.common import AttributeDict
from aiida.engine import ToContext, calcfunction
from aiida.orm import Bool, Dict, Float, KpointsData, List, StructureData, TrajectoryData, load_group
from aiida.plugins import WorkflowFactory
from ase import units
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator, model_validator

from ...data.label import LabelData
from .base import LabelWorkChain

__all__ = [
    "QuantumEspressoLabelWorkChain",
    "QuantumEspressoSettings",
    "bands_for",
    "kpoints_mesh",
    "shifted_kpoints_from_distance",
    "validate_pseudo_family",
    "validate_pw_parameters",
]

PwBaseWorkChain = WorkflowFactory("quantumespresso.pw.base")

#: pw.x settings that must be numbers (a string such as ``ecutwfc: high`` would only fail inside pw.x).
_NUMERIC_PW_KEYS = {
    "SYSTEM": ("ecutwfc", "ecutrho", "ecutfock", "degauss", "tot_charge", "tot_magnetization", "nbnd", "nspin"),
    "ELECTRONS": ("conv_thr", "mixing_beta", "mixing_ndim", "electron_maxstep", "diago_thr_init"),
    "CONTROL": ("etot_conv_thr", "forc_conv_thr", "max_seconds", "nstep"),
}


def validate_pw_parameters(parameters: dict, where: str = "parameters") -> str | None:
    """Error message naming the first unknown pw.x namelist or variable (by the variables that ASE lists from QE's
    INPUT_PW documentation, with the closest known name) or a numeric variable that is not a number."""
    from ase.io.espresso_namelist.keys import pw_keys

    for namelist, values in parameters.items():
        known = pw_keys.get(str(namelist).lower())
        if known is None:
            return f"{where}: {namelist!r} is not a pw.x namelist (known: {', '.join(k.upper() for k in pw_keys)})"
        if not isinstance(values, dict):
            return f"{where}.{namelist}: expected a mapping of pw.x variables, got {values!r}"
        for key, value in values.items():
            name = str(key).lower().split("(")[0]  # starting_magnetization(1) is the variable starting_magnetization
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                return f"{where}.{namelist}.{key}: not a pw.x variable of &{str(namelist).upper()}{hint}"
            numeric = name in _NUMERIC_PW_KEYS.get(str(namelist).upper(), ())
            if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
                return f"{where}.{namelist}.{key}: must be a number, got {value!r}"
    return None


def validate_pseudo_family(family_label: str, structures) -> str | None:
    """Error message when ``family_label`` is not a pseudopotential family covering every structure's elements."""
    try:
        family = load_group(family_label)
    except Exception:  # NotExistent or MultipleObjectsError: either way the label does not name one family
        return f"pseudo family {family_label!r} does not exist (aiida-pseudo list shows the installed ones)"
    if not hasattr(family, "get_pseudos"):
        return f"group {family_label!r} is not a pseudopotential family"
    available = set(family.elements)
    for key, structure in structures.items():
        missing = sorted(set(structure.get_symbols_set()) - available)
        if missing:
            return f"structure {key}: pseudo family {family_label!r} has no pseudopotential for {', '.join(missing)}"
    return None


def _offset(values: list[float]) -> list[float]:
    if len(values) != 3 or not all(0.0 <= v < 1.0 for v in values):
        raise ValueError(f"expected three shifts in [0, 1) of a mesh step, got {values}")
    return values


class QuantumEspressoSettings(BaseModel):
    """pw.x settings fixed for a campaign. Units: 1/Å for kpoints_distance."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pseudo_family: str = Field(..., min_length=1, description="Label of an aiida-pseudo family covering every element.")
    parameters: dict[str, dict[str, Any]] = Field(..., description="pw.x namelists (CONTROL, SYSTEM, ELECTRONS).")
    kpoints_distance: PositiveFloat = Field(..., description="Mesh density of each ideal cell, 1/Å.")
    kpoints_force_parity: bool = False
    kpoints_offset: list[float] = Field([0.0, 0.0, 0.0], description="Mesh shift in mesh steps; zeros: Γ-centred.")
    bands_factor: float | None = Field(
        None, ge=1.0, description="nbnd = factor × the occupied bands (at least 4 more); none: pw.x's choice"
    )
    max_iterations: PositiveInt = Field(5, description="PwBaseWorkChain restarts.")
    clean_workdir: bool = False

    @field_validator("kpoints_offset")
    @classmethod
    def _valid_offset(cls, values: list[float]) -> list[float]:
        return _offset(values)

    @field_validator("parameters")
    @classmethod
    def _valid_parameters(cls, parameters: dict) -> dict:
        message = validate_pw_parameters(parameters)
        if message:
            raise ValueError(message)
        return parameters

    @model_validator(mode="after")
    def _one_band_setting(self) -> QuantumEspressoSettings:
        system = {
            str(key).lower()
            for name, values in self.parameters.items()
            if str(name).upper() == "SYSTEM"
            for key in values
        }
        if self.bands_factor is not None and "nbnd" in system:
            raise ValueError("parameters.SYSTEM.nbnd and bands_factor both set the bands: give one of them")
        return self


class QuantumEspressoProtocol(BaseModel):
    """The campaign protocol's entries ``reference.quantumespresso``: over aiida-quantumespresso's own protocol."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    pseudo_family: str | None = Field(None, description="Label of an aiida-pseudo family; given at launch if null.")
    protocol: Literal["fast", "balanced", "stringent"] = Field(
        ..., description="PwBaseWorkChain protocol the DFT settings start from"
    )
    electronic_type: Literal["metal", "insulator"] = Field("metal", description="metal (smearing) or insulator")
    ecutwfc: PositiveFloat = Field(..., description="Ry")
    ecutrho: PositiveFloat = Field(..., description="Ry")
    kpoints_distance: PositiveFloat = Field(..., description="1/Å")
    kpoints_offset: list[float] | None = Field(None, description="[0.5, 0.5, 0.5]: Monkhorst–Pack; null: Γ-centred")
    bands_factor: float | None = Field(None, ge=1.0, description="nbnd as a multiple of the occupied bands")
    parameters: dict[str, dict[str, Any]] = Field({}, description="pw.x namelists merged over the protocol's")

    @field_validator("kpoints_offset")
    @classmethod
    def _valid_offset(cls, values: list[float] | None) -> list[float] | None:
        return None if values is None else _offset(values)


# --- the k-point mesh policy ------------------------------------------------------------------------------------
@calcfunction
def shifted_kpoints_from_distance(structure: StructureData, distance: Float, force_parity: Bool, offset: List):
    """The mesh of ``create_kpoints_from_distance`` (same sizes) with ``offset`` (fractions of a mesh step)."""
    from aiida_quantumespresso.calculations.functions.create_kpoints_from_distance import (
        create_kpoints_from_distance,
    )

    mesh = create_kpoints_from_distance.__wrapped__(structure, distance, force_parity).get_kpoints_mesh()[0]
    kpoints = KpointsData()
    kpoints.set_cell_from_structure(structure)
    # a single point is shifted too (it is the half-step point of the cell's mesh that the supercell folds onto),
    # but not along a direction without periodicity
    shift = [float(value) if pbc else 0.0 for value, pbc in zip(offset.get_list(), structure.pbc, strict=True)]
    kpoints.set_kpoints_mesh(mesh, offset=shift)
    return kpoints


def kpoints_mesh(cell: StructureData, settings: QuantumEspressoSettings, label: str) -> KpointsData:
    """The mesh for ``cell`` (a provenance-recording calcfunction call, link label ``kpoints_<label>``). Without a
    shift it is aiida-quantumespresso's ``create_kpoints_from_distance``, whose provenance users know."""
    from aiida_quantumespresso.calculations.functions.create_kpoints_from_distance import (
        create_kpoints_from_distance,
    )

    metadata = {"call_link_label": f"kpoints_{label}"}
    distance, parity = Float(settings.kpoints_distance), Bool(settings.kpoints_force_parity)
    if not any(settings.kpoints_offset):
        return create_kpoints_from_distance(cell, distance, parity, metadata=metadata)
    return shifted_kpoints_from_distance(cell, distance, parity, List(list(settings.kpoints_offset)), metadata=metadata)


def bands_for(structure: StructureData, pseudos: dict, factor: float) -> int:
    """pw.x's ``nbnd`` for ``structure``: ``factor`` × the occupied bands, and at least 4 empty ones."""
    electrons = sum(pseudos[site.kind_name].z_valence for site in structure.sites)
    occupied = math.ceil(electrons / 2)
    return max(math.ceil(factor * electrons / 2), occupied + 4)


# --- the label --------------------------------------------------------------------------------------------------
def read_label(parameters: dict, trajectory: TrajectoryData) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign, None if absent) from parsed pw.x outputs.

    :raises ValueError: no energy in eV, or no forces (``tprnfor`` unset).
    """
    if parameters.get("energy_units", "eV") != "eV":
        raise ValueError(f"energy units {parameters['energy_units']!r}, expected 'eV'")
    if "forces" not in trajectory.get_arraynames():
        raise ValueError("no forces in output_trajectory (tprnfor must be set)")
    forces = np.asarray(trajectory.get_array("forces"))[-1]
    stress = None
    if "stress" in trajectory.get_arraynames():
        stress = -np.asarray(trajectory.get_array("stress"))[-1] * units.GPa  # QE's sign is the opposite of ASE's
    return parameters.get("energy"), forces, stress


@calcfunction
def quantumespresso_label(parameters: Dict, trajectory: TrajectoryData) -> LabelData:
    """The contract's label from a PwCalculation's ``output_parameters`` and ``output_trajectory``."""
    energy, forces, stress = read_label(parameters.get_dict(), trajectory)
    return LabelData.build(energy, forces, stress, calculation_uuid=parameters.creator.uuid, code="quantumespresso")


class QuantumEspressoLabelWorkChain(LabelWorkChain):
    """Label one structure with pw.x through aiida-quantumespresso's PwBaseWorkChain (and its restart handlers)."""

    name = "quantumespresso"
    settings_model = QuantumEspressoSettings
    protocol_model = QuantumEspressoProtocol
    calc_job_plugins = ("quantumespresso.pw",)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.run_pw, cls.inspect_pw)

    # --- hooks --------------------------------------------------------------------------------------------------
    @classmethod
    def check_structures(cls, settings: dict, structures: dict) -> str | None:
        return validate_pseudo_family(settings["pseudo_family"], structures)

    @classmethod
    def fixed_inputs(cls, cell: StructureData, settings: Dict, label: str) -> dict:
        return {"kpoints": kpoints_mesh(cell, cls.load_settings(settings.get_dict()), label)}

    @classmethod
    def settings_from_protocol(cls, entries: dict, code, structure: StructureData) -> dict:
        """pw.x settings from aiida-quantumespresso's ``protocol`` with the campaign's cutoffs and namelists."""
        from aiida_quantumespresso.common.types import ElectronicType

        from ..protocols import merge

        protocol = QuantumEspressoProtocol.model_validate(entries)
        if protocol.pseudo_family is None:
            raise ValueError(
                "pseudo_family: none given (the campaign file's pseudo_family, or the protocol's "
                "reference.quantumespresso.pseudo_family)"
            )
        message = validate_pseudo_family(protocol.pseudo_family, {"input": structure})
        if message:
            raise ValueError(f"pseudo_family: {message}")
        parameters = merge({"SYSTEM": {"ecutwfc": protocol.ecutwfc, "ecutrho": protocol.ecutrho}}, protocol.parameters)
        overrides = {
            "pseudo_family": protocol.pseudo_family,
            "kpoints_distance": protocol.kpoints_distance,
            "pw": {"parameters": parameters},
        }
        builder = PwBaseWorkChain.get_builder_from_protocol(
            code,
            structure,
            protocol=protocol.protocol,
            overrides=overrides,
            electronic_type=ElectronicType(protocol.electronic_type),
        )
        return {
            "pseudo_family": protocol.pseudo_family,
            "parameters": builder.pw.parameters.get_dict(),
            "kpoints_distance": protocol.kpoints_distance,
            "kpoints_force_parity": bool(builder.get("kpoints_force_parity", Bool(False)).value),
            "kpoints_offset": protocol.kpoints_offset or [0.0, 0.0, 0.0],
            "bands_factor": protocol.bands_factor,
            "max_iterations": int(builder.max_iterations.value),
            "clean_workdir": bool(builder.clean_workdir.value),
        }

    # --- the outline --------------------------------------------------------------------------------------------
    def run_pw(self):
        settings = self.load_settings(self.inputs.settings.get_dict())
        structure = self.inputs.structure
        family = load_group(settings.pseudo_family)
        pseudos = family.get_pseudos(structure=structure)
        parameters = {name: dict(values) for name, values in settings.parameters.items()}
        if settings.bands_factor is not None:
            parameters.setdefault("SYSTEM", {})["nbnd"] = bands_for(structure, pseudos, settings.bands_factor)
        options = {"resources": {"num_machines": 1}, **self.inputs.options.get_dict()}
        fixed = self.inputs.get("fixed", {})
        pw = {
            "code": self.inputs.code,
            "structure": structure,
            "pseudos": pseudos,
            "parameters": Dict(parameters),
            "metadata": {"options": options},
        }
        inputs = AttributeDict(
            {
                "pw": pw,
                "kpoints": fixed["kpoints"] if "kpoints" in fixed else kpoints_mesh(structure, settings, "structure"),
                "max_iterations": settings.max_iterations,
                "clean_workdir": settings.clean_workdir,
                "on_unhandled_failure": "restart_once",  # a pw.x killed for no known cause: once more
                "metadata": {"call_link_label": "pw_base"},
            }
        )
        return ToContext(pw_base=self.submit(PwBaseWorkChain, **inputs))

    def inspect_pw(self):
        node = self.ctx.pw_base
        process = {"process": "PwBaseWorkChain", "pk": node.pk}
        if not node.is_finished_ok:
            message = f"exit status {node.exit_status}: {node.exit_message}"
            return self.exit_codes.ERROR_CALCULATION_FAILED.format(message=message, **process)
        parameters, trajectory = node.outputs.output_parameters, node.outputs.output_trajectory
        try:
            LabelData.build(*read_label(parameters.get_dict(), trajectory), calculation_uuid="", code=self.name)
        except ValueError as exc:  # checked here so that the calcfunction below never fails
            return self.exit_codes.ERROR_INVALID_LABEL.format(reason=str(exc), **process)
        self.out("label", quantumespresso_label(parameters, trajectory, metadata={"call_link_label": "label"}))
        return None
