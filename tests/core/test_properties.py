"""Tests for the property analysis of :mod:`aiida_annpot.core.properties`: Birch–Murnaghan fits, vacancy formation
energy, energy drift and the MD stability verdict, on synthetic data with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.eos import birchmurnaghan
from ase.neighborlist import neighbor_list

from aiida_annpot.core.properties import (
    compare,
    energy_drift,
    fit_birch_murnaghan,
    md_stability,
    scaled_cells,
    vacancy_cells,
    vacancy_formation_energy,
    volume_factors,
)

#: Silicon-like Birch–Murnaghan parameters: V0 (Å³/atom), E0 (eV/atom), B0 (GPa), B0'.
V0, E0, B0, BP = 20.0, -107.5, 95.0, 4.2


def _bm_energies(volumes: np.ndarray) -> np.ndarray:
    return birchmurnaghan(volumes, E0, B0 * units.GPa, BP, V0)


# --- equation of state ----------------------------------------------------------------------------------------------


def test_volume_factors_span_the_strain_and_include_the_ideal_cell():
    factors = volume_factors(7, 0.08)
    assert factors == pytest.approx([0.92, 0.94666667, 0.97333333, 1.0, 1.02666667, 1.05333333, 1.08])
    assert volume_factors(5, 0.1)[2] == 1.0


def test_scaled_cells_scale_the_volume_and_keep_fractional_positions():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    factors = volume_factors(5, 0.08)
    copies = scaled_cells(atoms, factors)
    for factor, copy in zip(factors, copies, strict=True):
        assert copy.get_volume() == pytest.approx(factor * atoms.get_volume(), rel=1e-12)
        assert copy.get_scaled_positions() == pytest.approx(atoms.get_scaled_positions(), abs=1e-12)
        assert copy.cell.angles() == pytest.approx(atoms.cell.angles())


def test_fit_recovers_known_birch_murnaghan_parameters():
    volumes = V0 * volume_factors(7, 0.08)
    fit = fit_birch_murnaghan(volumes, _bm_energies(volumes))
    assert fit.volume == pytest.approx(V0, rel=1e-6)
    assert fit.energy == pytest.approx(E0, abs=1e-8)
    assert fit.bulk_modulus == pytest.approx(B0, rel=1e-5)
    assert fit.bulk_modulus_derivative == pytest.approx(BP, rel=1e-4)
    assert fit.bracketed
    assert fit.energy_at(volumes) == pytest.approx(_bm_energies(volumes), abs=1e-9)


def test_fit_with_noise_stays_close_and_per_atom_scaling_keeps_the_bulk_modulus():
    volumes = V0 * volume_factors(9, 0.08)
    noisy = _bm_energies(volumes) + np.random.default_rng(0).normal(0.0, 2e-4, volumes.size)  # 0.2 meV/atom
    fit = fit_birch_murnaghan(volumes, noisy)
    assert fit.volume == pytest.approx(V0, rel=2e-3) and fit.bulk_modulus == pytest.approx(B0, rel=0.05)
    per_cell = fit_birch_murnaghan(8 * volumes, 8 * noisy)  # B = V d²E/dV² does not depend on the cell size
    assert per_cell.bulk_modulus == pytest.approx(fit.bulk_modulus, rel=1e-6)
    assert per_cell.volume == pytest.approx(8 * fit.volume, rel=1e-6)


def test_a_minimum_outside_the_volumes_is_flagged():
    volumes = V0 * np.linspace(1.05, 1.2, 6)  # all expanded: the energy only rises
    fit = fit_birch_murnaghan(volumes, _bm_energies(volumes))
    assert not fit.bracketed
    assert fit.volume == pytest.approx(V0, rel=1e-3)


@pytest.mark.parametrize(
    ("volumes", "energies", "fragment"),
    [
        ([1.0, 2.0, 3.0, 4.0], [0.0, -1.0, -1.0, 0.0], "at least 5"),
        ([18.0, 19.0, 20.0, 21.0, math.nan], [0.0, -0.1, -0.2, -0.1, 0.0], "must be finite"),
        ([18.0, 19.0, 20.0, 21.0, 22.0], [0.0, 0.5, 1.0, 1.5, 2.0], "Birch–Murnaghan"),
        ([18.0, 19.0, 20.0, 21.0, 22.0], [0.0, -0.5, -1.0, -1.5, -2.0], "Birch–Murnaghan"),
        (V0 * np.linspace(1.15, 1.25, 5), _bm_energies(V0 * np.linspace(1.15, 1.25, 5)), "farther outside"),
    ],
    ids=["too_few", "nan", "rising", "falling", "far_from_minimum"],
)
def test_unusable_data_is_refused_with_a_reason(volumes, energies, fragment):
    with pytest.raises(ValueError, match=fragment):
        fit_birch_murnaghan(volumes, energies)


# --- vacancy ----------------------------------------------------------------------------------------------------------


def test_vacancy_cells_remove_exactly_the_named_site():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    perfect, defect = vacancy_cells(atoms, [2, 1, 1], 5)
    assert len(perfect) == 16 and len(defect) == 15
    assert np.allclose(defect.cell.array, perfect.cell.array)
    kept = np.delete(perfect.positions, 5, axis=0)
    assert defect.positions == pytest.approx(kept)


@pytest.mark.parametrize(
    ("repeat", "site", "fragment"),
    [([1, 1, 1], 0, "a vacancy needs at least 2 atoms"), ([2, 1, 1], 2, "site 2 is out of range")],
)
def test_vacancy_cells_refuse_impossible_vacancies(repeat, site, fragment):
    with pytest.raises(ValueError, match=fragment):
        vacancy_cells(bulk("Cu", "fcc", a=3.61), repeat, site)


def test_formation_energy_is_zero_for_independent_atoms():
    assert vacancy_formation_energy(8 * -3.5, 8, 7 * -3.5) == pytest.approx(0.0, abs=1e-12)


def test_formation_energy_of_a_bond_counting_model_is_half_the_broken_bonds():
    """E = −ε·(number of bonds): removing one 4-fold coordinated atom breaks 4 bonds, and E_f = 4ε/2 = 2ε."""
    epsilon = 2.3

    def bond_energy(atoms: Atoms) -> float:
        first, _ = neighbor_list("ij", atoms, 2.5)  # diamond Si: first neighbours at 2.35 Å
        return -epsilon * len(first) / 2

    perfect, defect = vacancy_cells(bulk("Si", "diamond", a=5.43, cubic=True), [2, 2, 2], 13)
    formation = vacancy_formation_energy(bond_energy(perfect), len(perfect), bond_energy(defect))
    assert formation == pytest.approx(2 * epsilon)


def test_formation_energy_needs_two_atoms():
    with pytest.raises(ValueError, match="at least 2 atoms"):
        vacancy_formation_energy(-3.5, 1, 0.0)


# --- MD stability -----------------------------------------------------------------------------------------------------


def test_energy_drift_recovers_the_slope_of_noisy_data():
    times = np.linspace(0.0, 2.0, 200)
    energies = -4.0 + 0.003 * times + np.random.default_rng(1).normal(0.0, 1e-4, times.size)
    assert energy_drift(times, energies) == pytest.approx(0.003, abs=1e-4)
    with pytest.raises(ValueError, match="2 distinct times"):
        energy_drift([1.0], [0.0])


def _frames(drift_mev_per_ps: float, closest: float, count: int = 50, timestep: float = 2.0) -> list[Atoms]:
    """NVE-like frames: potential and kinetic energy exchange, the total per atom rises by ``drift`` meV/ps."""
    rng = np.random.default_rng(2)
    frames = []
    for index in range(1, count + 1):
        step = 5 * index
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.set_momenta(rng.normal(0.0, 0.5, (len(atoms), 3)))
        kinetic = atoms.get_kinetic_energy()
        total = len(atoms) * (-4.0 + 1e-3 * drift_mev_per_ps * step * timestep / 1000.0)
        atoms.info.update({"step": step, "energy": total - kinetic, "min_distance": closest + 0.01 * index})
        frames.append(atoms)
    return frames


def test_md_stability_reads_total_energy_from_potential_energy_and_momenta():
    result = md_stability(_frames(0.4, 2.2), timestep=2.0, completed=True, max_drift=1.0, min_distance=1.5)
    assert result["energy_drift_meV_per_atom_per_ps"] == pytest.approx(0.4, rel=1e-6)
    assert result["min_distance_A"] == pytest.approx(2.21)
    assert result["duration_ps"] == pytest.approx(0.5)
    assert result["stable"]
    assert np.ptp(result["total_energy_per_atom_eV"]) == pytest.approx(0.4e-3 * 0.49, rel=1e-6)


@pytest.mark.parametrize(
    ("drift", "closest", "completed"),
    [(-1.5, 2.2, True), (0.1, 1.2, True), (0.1, 2.2, False)],
    ids=["drift", "too_close", "incomplete"],
)
def test_md_stability_fails_on_any_criterion(drift, closest, completed):
    result = md_stability(_frames(drift, closest), timestep=2.0, completed=completed, max_drift=1.0, min_distance=1.5)
    assert not result["stable"]


def test_md_stability_without_frames_is_not_stable():
    result = md_stability([], timestep=1.0, completed=False, max_drift=1.0, min_distance=1.5)
    assert not result["stable"] and math.isnan(result["energy_drift_meV_per_atom_per_ps"])


def test_compare_gives_ann_minus_dft_and_relative_errors():
    assert compare(90.0, 99.0, relative=True) == {"dft": 90.0, "ann": 99.0, "error": 9.0, "relative_error": 0.1}
    assert compare(1.0, math.nan) == {"dft": 1.0, "ann": None, "error": None}
    assert compare(0.0, 1.0, relative=True)["relative_error"] is None
