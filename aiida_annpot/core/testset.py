"""Scoring a potential on an independent test set: errors per kind of structure, and physical properties derived
from the test frames (Birch–Murnaghan V0 and B0 of an energy–volume series, the unrelaxed vacancy formation
energy), DFT and potential side by side. Pure numpy/ASE (no torch, no AiiDA): predictions come in as arrays.

A test frame is described by its ``kind`` (how it was made: ``volume``, ``rattle100``, ``vacancy``, ``md``, …)
and its ``group`` (the input structure it was made from): properties are computed per group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms

from .properties import compare, fit_birch_murnaghan, vacancy_formation_energy

__all__ = ["TestFrame", "score_test_set", "targets_unmet"]

#: Kinds that make the properties: the energy–volume series, the perfect vacancy cell and its unrattled vacancies.
VOLUME, VACANCY_HOST, VACANCY, IDEAL = "volume", "vacancyhost", "vacancy", "ideal"

#: Test targets a campaign may set: meV/atom, eV/Å, relative errors of V0 and B0, eV for the vacancy energy.
TARGET_KEYS = ("energy_rmse", "force_rmse", "volume_error", "bulk_modulus_error", "vacancy_error")


@dataclass
class TestFrame:
    """One labelled test frame with the potential's prediction."""

    __test__ = False  # not a pytest class

    atoms: Atoms  # with the DFT energy (eV) and forces (eV/Å) as single-point results
    kind: str
    group: str
    energy: float  # the potential's energy, eV
    forces: np.ndarray  # (N, 3) the potential's forces, eV/Å
    extrapolation: float = 0.0


def _errors(frames: Sequence[TestFrame]) -> dict:
    """Energy RMSE / MAE (meV/atom) and force-component RMSE / MAE (eV/Å) over ``frames``."""
    de = np.array([(f.energy - f.atoms.get_potential_energy()) / len(f.atoms) for f in frames]) * 1000.0
    df = np.concatenate([(f.forces - f.atoms.get_forces()).ravel() for f in frames])
    return {
        "frames": len(frames),
        "energy_rmse": float(np.sqrt(np.mean(de**2))),
        "energy_mae": float(np.abs(de).mean()),
        "force_rmse": float(np.sqrt(np.mean(df**2))),
        "force_mae": float(np.abs(df).mean()),
        "max_extrapolation": float(max(f.extrapolation for f in frames)),
    }


def _equation_of_state(frames: Sequence[TestFrame]) -> dict:
    """V0 and B0 of DFT and the potential from the frames of one energy–volume series (plus the ideal cell)."""
    volumes = np.array([f.atoms.get_volume() / len(f.atoms) for f in frames])
    order = np.argsort(volumes)
    curves = {
        "dft": np.array([f.atoms.get_potential_energy() / len(f.atoms) for f in frames])[order],
        "ann": np.array([f.energy / len(f.atoms) for f in frames])[order],
    }
    entry: dict = {
        "points": len(frames),
        "volume_per_atom": volumes[order].tolist(),
        "dft_energy_per_atom": curves["dft"].tolist(),
        "ann_energy_per_atom": curves["ann"].tolist(),
    }
    fits = {}
    for source, energies in curves.items():
        try:
            fits[source] = fit_birch_murnaghan(volumes[order], energies)
        except ValueError as exc:
            entry.setdefault("fit_errors", {})[source] = str(exc)

    def side_by_side(name: str) -> dict:
        values = [getattr(fits[s], name) if s in fits else None for s in ("dft", "ann")]
        return compare(*values, relative=True)

    entry["equilibrium_volume_A3_per_atom"] = side_by_side("volume")
    entry["bulk_modulus_GPa"] = side_by_side("bulk_modulus")
    return entry


def _vacancy(host: TestFrame, defects: Sequence[TestFrame]) -> dict:
    """Unrelaxed vacancy formation energy, DFT and potential, averaged over the vacancy sites."""
    n = len(host.atoms)
    dft = [
        vacancy_formation_energy(host.atoms.get_potential_energy(), n, d.atoms.get_potential_energy()) for d in defects
    ]
    ann = [vacancy_formation_energy(host.energy, n, d.energy) for d in defects]
    return {
        "unrelaxed_formation_energy_eV": compare(float(np.mean(dft)), float(np.mean(ann))),
        "sites": len(defects),
        "atoms_perfect_cell": n,
    }


def _vacancy_of(members: Sequence[TestFrame]) -> dict | None:
    """The vacancy entry of one group: the perfect vacancy cell (or an ideal cell of that size) paired with the
    unrattled vacancies of one atom fewer; perfect vacancy cells are preferred over ideal cells."""
    defects = [f for f in members if f.kind == VACANCY]
    hosts = sorted((f for f in members if f.kind in (VACANCY_HOST, IDEAL)), key=lambda f: f.kind != VACANCY_HOST)
    for host in hosts:
        paired = [d for d in defects if len(d.atoms) == len(host.atoms) - 1]
        if paired:
            return _vacancy(host, paired)
    return None


def score_test_set(frames: Sequence[TestFrame]) -> dict:
    """Errors overall and per kind, and per group the equation of state (with ≥ 5 volumes) and the vacancy
    formation energy (with a perfect vacancy cell, or an ideal cell of the same size, and unrattled vacancies).
    No frames give an overall entry with ``frames`` 0 and no figures.

    :returns: ``overall``, ``kinds`` (kind → errors), ``properties`` (group → ``equation_of_state``, ``vacancy``).
    """
    if not frames:  # e.g. every test frame is also a training frame: nothing to score, every target missed
        empty = dict.fromkeys(("energy_rmse", "energy_mae", "force_rmse", "force_mae", "max_extrapolation"))
        return {"overall": {"frames": 0, **empty}, "kinds": {}, "properties": {}}
    result = {"overall": _errors(frames), "kinds": {}, "properties": {}}
    for kind in sorted({f.kind for f in frames}):
        result["kinds"][kind] = _errors([f for f in frames if f.kind == kind])
    for group in sorted({f.group for f in frames}):
        members = [f for f in frames if f.group == group]
        entry = {}
        series = [f for f in members if f.kind == VOLUME]
        series += [f for f in members if f.kind == IDEAL and series and len(f.atoms) == len(series[0].atoms)]
        if len(series) >= 5:
            entry["equation_of_state"] = _equation_of_state(series)
        vacancy = _vacancy_of(members)
        if vacancy is not None:
            entry["vacancy"] = vacancy
        if entry:
            result["properties"][group] = entry
    return result


def headline(score: dict) -> dict:
    """The figures a campaign's convergence rule and status row use: overall energy and force RMSE, and the worst
    relative V0 and B0 errors and vacancy error (eV) over the groups (None where not computed)."""

    def worst(path: tuple[str, str], key: str) -> float | None:
        values = []
        for entry in score["properties"].values():
            if path[0] in entry:
                value = entry[path[0]][path[1]][key]
                values.append(math.inf if value is None else abs(value))
        return max(values) if values else None

    overall = score["overall"]
    return {
        "energy_rmse": overall["energy_rmse"],
        "force_rmse": overall["force_rmse"],
        "volume_error": worst(("equation_of_state", "equilibrium_volume_A3_per_atom"), "relative_error"),
        "bulk_modulus_error": worst(("equation_of_state", "bulk_modulus_GPa"), "relative_error"),
        "vacancy_error": worst(("vacancy", "unrelaxed_formation_energy_eV"), "error"),
    }


def targets_unmet(figures: dict, targets: dict) -> list[str]:
    """Readable phrases for every target in ``targets`` that ``figures`` (from :func:`headline`) misses; a figure
    that could not be computed misses its target; a target of None is switched off."""
    unmet = []
    for key, target in sorted(targets.items()):
        if target is None:  # switched off
            continue
        value = figures.get(key)
        if value is None or not math.isfinite(value) or value > target:
            shown = "n/a" if value is None else f"{value:.4g}"
            unmet.append(f"test {key} {shown} > {target:g}")
    return unmet
