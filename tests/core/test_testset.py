"""Scoring a potential on a test set (:mod:`aiida_annpot.core.testset`), on synthetic frames whose answers are known
exactly: Birch–Murnaghan curves with chosen V0 and B0, energy and force offsets with hand-computed RMSEs, and
vacancy cells whose formation energy is set by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.eos import birchmurnaghan

from aiida_annpot.core.testset import TARGET_KEYS, TestFrame, headline, score_test_set, targets_unmet

#: Silicon-like Birch–Murnaghan parameters of the "DFT" curve: V0 (Å³/atom), E0 (eV/atom), B0 (GPa), B0'.
V0, E0, B0, BP = 20.0, -5.4, 95.0, 4.2
#: Cohesive energy per atom (eV) of the vacancy cells.
E_ATOM = -5.4


def frame(
    n: int,
    kind: str,
    group: str = "si",
    dft: float = 0.0,
    ann: float = 0.0,
    volume: float = V0,
    dft_forces=None,
    ann_forces=None,
    extrapolation: float = 0.0,
) -> TestFrame:
    """A cubic cell of ``n`` Si atoms at ``volume`` Å³/atom with DFT energy ``dft`` and predicted ``ann`` (eV)."""
    side = (n * volume) ** (1.0 / 3.0)
    positions = np.random.default_rng(n).uniform(0.0, side, (n, 3))
    atoms = Atoms(f"Si{n}", positions=positions, cell=[side] * 3, pbc=True)
    dft_forces = np.zeros((n, 3)) if dft_forces is None else np.asarray(dft_forces, dtype=float)
    ann_forces = np.zeros((n, 3)) if ann_forces is None else np.asarray(ann_forces, dtype=float)
    atoms.calc = SinglePointCalculator(atoms, energy=dft, forces=dft_forces)
    return TestFrame(atoms=atoms, kind=kind, group=group, energy=ann, forces=ann_forces, extrapolation=extrapolation)


def bm(volume: np.ndarray, v0: float = V0, b0: float = B0) -> np.ndarray:
    """Energy per atom (eV) of the Birch–Murnaghan curve with ``v0`` (Å³/atom) and ``b0`` (GPa)."""
    return birchmurnaghan(volume, E0, b0 * units.GPa, BP, v0)


def volume_series(
    group: str = "si", points: int = 7, n: int = 2, ann_v0: float = V0, ann_b0: float = B0, ann_energy=None
) -> list[TestFrame]:
    """``points`` volumes over V0·(1 ± 8 %), DFT on the exact curve, the "ANN" on one with ``ann_v0`` and ``ann_b0``
    (or ``ann_energy(volume)`` per atom); given out of volume order."""
    volumes = V0 * np.linspace(0.92, 1.08, points)[::-1]
    predicted = ann_energy or (lambda v: bm(v, ann_v0, ann_b0))
    return [frame(n, "volume", group, dft=n * float(bm(v)), ann=n * float(predicted(v)), volume=v) for v in volumes]


# --- equation of state ------------------------------------------------------------------------------------------------


def test_fitted_v0_and_b0_recover_the_curves_and_their_relative_errors():
    """ANN curve: V0 2 % larger, B0 10 % stiffer; the fits give back both sides and the errors are 0.02 and 0.10."""
    ideal = frame(3, "ideal", dft=3 * E0 + 1.0, ann=3 * E0 - 1.0)  # another cell size: not part of the series
    score = score_test_set([*volume_series(ann_v0=1.02 * V0, ann_b0=1.1 * B0), ideal])
    eos = score["properties"]["si"]["equation_of_state"]
    assert eos["points"] == 7 and "fit_errors" not in eos
    assert eos["volume_per_atom"] == pytest.approx(V0 * np.linspace(0.92, 1.08, 7))  # sorted by volume
    assert eos["dft_energy_per_atom"] == pytest.approx(bm(V0 * np.linspace(0.92, 1.08, 7)), abs=1e-12)
    volume, modulus = eos["equilibrium_volume_A3_per_atom"], eos["bulk_modulus_GPa"]
    assert volume["dft"] == pytest.approx(V0, rel=1e-3) and volume["ann"] == pytest.approx(1.02 * V0, rel=1e-3)
    assert modulus["dft"] == pytest.approx(B0, rel=1e-3) and modulus["ann"] == pytest.approx(1.1 * B0, rel=1e-3)
    assert volume["relative_error"] == pytest.approx(0.02, abs=1e-4)
    assert modulus["relative_error"] == pytest.approx(0.10, abs=1e-3)
    assert modulus["error"] == pytest.approx(0.1 * B0, rel=1e-2)  # GPa, ANN − DFT
    figures = headline(score)
    assert figures["bulk_modulus_error"] == pytest.approx(0.10, abs=1e-3)
    assert figures["volume_error"] == pytest.approx(0.02, abs=1e-4)
    assert figures["vacancy_error"] is None


def test_energies_per_atom_make_the_fit_independent_of_the_cell_size():
    small = score_test_set(volume_series(n=2, ann_b0=1.1 * B0))["properties"]["si"]["equation_of_state"]
    large = score_test_set(volume_series(n=16, ann_b0=1.1 * B0))["properties"]["si"]["equation_of_state"]
    for key in ("equilibrium_volume_A3_per_atom", "bulk_modulus_GPa"):
        for side in ("dft", "ann"):
            assert large[key][side] == pytest.approx(small[key][side], rel=1e-9)


def test_each_group_gets_its_own_fit_and_the_headline_takes_the_worst():
    score = score_test_set(volume_series("a", ann_b0=1.1 * B0) + volume_series("b", ann_b0=0.85 * B0))
    assert score["properties"]["a"]["equation_of_state"]["bulk_modulus_GPa"]["relative_error"] == pytest.approx(
        0.10, abs=1e-3
    )
    assert score["properties"]["b"]["equation_of_state"]["bulk_modulus_GPa"]["relative_error"] == pytest.approx(
        -0.15, abs=1e-3
    )
    assert headline(score)["bulk_modulus_error"] == pytest.approx(0.15, abs=1e-3)  # |−0.15| beats 0.10


def test_fewer_than_five_volumes_give_no_equation_of_state():
    score = score_test_set(volume_series(points=4))
    assert "si" not in score["properties"]
    assert score["kinds"]["volume"]["frames"] == 4
    figures = headline(score)
    assert figures["volume_error"] is None and figures["bulk_modulus_error"] is None


def test_the_ideal_cell_completes_an_odd_series_whose_centre_it_is():
    series = [f for f in volume_series(points=5) if not math.isclose(f.atoms.get_volume() / 2, V0)]
    ideal = frame(2, "ideal", dft=2 * float(bm(V0)), ann=2 * float(bm(V0)), volume=V0)
    eos = score_test_set([*series, ideal])["properties"]["si"]["equation_of_state"]
    assert eos["points"] == 5


def test_a_potential_without_a_minimum_has_no_fit_and_misses_every_eos_target():
    """A monotonically falling ANN curve cannot be fitted: its V0 and B0 are missing, the DFT side is kept."""
    score = score_test_set(volume_series(ann_energy=lambda v: -0.1 * v))
    eos = score["properties"]["si"]["equation_of_state"]
    assert set(eos["fit_errors"]) == {"ann"}
    assert eos["bulk_modulus_GPa"]["dft"] == pytest.approx(B0, rel=1e-3)
    assert eos["bulk_modulus_GPa"]["ann"] is None and eos["bulk_modulus_GPa"]["relative_error"] is None
    figures = headline(score)
    assert figures["bulk_modulus_error"] == math.inf and figures["volume_error"] == math.inf
    unmet = targets_unmet(figures, {"bulk_modulus_error": 0.5, "volume_error": 0.5})
    assert unmet == ["test bulk_modulus_error inf > 0.5", "test volume_error inf > 0.5"]


# --- errors per kind --------------------------------------------------------------------------------------------------


def test_rmse_and_mae_per_kind_and_overall_are_per_atom_and_per_force_component():
    """Energy offsets of +3, −4 and +1 meV/atom on cells of 2, 4 and 3 atoms; force offsets of +0.1 eV/Å on every
    component of the first, −0.2 on the second, none on the third."""
    frames = [
        frame(2, "rattle050", dft=-10.0, ann=-10.0 + 2 * 0.003, ann_forces=np.full((2, 3), 0.1), extrapolation=0.2),
        frame(
            4,
            "rattle050",
            dft=-20.0,
            ann=-20.0 - 4 * 0.004,
            dft_forces=np.full((4, 3), 0.5),
            ann_forces=np.full((4, 3), 0.3),
            extrapolation=0.05,
        ),
        frame(
            3, "anisotropic", dft=-15.0, ann=-15.0 + 3 * 0.001, dft_forces=np.ones((3, 3)), ann_forces=np.ones((3, 3))
        ),
    ]
    score = score_test_set(frames)
    rattle, strained, overall = score["kinds"]["rattle050"], score["kinds"]["anisotropic"], score["overall"]
    assert set(score["kinds"]) == {"rattle050", "anisotropic"}
    assert rattle["frames"] == 2 and strained["frames"] == 1 and overall["frames"] == 3
    assert rattle["energy_rmse"] == pytest.approx(math.sqrt((9 + 16) / 2), rel=1e-9)  # meV/atom
    assert rattle["energy_mae"] == pytest.approx(3.5, rel=1e-9)
    assert rattle["force_rmse"] == pytest.approx(math.sqrt((6 * 0.01 + 12 * 0.04) / 18), rel=1e-12)  # eV/Å
    assert rattle["force_mae"] == pytest.approx((6 * 0.1 + 12 * 0.2) / 18, rel=1e-12)
    assert rattle["max_extrapolation"] == 0.2
    assert strained["energy_rmse"] == pytest.approx(1.0, rel=1e-9) and strained["force_rmse"] == 0.0
    assert overall["energy_rmse"] == pytest.approx(math.sqrt((9 + 16 + 1) / 3), rel=1e-9)
    assert overall["energy_mae"] == pytest.approx(8 / 3, rel=1e-9)
    assert overall["force_rmse"] == pytest.approx(math.sqrt((6 * 0.01 + 12 * 0.04) / 27), rel=1e-12)
    assert score["properties"] == {}
    figures = headline(score)
    assert figures["energy_rmse"] == overall["energy_rmse"] and figures["force_rmse"] == overall["force_rmse"]


# --- vacancy formation energy ----------------------------------------------------------------------------------------


def test_vacancy_formation_energy_of_constructed_cells():
    """Perfect cell of 16 atoms at N·e0, vacancies at (N−1)·e0 + E_f with E_f 3.5 and 3.7 eV: E_f = 3.6 eV. The
    ANN is off by 10 meV/atom everywhere (cancels) and by 0.25 eV on the defects (does not)."""
    shift = 0.01
    frames = [
        frame(16, "vacancyhost", dft=16 * E_ATOM, ann=16 * (E_ATOM + shift)),
        frame(15, "vacancy", dft=15 * E_ATOM + 3.5, ann=15 * (E_ATOM + shift) + 3.5 + 0.25),
        frame(15, "vacancy", dft=15 * E_ATOM + 3.7, ann=15 * (E_ATOM + shift) + 3.7 + 0.25),
        frame(8, "ideal", dft=8 * E_ATOM - 1.0, ann=8 * E_ATOM + 1.0),  # not the vacancy's host: 8 ≠ 15 + 1
        frame(15, "vacancyrattle050", dft=15 * E_ATOM + 9.0, ann=15 * E_ATOM),  # rattled: not a formation energy
    ]
    vacancy = score_test_set(frames)["properties"]["si"]["vacancy"]
    assert vacancy["sites"] == 2 and vacancy["atoms_perfect_cell"] == 16
    energy = vacancy["unrelaxed_formation_energy_eV"]
    assert energy["dft"] == pytest.approx(3.6, abs=1e-12)
    assert energy["ann"] == pytest.approx(3.85, abs=1e-12)
    assert energy["error"] == pytest.approx(0.25, abs=1e-12)
    assert headline(score_test_set(frames))["vacancy_error"] == pytest.approx(0.25, abs=1e-12)


def test_the_ideal_cell_is_the_host_when_the_vacancies_are_in_it():
    frames = [
        frame(8, "ideal", dft=8 * E_ATOM, ann=8 * E_ATOM),
        frame(7, "vacancy", dft=7 * E_ATOM + 3.0, ann=7 * E_ATOM + 2.9),
    ]
    energy = score_test_set(frames)["properties"]["si"]["vacancy"]["unrelaxed_formation_energy_eV"]
    assert energy["dft"] == pytest.approx(3.0, abs=1e-12) and energy["error"] == pytest.approx(-0.1, abs=1e-12)


def test_defects_of_another_size_than_the_host_are_not_paired():
    frames = [
        frame(16, "vacancyhost", dft=16 * E_ATOM, ann=16 * E_ATOM),
        frame(15, "vacancy", dft=15 * E_ATOM + 3.6, ann=15 * E_ATOM + 3.6),
        frame(14, "vacancy", dft=14 * E_ATOM + 50.0, ann=14 * E_ATOM),  # a divacancy-sized cell: no partner
    ]
    vacancy = score_test_set(frames)["properties"]["si"]["vacancy"]
    assert vacancy["sites"] == 1
    assert vacancy["unrelaxed_formation_energy_eV"]["dft"] == pytest.approx(3.6, abs=1e-12)
    assert vacancy["unrelaxed_formation_energy_eV"]["error"] == pytest.approx(0.0, abs=1e-12)


def test_a_defect_of_another_size_listed_first_does_not_hide_the_vacancy():
    frames = [
        frame(14, "vacancy", dft=14 * E_ATOM + 50.0, ann=14 * E_ATOM),
        frame(16, "vacancyhost", dft=16 * E_ATOM, ann=16 * E_ATOM),
        frame(15, "vacancy", dft=15 * E_ATOM + 3.6, ann=15 * E_ATOM + 3.6),
    ]
    vacancy = score_test_set(frames)["properties"]["si"]["vacancy"]
    assert vacancy["sites"] == 1
    assert vacancy["unrelaxed_formation_energy_eV"]["dft"] == pytest.approx(3.6, abs=1e-12)


def test_vacancies_without_a_host_or_hosts_of_other_groups_give_no_formation_energy():
    frames = [frame(16, "vacancyhost", "a", dft=16 * E_ATOM), frame(15, "vacancy", "b", dft=15 * E_ATOM + 3.6)]
    assert score_test_set(frames)["properties"] == {}


# --- headline and targets ---------------------------------------------------------------------------------------------


def test_targets_are_met_below_and_missed_above_with_the_key_named():
    figures = {
        "energy_rmse": 3.0,
        "force_rmse": 0.08,
        "volume_error": -0.01,
        "bulk_modulus_error": 0.12,
        "vacancy_error": None,
    }
    assert set(figures) == set(TARGET_KEYS)
    assert targets_unmet(figures, {"energy_rmse": 5.0, "force_rmse": 0.1, "volume_error": 0.02}) == []
    assert targets_unmet(figures, {"energy_rmse": 3.0}) == []  # on the target is met
    unmet = targets_unmet(figures, {"energy_rmse": 2.0, "bulk_modulus_error": 0.1, "vacancy_error": 0.2})
    assert unmet == ["test bulk_modulus_error 0.12 > 0.1", "test energy_rmse 3 > 2", "test vacancy_error n/a > 0.2"]


@pytest.mark.parametrize("value", [None, math.nan, math.inf], ids=["missing", "nan", "inf"])
def test_a_figure_that_could_not_be_computed_misses_its_target(value):
    unmet = targets_unmet({"volume_error": value}, {"volume_error": 1e9})
    assert len(unmet) == 1 and "volume_error" in unmet[0]


def test_a_target_for_a_figure_never_computed_is_missed():
    assert targets_unmet({}, {"force_rmse": 0.1}) == ["test force_rmse n/a > 0.1"]


def test_an_empty_test_set_scores_nothing_and_misses_every_target():
    score = score_test_set([])
    assert score["overall"]["frames"] == 0 and score["kinds"] == {} and score["properties"] == {}
    figures = headline(score)
    assert figures["energy_rmse"] is None and figures["force_rmse"] is None
    assert targets_unmet(figures, {"energy_rmse": 5.0}) == ["test energy_rmse n/a > 5"]
