"""CP2K as a labeller: everything the campaign needs to know about CP2K (Quickstep, GPW) lives here.

- **Settings** (:class:`Cp2kSettings`): functional (a ``&XC_FUNCTIONAL`` shortcut such as BLYP or PBE) with optional
  Grimme D3, a Gaussian basis set and GTH pseudopotential by name from CP2K's data files, the plane-wave cutoffs of
  the density grids, the SCF thresholds, charge and multiplicity, and the box of non-periodic structures. Resolved
  from a preset (``fast``, ``balanced``, ``precise``) and the campaign protocol's entries
  (:meth:`Cp2kLabelWorkChain.settings_from_protocol`).
- **Periodicity**: a structure periodic in all three directions is labelled in its own cell (Γ point only) with the
  analytical stress, on the grid of its ideal cell (``fixed.reference_cell``, CP2K's ``CELL_REF``: the grid policy,
  as the k-point mesh is pw.x's). One periodic in none is an isolated cluster, its bounding box centred
  (``CENTER_COORDINATES``) in a cubic box of edge ``box``, the same for every label of the campaign so that all
  share one grid, with the non-periodic (wavelet by default) Poisson solver: no images, no stress. Partly periodic
  structures are refused.
- **Launch checks** (:meth:`Cp2kLabelWorkChain.check_structures`): every element has the basis set and the
  pseudopotential in the named data files (read as plain text from ``data_dir``), with matching valence; the
  electron count fits the multiplicity; a cluster leaves ``min_vacuum`` to the walls of its box.
- **Units and signs**: CP2K prints the energy in Hartree and the forces in Hartree/bohr (aiida-cp2k's parser gives
  the energy only; the forces are read from the ``ATOMIC FORCES`` block of the retrieved output), the stress in GPa
  with the sign of a pressure (positive under compression); the label carries eV, eV/Å and ASE's eV/Å³ (positive
  under tension).
- **Grids**: GPW energies are not exactly invariant under translation or rotation (the atoms move against the
  real-space grid, the egg-box effect): at 400 Ry a water molecule or dimer showed net forces up to 0.04 eV/Å and a
  rotated dimer an energy 2 meV off, depending on how the atoms sit on the grid; the forces are nonetheless the exact
  gradient of the labelled energy. Gradient-corrected functionals are noisy in the vacuum of a cluster unless the
  density is smoothed for the XC term (``xc_smoothing``: ``XC_SMOOTH_RHO NN10``, ``XC_DERIV SPLINE2_SMOOTH``):
  without it the net force on one water molecule was 0.7–4.6 eV/Å (BLYP, 300–600 Ry).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from aiida.common import AttributeDict
from aiida.engine import ToContext, calcfunction
from aiida.orm import Bool, Dict, FolderData, Int, StructureData
from aiida.plugins import WorkflowFactory
from ase import units
from ase.data import atomic_numbers
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    create_model,
    model_validator,
)

from ...data.label import LabelData
from .base import LabelWorkChain

__all__ = [
    "PRESETS",
    "Cp2kLabelWorkChain",
    "Cp2kProtocol",
    "Cp2kSettings",
    "cp2k_label",
    "cp2k_parameters",
    "find_entry",
    "library_entries",
    "read_forces",
    "read_label",
    "read_stress",
]

Cp2kBaseWorkChain = WorkflowFactory("cp2k.base")

#: Name of aiida-cp2k's output file (``Cp2kCalculation._DEFAULT_OUTPUT_FILE``).
OUTPUT_FILE = "aiida.out"
#: ``&XC_FUNCTIONAL`` shortcuts that need no further input (no hybrids: they need ``&HF`` and ADMM settings).
FUNCTIONALS = ("PADE", "LDA", "BLYP", "BP", "PBE", "PBESOL", "REVPBE", "OLYP", "HCTH120", "TPSS")


class Cp2kSettings(BaseModel):
    """CP2K settings fixed for a campaign. Units: Ry for cutoffs, Hartree for SCF thresholds, Å for lengths."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    functional: Literal[FUNCTIONALS] = Field(..., description="&XC_FUNCTIONAL shortcut: BLYP, PBE, ...")
    dispersion: Literal["none", "D3", "D3(BJ)"] = Field(
        ..., description="Grimme's D3 correction (zero or Becke–Johnson damping) for the functional, or none."
    )
    basis_set: str = Field(..., min_length=1, description="Basis set name or alias in basis_file (every element).")
    pseudopotential: str = Field(
        ..., min_length=1, description="GTH pseudopotential name or alias in potential_file (every element)."
    )
    cutoff: PositiveFloat = Field(..., description="Plane-wave cutoff of the finest density grid, Ry (&MGRID).")
    rel_cutoff: PositiveFloat = Field(..., description="Cutoff of the Gaussians mapped onto the finest grid, Ry.")
    ngrids: PositiveInt = Field(4, description="Number of multigrid levels.")
    eps_scf: PositiveFloat = Field(..., description="SCF convergence threshold (&SCF EPS_SCF).")
    max_scf: PositiveInt = Field(50, description="SCF steps before CP2K gives up (and the restart handler resumes).")
    scf_method: Literal["diagonalization", "ot"] = Field(
        "diagonalization",
        description="Diagonalization with Broyden mixing (fastest for small molecules) or orbital transformation "
        "(large insulating systems).",
    )
    eps_default: PositiveFloat = Field(1e-12, description="Quickstep's integral screening (&QS EPS_DEFAULT).")
    xc_smoothing: bool = Field(
        True, description="Smooth the density for the XC term (XC_SMOOTH_RHO NN10, XC_DERIV SPLINE2_SMOOTH)."
    )
    charge: int = Field(0, description="Total charge, electrons removed (&DFT CHARGE).")
    multiplicity: PositiveInt = Field(1, description="Spin multiplicity; above 1 the calculation is spin-polarized.")
    box: PositiveFloat | None = Field(
        12.0,
        description="Edge of the cubic box of non-periodic structures, Å: one box, so one grid, for every label "
        "(the grid shifts absolute energies by tens of meV per molecule at 400 Ry); null: each structure's own cell, "
        "for structures that all share one cell.",
    )
    min_vacuum: NonNegativeFloat = Field(
        3.0, description="Least distance from the atoms of a non-periodic structure to its box walls, Å."
    )
    poisson_solver: Literal["WAVELET", "MT"] = Field(
        "WAVELET",
        description="Poisson solver of non-periodic structures (Martyna–Tuckerman needs a box twice the cluster).",
    )
    stress: bool = Field(True, description="Analytical stress of periodic structures.")
    basis_file: str = Field("BASIS_MOLOPT", min_length=1, description="Basis set file in CP2K's data directory.")
    potential_file: str = Field("GTH_POTENTIALS", min_length=1, description="Pseudopotential file in the same.")
    dftd3_file: str = Field("dftd3.dat", min_length=1, description="D3 parameter file in the same.")
    data_dir: str = Field(
        "/usr/share/cp2k",
        min_length=1,
        description="CP2K's data directory on this machine, where the launch check reads basis_file and "
        "potential_file; CP2K itself finds the files by name in its own data directory.",
    )
    max_iterations: PositiveInt = Field(3, description="Cp2kBaseWorkChain restarts.")
    clean_workdir: bool = Field(False, description="Empty the calculations' remote folders when the label is made.")

    @model_validator(mode="after")
    def _dispersion_has_parameters(self) -> Cp2kSettings:
        if self.dispersion != "none" and self.functional in ("PADE", "LDA"):
            raise ValueError(f"dispersion: Grimme's D3 has no parameters for the LDA ({self.functional})")
        return self


#: Presets of :meth:`Cp2kLabelWorkChain.settings_from_protocol`: BLYP-D3 with GTH pseudopotentials and the
#: short-range double-zeta MOLOPT basis, at three grid cutoffs and SCF thresholds.
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {"cutoff": 300.0, "rel_cutoff": 40.0, "eps_scf": 1e-5, "box": 10.0},
    "balanced": {"cutoff": 400.0, "rel_cutoff": 50.0, "eps_scf": 1e-6, "box": 12.0},
    "precise": {"cutoff": 600.0, "rel_cutoff": 60.0, "eps_scf": 1e-7, "box": 14.0},
}
_PRESET_COMMON = {
    "functional": "BLYP",
    "dispersion": "D3",
    "basis_set": "DZVP-MOLOPT-SR-GTH",
    "pseudopotential": "GTH-BLYP",
}


def _optional_fields(model: type[BaseModel]) -> dict[str, Any]:
    """Every field of ``model`` as optional (default None), keeping its constraints and description."""
    from pydantic.fields import FieldInfo

    return {
        name: (info.annotation | None, FieldInfo.merge_field_infos(info, default=None))
        for name, info in model.model_fields.items()
    }


#: The campaign protocol's entries ``reference.cp2k``: a preset and any settings over it.
Cp2kProtocol = create_model(
    "Cp2kProtocol",
    __config__=ConfigDict(extra="forbid", frozen=True),
    __doc__="The campaign protocol's entries ``reference.cp2k``: a preset (fast, balanced, precise) and any of "
    ":class:`Cp2kSettings`' fields over it.",
    preset=(Literal[tuple(PRESETS)], Field("balanced", description="fast, balanced or precise")),
    **_optional_fields(Cp2kSettings),
)


# --- CP2K's data files ------------------------------------------------------------------------------------------
#: One entry of a CP2K data file: its names and aliases (upper case) and, for a pseudopotential, its valence.
Entry = tuple[frozenset[str], int | None]


@functools.lru_cache(maxsize=32)
def _read_library(path: str, mtime: float, valence: bool) -> dict[str, tuple[Entry, ...]]:
    entries: dict[str, list[Entry]] = {}
    lines = [line.split("#", 1)[0].split() for line in Path(path).read_text(errors="replace").splitlines()]
    for index, tokens in enumerate(lines):
        if len(tokens) < 2 or tokens[0].capitalize() not in atomic_numbers or not re.match(r"[A-Za-z]", tokens[1]):
            continue
        following = next((t for t in lines[index + 1 :] if t), [])  # a pseudopotential's electrons per l channel
        electrons = sum(int(t) for t in following) if following and all(t.isdigit() for t in following) else None
        names = frozenset(name.upper() for name in tokens[1:])
        entries.setdefault(tokens[0].capitalize(), []).append((names, electrons if valence else None))
    return {element: tuple(found) for element, found in entries.items()}


def library_entries(path: str | Path, valence: bool = False) -> dict[str, tuple[Entry, ...]]:
    """``{element: ((names, valence), ...)}`` of a CP2K basis set or pseudopotential file, in file order: the names
    and aliases on each entry's header line (``O  DZVP-MOLOPT-SR-GTH DZVP-MOLOPT-SR-GTH-q6``), upper case as CP2K
    compares them, and with ``valence`` (a pseudopotential file) the entry's electron count, else None. Plain-text
    parsing, cached per file and modification time.

    :raises OSError: the file cannot be read.
    """
    path = Path(path)
    return _read_library(str(path), path.stat().st_mtime, valence)


def find_entry(entries: dict[str, tuple[Entry, ...]], element: str, name: str) -> Entry | None:
    """The entry CP2K takes for ``element`` and ``name`` (the first that has the name), or None."""
    return next((entry for entry in entries.get(element, ()) if name.upper() in entry[0]), None)


def _made_for(names: frozenset[str]) -> int | None:
    """The valence a basis set entry was made for (from a ``-qN`` name), or None."""
    found = {int(match.group(1)) for match in (re.search(r"-Q(\d+)$", name) for name in names) if match}
    return found.pop() if len(found) == 1 else None


def _periodicity(structure: StructureData) -> str:
    pbc = tuple(bool(p) for p in structure.pbc)
    return "periodic" if all(pbc) else "isolated" if not any(pbc) else "mixed"


def check_structure(settings: Cp2kSettings, key: str, structure: StructureData) -> str | None:
    """Why CP2K cannot label ``structure`` (named ``key``) with ``settings``; None when it can."""
    periodicity = _periodicity(structure)
    if periodicity == "mixed":
        return (
            f"structure {key}: periodic along {[bool(p) for p in structure.pbc]}; the cp2k labeller takes "
            "structures periodic in all three directions or in none"
        )
    data_dir = Path(settings.data_dir)
    try:
        basis_sets = library_entries(data_dir / settings.basis_file)
        potentials = library_entries(data_dir / settings.potential_file, valence=True)
    except OSError as exc:
        return f"CP2K data file {exc.filename} cannot be read ({exc.strerror or exc}); is data_dir right?"
    symbols = [structure.get_kind(site.kind_name).symbol for site in structure.sites]
    electrons = -settings.charge
    for element in sorted(set(symbols)):
        basis = find_entry(basis_sets, element, settings.basis_set)
        if basis is None:
            return f"structure {key}: {settings.basis_file} has no basis set {settings.basis_set} for {element}"
        potential = find_entry(potentials, element, settings.pseudopotential)
        if potential is None:
            return (
                f"structure {key}: {settings.potential_file} has no pseudopotential {settings.pseudopotential} "
                f"for {element}"
            )
        valence, made_for = potential[1], _made_for(basis[0])
        if valence is None:
            return f"structure {key}: cannot read the valence of {settings.pseudopotential} for {element}"
        if made_for is not None and made_for != valence:
            return (
                f"structure {key}: basis set {settings.basis_set} of {element} is made for {made_for} valence "
                f"electrons, pseudopotential {settings.pseudopotential} has {valence}"
            )
        electrons += valence * symbols.count(element)
    if electrons < settings.multiplicity - 1 or (electrons - settings.multiplicity + 1) % 2:
        return (
            f"structure {key}: {electrons} electrons (charge {settings.charge}) cannot have multiplicity "
            f"{settings.multiplicity}"
        )
    if periodicity == "isolated":
        positions = np.array([site.position for site in structure.sites])
        extent = float((positions.max(axis=0) - positions.min(axis=0)).max())
        cell = np.array(structure.cell)
        if settings.box is None and np.abs(cell - np.diag(np.diag(cell))).max() > 1e-8:
            return f"structure {key}: a non-periodic structure needs an orthorhombic cell as its box (box: null)"
        edge = settings.box if settings.box is not None else float(np.diag(cell).min())
        if extent + 2 * settings.min_vacuum > edge + 1e-9:
            return (
                f"structure {key}: {extent:.2f} Å across, more than its box ({edge:.2f} Å) less "
                f"2 × min_vacuum ({settings.min_vacuum:g} Å)"
            )
    return None


# --- the CP2K input ---------------------------------------------------------------------------------------------
def cp2k_parameters(settings: Cp2kSettings, structure: StructureData, reference: StructureData | None = None) -> dict:
    """The CP2K input (aiida-cp2k's nested dict) of a single point with forces of ``structure``.

    aiida-cp2k writes the coordinates (kind names from the structure's tags) and, unless ``ABC`` is set here, the
    structure's cell vectors. A periodic structure with a ``reference`` cell (its ideal cell) gets that cell's grid
    (``CELL_REF``).
    """
    from aiida_cp2k.calculations import kind_names

    periodic = _periodicity(structure) == "periodic"
    scf: dict[str, Any] = {"EPS_SCF": settings.eps_scf, "MAX_SCF": settings.max_scf, "SCF_GUESS": "ATOMIC"}
    if settings.scf_method == "ot":
        scf["OT"] = {"MINIMIZER": "DIIS", "PRECONDITIONER": "FULL_ALL"}
        scf["OUTER_SCF"] = {"EPS_SCF": settings.eps_scf, "MAX_SCF": 10}
    else:
        scf["ADDED_MOS"] = 4
        scf["DIAGONALIZATION"] = {"ALGORITHM": "STANDARD"}
        scf["MIXING"] = {"METHOD": "BROYDEN_MIXING", "ALPHA": 0.5, "NBROYDEN": 8}
    xc: dict[str, Any] = {"XC_FUNCTIONAL": {"_": settings.functional}}
    if settings.xc_smoothing:
        xc["XC_GRID"] = {"XC_SMOOTH_RHO": "NN10", "XC_DERIV": "SPLINE2_SMOOTH"}
    if settings.dispersion != "none":
        xc["VDW_POTENTIAL"] = {
            "POTENTIAL_TYPE": "PAIR_POTENTIAL",
            "PAIR_POTENTIAL": {
                "TYPE": "DFTD3" if settings.dispersion == "D3" else "DFTD3(BJ)",
                "PARAMETER_FILE_NAME": settings.dftd3_file,
                "REFERENCE_FUNCTIONAL": settings.functional,
            },
        }
    dft: dict[str, Any] = {
        "BASIS_SET_FILE_NAME": settings.basis_file,
        "POTENTIAL_FILE_NAME": settings.potential_file,
        "CHARGE": settings.charge,
        "MULTIPLICITY": settings.multiplicity,
        "MGRID": {"CUTOFF": settings.cutoff, "REL_CUTOFF": settings.rel_cutoff, "NGRIDS": settings.ngrids},
        "QS": {"EPS_DEFAULT": settings.eps_default},
        "POISSON": {"PERIODIC": "XYZ"} if periodic else {"PERIODIC": "NONE", "POISSON_SOLVER": settings.poisson_solver},
        "SCF": scf,
        "XC": xc,
    }
    if settings.multiplicity > 1:
        dft["UKS"] = True
    cell: dict[str, Any] = {"PERIODIC": "XYZ" if periodic else "NONE"}
    subsys: dict[str, Any] = {"CELL": cell}
    if periodic and reference is not None:
        cell["CELL_REF"] = {
            axis: " ".join(f"{x:.10f}" for x in vector) for axis, vector in zip("ABC", reference.cell, strict=True)
        }
    if not periodic:
        if settings.box is not None:
            cell["ABC"] = f"{settings.box} {settings.box} {settings.box}"
        subsys["TOPOLOGY"] = {"CENTER_COORDINATES": {"_": "ON"}}
    atoms = structure.get_ase()
    kinds = dict(zip(kind_names(atoms), atoms.get_chemical_symbols(), strict=True))
    subsys["KIND"] = [
        {"_": name, "ELEMENT": symbol, "BASIS_SET": settings.basis_set, "POTENTIAL": settings.pseudopotential}
        for name, symbol in sorted(kinds.items())
    ]
    force_eval: dict[str, Any] = {"METHOD": "QS", "DFT": dft, "SUBSYS": subsys, "PRINT": {"FORCES": {"_": "ON"}}}
    if periodic and settings.stress:
        force_eval["STRESS_TENSOR"] = "ANALYTICAL"
        force_eval["PRINT"]["STRESS_TENSOR"] = {"_": "ON"}
    return {"GLOBAL": {"RUN_TYPE": "ENERGY_FORCE", "PRINT_LEVEL": "LOW"}, "FORCE_EVAL": force_eval}


# --- the label --------------------------------------------------------------------------------------------------
_FLOAT = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[EeDd][-+]?\d+)?"


def read_forces(output: str) -> np.ndarray:
    """Forces (eV/Å) of the last ``ATOMIC FORCES in [a.u.]`` block of a CP2K output.

    :raises ValueError: no such block (``&FORCE_EVAL &PRINT &FORCES`` unset).
    """
    blocks = output.split(" ATOMIC FORCES in [a.u.]")
    if len(blocks) < 2:
        raise ValueError("no ATOMIC FORCES block in the CP2K output (&FORCE_EVAL &PRINT &FORCES must be on)")
    rows = []
    for line in blocks[-1].splitlines()[1:]:
        tokens = line.split()
        if not tokens or tokens[0] == "#":
            continue
        if line.startswith(" SUM OF ATOMIC FORCES") or not tokens[0].isdigit():
            break
        rows.append([float(value) for value in tokens[3:6]])
    return np.array(rows, dtype=float).reshape(-1, 3) * (units.Hartree / units.Bohr)


def read_stress(output: str) -> np.ndarray | None:
    """Stress (3×3, eV/Å³, ASE's sign) of the last ``STRESS| Analytical stress tensor [GPa]`` block; None when the
    output has none. CP2K's stress has the sign of a pressure (positive under compression), ASE's the opposite."""
    blocks = re.split(r" STRESS\| (?:Analytical|Numerical) stress tensor \[GPa\]", output)
    if len(blocks) < 2:
        return None
    rows = {}
    for line in blocks[-1].splitlines()[1:6]:
        match = re.match(rf"\s*STRESS\|\s+([xyz])\s+({_FLOAT})\s+({_FLOAT})\s+({_FLOAT})\s*$", line)
        if match:
            rows[match.group(1)] = [float(value) for value in match.groups()[1:]]
    if sorted(rows) != ["x", "y", "z"]:
        raise ValueError("a STRESS block without its x, y and z rows in the CP2K output")
    return -np.array([rows["x"], rows["y"], rows["z"]]) * units.GPa


def read_label(parameters: dict, output: str) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Energy (eV), forces (eV/Å) and stress (eV/Å³, ASE sign, None if absent) from aiida-cp2k's parsed
    ``output_parameters`` (energy in Hartree) and the CP2K output text.

    :raises ValueError: no energy in Hartree, an SCF that did not converge, or no forces.
    """
    if parameters.get("energy_units", "a.u.") != "a.u.":
        raise ValueError(f"energy units {parameters['energy_units']!r}, expected 'a.u.' (Hartree)")
    if "SCF run NOT converged" in output:
        raise ValueError("the SCF did not converge (SCF run NOT converged)")
    energy = parameters.get("energy")
    energy = None if energy is None else float(energy) * units.Hartree
    return energy, read_forces(output), read_stress(output)


@calcfunction
def cp2k_label(parameters: Dict, retrieved: FolderData) -> LabelData:
    """The contract's label from a Cp2kCalculation's ``output_parameters`` and its ``retrieved`` output file."""
    output = retrieved.base.repository.get_object_content(OUTPUT_FILE)
    energy, forces, stress = read_label(parameters.get_dict(), output)
    return LabelData.build(energy, forces, stress, calculation_uuid=parameters.creator.uuid, code="cp2k")


class Cp2kLabelWorkChain(LabelWorkChain):
    """Label one structure with CP2K through aiida-cp2k's Cp2kBaseWorkChain (and its SCF restart handler)."""

    name = "cp2k"
    settings_model = Cp2kSettings
    protocol_model = Cp2kProtocol
    calc_job_plugins = ("cp2k",)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.inputs.validator = cls.validate_inputs
        spec.outline(cls.run_cp2k, cls.inspect_cp2k)

    @classmethod
    def validate_inputs(cls, inputs: dict, _=None) -> str | None:
        """The structure against the settings (the launch checks), once both are valid."""
        if "structure" not in inputs or "settings" not in inputs or cls.validate_settings(inputs["settings"]):
            return None  # the ports' own validators say what is wrong
        return cls.check_structures(inputs["settings"].get_dict(), {"structure": inputs["structure"]})

    # --- hooks --------------------------------------------------------------------------------------------------
    @classmethod
    def check_structures(cls, settings: dict, structures: dict) -> str | None:
        try:
            model = cls.load_settings(settings)
        except Exception as exc:  # ConfigError: the settings port says the same at launch
            return f"{cls.name} settings: {exc}"
        for key in sorted(structures):
            message = check_structure(model, key, structures[key])
            if message:
                return message
        return None

    @classmethod
    def fixed_inputs(cls, cell: StructureData, settings: Dict, label: str) -> dict:
        """A periodic ideal cell itself (``reference_cell``): its strained, rattled and MD copies are labelled on its
        grid (``CELL_REF``). CP2K sizes the grid from the cell, so a strained copy would otherwise get a few more or
        fewer points and an energy off the smooth E(V) curve (by 0.12 eV for a 0.3 % compression of a 4.5 Å water cell,
        whose grid went from 60³ to 54³ points)."""
        return {"reference_cell": cell} if _periodicity(cell) == "periodic" else {}

    @classmethod
    def settings_from_protocol(cls, entries: dict, code, structure: StructureData) -> dict:
        """Settings of the protocol's ``preset`` (:data:`PRESETS`) with the protocol's entries over them."""
        protocol = Cp2kProtocol.model_validate(entries or {})
        given = {name: getattr(protocol, name) for name in protocol.model_fields_set if name != "preset"}
        merged = {**_PRESET_COMMON, **PRESETS[protocol.preset], **given}
        return Cp2kSettings.model_validate(merged).model_dump()

    # --- the outline --------------------------------------------------------------------------------------------
    def run_cp2k(self):
        settings = self.load_settings(self.inputs.settings.get_dict())
        structure = self.inputs.structure
        reference = self.inputs.get("fixed", {}).get("reference_cell")
        options = {"resources": {"num_machines": 1}, **self.inputs.options.get_dict()}
        inputs = AttributeDict(
            {
                "cp2k": {
                    "code": self.inputs.code,
                    "structure": structure,
                    "parameters": Dict(cp2k_parameters(settings, structure, reference)),
                    "metadata": {"options": options},
                },
                "max_iterations": Int(settings.max_iterations),
                "clean_workdir": Bool(settings.clean_workdir),
                # an SCF that stopped unconverged or a killed run: continue from its wavefunction
                "handler_overrides": Dict({"restart_incomplete_calculation": {"enabled": True}}),
                "metadata": {"call_link_label": "cp2k_base"},
            }
        )
        return ToContext(cp2k_base=self.submit(Cp2kBaseWorkChain, **inputs))

    def inspect_cp2k(self):
        node = self.ctx.cp2k_base
        process = {"process": "Cp2kBaseWorkChain", "pk": node.pk}
        if not node.is_finished_ok:
            message = f"exit status {node.exit_status}: {node.exit_message}"
            return self.exit_codes.ERROR_CALCULATION_FAILED.format(message=message, **process)
        parameters, retrieved = node.outputs.output_parameters, node.outputs.retrieved
        try:
            output = retrieved.base.repository.get_object_content(OUTPUT_FILE)
            energy, forces, stress = read_label(parameters.get_dict(), output)
            LabelData.build(energy, forces, stress, calculation_uuid="", code=self.name)
            if forces.shape[0] != len(self.inputs.structure.sites):
                raise ValueError(
                    f"forces on {forces.shape[0]} atoms, the structure has {len(self.inputs.structure.sites)}"
                )
        except (ValueError, OSError) as exc:  # checked here so that the calcfunction below never fails
            return self.exit_codes.ERROR_INVALID_LABEL.format(reason=str(exc), **process)
        self.out("label", cp2k_label(parameters, retrieved, metadata={"call_link_label": "label"}))
        return None
