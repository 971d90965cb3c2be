"""``merge_dataset``: DFT results of PwCalculations become frames of an AtomisticDataset, with provenance.

Per label three inputs with one suffix: ``structure_<k>`` (the calculation's input structure), ``parameters_<k>``
(its ``output_parameters``) and ``trajectory_<k>`` (its ``output_trajectory``). A label is accepted only when the
PwCalculation that made it finished OK (the SCF converged) and its energy and forces are finite. Units become the
engine's: energy eV, forces eV/Å, stress eV/Å³ with ASE's sign (Quantum ESPRESSO prints stress with the opposite
sign, in GPa once aiida-quantumespresso has parsed it). A frame whose structure is already in the dataset (or came
earlier in the same call) is dropped as a duplicate, and one that fails the dataset's checks (overlapping atoms, for
instance) is rejected alone, never the whole merge. Every rejected label is listed with its reason. Each frame keeps
its label suffix as its name (``AtomisticDataset.names``).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from aiida.engine import calcfunction
from aiida.orm import Dict, StructureData
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator

from ..data.dataset import AtomisticDataset

__all__ = ["label_to_frame", "merge_dataset", "structure_key"]

_LABEL_PARTS = ("structure", "parameters", "trajectory")
#: Positions and cells are compared after rounding to this many decimals (Å) to detect duplicate structures.
_DECIMALS = 6


def structure_key(atoms: Atoms) -> str:
    """A hash of numbers, cell, periodicity and positions (rounded to 1e-6 Å): equal for the same structure."""
    digest = hashlib.sha256()
    for array in (atoms.numbers.astype(np.int64), atoms.pbc.astype(np.int8),
                  np.round(atoms.cell.array, _DECIMALS) + 0.0, np.round(atoms.positions, _DECIMALS) + 0.0):  # fmt: skip
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def label_to_frame(structure: StructureData, parameters: dict, trajectory) -> Atoms:
    """One labelled frame from a PwCalculation's input structure and parsed outputs.

    :raises ValueError: missing or non-finite energy or forces, or units other than eV and eV/Å.
    """
    energy = parameters.get("energy")
    if energy is None or not math.isfinite(energy):
        raise ValueError(f"no finite total energy in output_parameters (energy = {energy})")
    if parameters.get("energy_units", "eV") != "eV":
        raise ValueError(f"energy units {parameters['energy_units']!r}, expected 'eV'")
    if "forces" not in trajectory.get_arraynames():
        raise ValueError("no forces in output_trajectory (tprnfor must be set)")
    forces = np.asarray(trajectory.get_array("forces"))[-1]
    atoms = structure.get_ase()
    if forces.shape != (len(atoms), 3) or not np.isfinite(forces).all():
        raise ValueError(f"forces of shape {forces.shape} or not finite, for {len(atoms)} atoms")
    results = {"energy": float(energy), "free_energy": float(energy), "forces": forces}
    if "stress" in trajectory.get_arraynames():
        stress_gpa = np.asarray(trajectory.get_array("stress"))[-1]
        if np.isfinite(stress_gpa).all():
            results["stress"] = -stress_gpa * units.GPa  # QE's sign convention is the opposite of ASE's
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _labels(kwargs: dict) -> dict[str, dict]:
    labels: dict[str, dict] = {}
    for key, node in kwargs.items():
        part, _, suffix = key.partition("_")
        if part not in _LABEL_PARTS or not suffix:
            raise ValueError(f"unexpected input {key!r}: expected structure_<k>, parameters_<k>, trajectory_<k>")
        labels.setdefault(suffix, {})[part] = node
    for suffix, parts in labels.items():
        missing = [part for part in _LABEL_PARTS if part not in parts]
        if missing:
            raise ValueError(f"label {suffix} lacks {', '.join(f'{part}_{suffix}' for part in missing)}")
    return dict(sorted(labels.items()))


@calcfunction
def merge_dataset(dataset: AtomisticDataset | None = None, **labels) -> dict:
    """Append converged DFT labels to ``dataset`` (or start a new one); outputs ``dataset`` and ``rejected``.

    ``rejected`` maps the label suffix to ``{"structure": uuid, "reason": str}``. With no usable frame at all (no
    previous dataset and every label rejected) there is no ``dataset`` output.
    """
    from ..core.dataset import validate_labelled

    frames = dataset.to_frames() if dataset is not None else []
    sources = dataset.sources if dataset is not None else []
    names = dataset.names if dataset is not None else []
    seen = {structure_key(frame) for frame in frames}
    rejected = {}
    for suffix, parts in _labels(labels).items():
        calculation = parts["parameters"].creator
        reason = None
        if calculation is None or not calculation.is_finished_ok:
            status = None if calculation is None else calculation.exit_status
            reason = f"the calculation did not finish successfully (exit status {status})"
        else:
            try:
                frame = label_to_frame(parts["structure"], parts["parameters"].get_dict(), parts["trajectory"])
                validate_labelled([frame], source=f"label {suffix}")  # one bad frame must not sink the others
            except ValueError as exc:  # InputDataError is a ValueError
                reason = str(exc)
        if reason is None:
            key = structure_key(frame)
            if key in seen:
                reason = "duplicate of a structure already in the dataset"
            else:
                seen.add(key)
                frames.append(frame)
                sources.append(calculation.uuid)
                names.append(suffix)
        if reason is not None:
            rejected[suffix] = {"structure": parts["structure"].uuid, "reason": reason}
    outputs = {"rejected": Dict(rejected)}
    if frames:
        outputs["dataset"] = AtomisticDataset.from_frames(frames, sources, names)
    return outputs
