"""Provenance steps of the validation of a potential on physical properties (:mod:`aiida_annpot.workflows.validation`).

``validation_structures`` makes the structures of the requested properties from the input cell, ``evaluate_potential``
computes the potential's energies of them in-process, and ``compare_properties`` turns the reference labels
(:class:`~aiida_annpot.data.label.LabelData`, whatever code made them), those energies and the NVE frames into the
properties, DFT and potential side by side. The analysis itself is :mod:`aiida_annpot.core.properties` (no AiiDA, no
torch).
"""

from __future__ import annotations

import numpy as np
from aiida.engine import calcfunction
from aiida.orm import ArrayData, Dict, SinglefileData, StructureData

from ..common.config import ValidationConfig, load_config
from ..core import generate, properties
from ..data.label import LabelData
from ..data.potential import AnnPotential
from .testset import finite

__all__ = ["compare_properties", "eos_keys", "evaluate_potential", "validation_structures"]

#: Keys of the two cells of the vacancy and of the MD start structure among the validation structures.
VACANCY_PERFECT, VACANCY_DEFECT, MD_START = "vacancy_perfect", "vacancy_defect", "md_start"


def eos_keys(points: int) -> list[str]:
    """Keys of the equation-of-state structures, smallest volume first."""
    return [f"eos_{index:02d}" for index in range(points)]


@calcfunction
def validation_structures(structure: StructureData, config: Dict) -> dict:
    """The structures of the properties ``config`` (ValidationConfig) asks for, made from ``structure``.

    ``eos_00``, … (volume scaled isotropically, smallest first), ``vacancy_perfect`` and ``vacancy_defect`` (the
    vacancy supercell without and with atom ``site`` removed) and ``md_start`` (the MD supercell).
    """
    settings = load_config(config.get_dict(), ValidationConfig)
    atoms = structure.get_ase()
    made = {}
    if "equation_of_state" in settings.properties:
        eos = settings.equation_of_state
        factors = properties.volume_factors(eos.points, eos.max_volume_strain)
        made.update(zip(eos_keys(eos.points), properties.scaled_cells(atoms, factors), strict=True))
    if "vacancy" in settings.properties:
        made[VACANCY_PERFECT], made[VACANCY_DEFECT] = properties.vacancy_cells(
            atoms, settings.vacancy.supercell, settings.vacancy.site
        )
    if "md_stability" in settings.properties:
        made[MD_START] = generate.supercell(atoms, tuple(settings.md_stability.supercell))
    return {key: StructureData(ase=frame) for key, frame in made.items()}


@calcfunction
def evaluate_potential(potential: AnnPotential, **structures) -> dict:
    """The potential's (committee mean) energy in eV of every structure, and how far each structure's descriptors
    leave the training ranges (its extrapolation grade, 0 inside), both keyed like ``structures``.

    :returns: ``energies`` and ``extrapolation`` (Dicts).
    """
    calculator = potential.calculator(dtype="float64")  # imports torch
    energies, grades = {}, {}
    for key, structure in sorted(structures.items()):
        atoms = structure.get_ase()
        atoms.calc = calculator
        energies[key] = float(atoms.get_potential_energy())
        grades[key] = float(calculator.get_property("extrapolation", atoms))
    return {"energies": Dict(energies), "extrapolation": Dict(grades)}


def _dft_energy(label: LabelData, key: str) -> float:
    if label.energy is None:
        raise ValueError(f"{key}: the reference label has no energy")
    return float(label.energy)


def _equation_of_state(labels: dict, ann: dict, points: int) -> tuple[dict, ArrayData]:
    """BM fits of DFT and potential energies per atom; the properties entry and the curve to plot."""
    keys = eos_keys(points)
    structures = [labels[key]["structure"] for key in keys]
    atoms = np.array([len(s.sites) for s in structures])
    volumes = np.array([s.get_cell_volume() for s in structures]) / atoms
    curves = {
        "dft": np.array([_dft_energy(labels[key]["label"], key) for key in keys]) / atoms,
        "ann": np.array([ann[key] for key in keys]) / atoms,
    }
    fits, fit_errors = {}, {}
    for source, energies in curves.items():
        try:
            fits[source] = properties.fit_birch_murnaghan(volumes, energies)
        except ValueError as exc:
            fit_errors[source] = str(exc)

    def value(source: str, name: str):
        return getattr(fits[source], name) if source in fits else None

    def side_by_side(name: str, relative: bool = False) -> dict:
        return properties.compare(value("dft", name), value("ann", name), relative=relative)

    entry = {
        "equilibrium_volume_A3_per_atom": side_by_side("volume", relative=True),
        "bulk_modulus_GPa": side_by_side("bulk_modulus", relative=True),
        "bulk_modulus_derivative": side_by_side("bulk_modulus_derivative"),
        "equilibrium_energy_eV_per_atom": side_by_side("energy"),
        "minimum_within_volumes": {source: value(source, "bracketed") for source in curves},
        "points": points,
        "volume_range_A3_per_atom": [float(volumes.min()), float(volumes.max())],
    }
    if fit_errors:
        entry["fit_errors"] = fit_errors
    curve = ArrayData()
    curve.set_array("volume_per_atom", volumes)
    curve.set_array("dft_energy_per_atom", curves["dft"])
    curve.set_array("ann_energy_per_atom", curves["ann"])
    return entry, curve


def _vacancy(labels: dict, ann: dict, settings: ValidationConfig) -> dict:
    """Unrelaxed vacancy formation energy from DFT and from the potential."""
    n_atoms = len(labels[VACANCY_PERFECT]["structure"].sites)
    dft = properties.vacancy_formation_energy(
        _dft_energy(labels[VACANCY_PERFECT]["label"], VACANCY_PERFECT),
        n_atoms,
        _dft_energy(labels[VACANCY_DEFECT]["label"], VACANCY_DEFECT),
    )
    potential = properties.vacancy_formation_energy(ann[VACANCY_PERFECT], n_atoms, ann[VACANCY_DEFECT])
    return {
        "unrelaxed_formation_energy_eV": properties.compare(dft, potential),
        "supercell": list(settings.vacancy.supercell),
        "site": settings.vacancy.site,
        "atoms_perfect_cell": n_atoms,
    }


def _md_stability(frames: SinglefileData, summary: Dict, settings: ValidationConfig) -> tuple[dict, ArrayData]:
    """Drift and closest approach of the NVE frames; the properties entry and the total energy against time."""
    from ..core.explored import read_explored_frames

    md = settings.md_stability
    with frames.as_path() as path:
        recorded, _ = read_explored_frames(path)
    trajectory = summary.get_dict()["trajectories"][0]
    completed = trajectory["reason"] == "completed" and trajectory["steps"] == md.steps
    result = properties.md_stability(recorded, md.timestep, completed, md.max_drift, md.min_distance)
    entry = {
        key: result[key] for key in ("energy_drift_meV_per_atom_per_ps", "min_distance_A", "duration_ps", "stable")
    }
    entry.update(
        {
            "completed": completed,
            "stop_reason": trajectory["reason"],
            "frames": len(recorded),
            "atoms": len(recorded[0]) if recorded else None,
            "temperature_K": md.temperature,
            "max_drift_meV_per_atom_per_ps": md.max_drift,
            "min_distance_threshold_A": md.min_distance,
        }
    )
    energy = ArrayData()
    energy.set_array("time_ps", result["times_ps"])
    energy.set_array("total_energy_per_atom", result["total_energy_per_atom_eV"])
    return entry, energy


def _labels(kwargs: dict) -> dict[str, dict]:
    labels: dict[str, dict] = {}
    for name, node in kwargs.items():
        part, _, key = name.partition("_")
        if part not in ("structure", "label") or not key:
            raise ValueError(f"unexpected input {name!r}: expected structure_<key> and label_<key>")
        labels.setdefault(key, {})[part] = node
    return labels


@calcfunction
def compare_properties(
    config: Dict,
    ann_energies: Dict | None = None,
    extrapolation: Dict | None = None,
    md_frames: SinglefileData | None = None,
    md_summary: Dict | None = None,
    **labels,
) -> dict:
    """Properties of DFT and of the potential side by side, with errors ANN − DFT (relative for V0 and B).

    :param config: the ValidationConfig settings.
    :param ann_energies: the potential's energies (eV) by structure key, from :func:`evaluate_potential`.
    :param extrapolation: the structures' extrapolation grades by key, from :func:`evaluate_potential`: each DFT
        property then carries ``max_extrapolation_grade`` over its structures (above ~0.01 the potential is
        extrapolating there, so a large error is expected).
    :param md_frames: the frames of the NVE run (``annpot explore``), with ``md_summary`` its summary.
    :param labels: per DFT structure key ``structure_<key>`` and ``label_<key>`` (its reference label).
    :returns: ``properties`` (Dict), and ``equation_of_state`` (volumes and energies per atom) and ``md_energy``
        (total energy per atom against time) as ArrayData when those properties were asked for.
    """
    settings = load_config(config.get_dict(), ValidationConfig)
    labels = _labels(labels)
    ann = ann_energies.get_dict() if ann_energies is not None else {}
    result = {
        "units": {
            "volume": "Å³/atom",
            "energy": "eV (per atom where named)",
            "bulk_modulus": "GPa",
            "drift": "meV/atom/ps",
            "distance": "Å",
        },
        "errors": "error = ANN − DFT; relative_error = (ANN − DFT) / DFT",
    }
    outputs = {}
    if "equation_of_state" in settings.properties:
        result["equation_of_state"], outputs["equation_of_state"] = _equation_of_state(
            labels, ann, settings.equation_of_state.points
        )
    if "vacancy" in settings.properties:
        result["vacancy"] = _vacancy(labels, ann, settings)
    if extrapolation is not None:
        grades = extrapolation.get_dict()
        result["extrapolation"] = grades
        for name, prefix in (("equation_of_state", "eos_"), ("vacancy", "vacancy_")):
            if name in result:
                result[name]["max_extrapolation_grade"] = max(v for k, v in grades.items() if k.startswith(prefix))
    if "md_stability" in settings.properties:
        result["md_stability"], outputs["md_energy"] = _md_stability(md_frames, md_summary, settings)
    outputs["properties"] = Dict(finite(result))
    return outputs
