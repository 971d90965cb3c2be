"""``evaluate_test_set``: the session's Cu model scored on EMT-labelled test frames. The errors equal those computed
directly with the model's ASE calculator, frames are sorted into kinds and groups by name, frames the potential
trained on are left out, and the DFT side of the properties is EMT's own equation of state and vacancy energy."""

from __future__ import annotations

import numpy as np
import pytest
from aiida.orm import Dict
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.eos import EquationOfState

from aiida_annpot.calcfunctions.testset import evaluate_test_set
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.data import AtomisticDataset
from aiida_annpot.data.potential import AnnPotential
from aiida_annpot.workflows.generation import kind_of

#: EMT's Cu lattice constant is 3.59 Å; the volume series spans ±8 % around it.
LATTICE = 3.59
VOLUME_FACTORS = np.linspace(0.92, 1.08, 5)


def emt_labelled(atoms):
    atoms.calc = EMT()
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def volume_frames() -> list:
    ideal = bulk("Cu", "fcc", a=LATTICE, cubic=True)
    frames = []
    for factor in VOLUME_FACTORS:
        atoms = ideal.copy()
        atoms.set_cell(ideal.cell.array * factor ** (1.0 / 3.0), scale_atoms=True)
        frames.append(emt_labelled(atoms))
    return frames


def vacancy_frames() -> list:
    host = bulk("Cu", "fcc", a=LATTICE, cubic=True).repeat((2, 1, 1))
    defect = host.copy()
    del defect[3]
    return [emt_labelled(host), emt_labelled(defect)]


@pytest.fixture(scope="module")
def test_set(emt_frames, trained_model, aiida_profile):
    """(frames, outputs) of one evaluation: 5 volumes, a vacancy pair, 4 rattled and 1 unnamed
    frame; the first rattled frame is also in the training set given."""
    rattled = emt_frames(n=5, seed=11)
    frames = [*volume_frames(), *vacancy_frames(), *rattled]
    names = [f"volume_{i:03d}" for i in range(5)] + ["vacancyhost", "vacancy_000"]
    names += [f"rattle100_{i:03d}" for i in range(4)] + [None]
    kinds = {name: [kind_of(name), "cu"] for name in names if name}
    dataset = AtomisticDataset.from_frames(frames, names=names).store()
    training = AtomisticDataset.from_frames([rattled[0], *emt_frames(n=2, seed=12)]).store()
    potential = AnnPotential.from_files([trained_model]).store()
    outputs = evaluate_test_set(potential, dataset, Dict(kinds), training)
    return frames, outputs


def test_errors_equal_those_of_the_models_own_calculator(test_set, trained_model):
    frames, outputs = test_set
    evaluated = frames[:7] + frames[8:]  # rattle100_000 was trained on
    calculator = AnnCalculator(str(trained_model), dtype="float64")
    energy_errors, force_errors = [], []
    for frame in evaluated:
        atoms = frame.copy()
        atoms.calc = calculator
        energy_errors.append((atoms.get_potential_energy() - frame.get_potential_energy()) / len(frame) * 1000.0)
        force_errors.append((atoms.get_forces() - frame.get_forces()).ravel())
    energy_errors, force_errors = np.array(energy_errors), np.concatenate(force_errors)
    overall = outputs["score"]["overall"]
    assert overall["frames"] == 11
    assert overall["energy_rmse"] == pytest.approx(np.sqrt(np.mean(energy_errors**2)), rel=1e-9, abs=1e-9)
    assert overall["energy_mae"] == pytest.approx(np.abs(energy_errors).mean(), rel=1e-9, abs=1e-9)
    assert overall["force_rmse"] == pytest.approx(np.sqrt(np.mean(force_errors**2)), rel=1e-9, abs=1e-9)
    rattle = outputs["score"]["kinds"]["rattle100"]
    assert rattle["energy_rmse"] == pytest.approx(np.sqrt(np.mean(energy_errors[7:10] ** 2)), rel=1e-9, abs=1e-9)
    headline = outputs["score"]["headline"]
    assert headline["energy_rmse"] == overall["energy_rmse"] and headline["force_rmse"] == overall["force_rmse"]


def test_frames_are_counted_per_kind_and_trained_frames_are_excluded(test_set):
    _, outputs = test_set
    score = outputs["score"].get_dict()
    counts = {kind: errors["frames"] for kind, errors in score["kinds"].items()}
    assert counts == {"volume": 5, "vacancyhost": 1, "vacancy": 1, "rattle100": 3, "other": 1}
    assert score["excluded_trained"] == 1
    assert score["kind_names"] == sorted(counts)


def test_predictions_hold_one_row_per_frame_and_per_force_component(test_set):
    frames, outputs = test_set
    evaluated = frames[:7] + frames[8:]
    predictions = outputs["predictions"]
    atoms = sum(len(frame) for frame in evaluated)
    assert predictions.get_array("dft_energy_per_atom").shape == (11,)
    assert predictions.get_array("ann_energy_per_atom").shape == (11,)
    assert predictions.get_array("dft_forces").shape == predictions.get_array("ann_forces").shape == (3 * atoms,)
    dft = [frame.get_potential_energy() / len(frame) for frame in evaluated]
    np.testing.assert_allclose(predictions.get_array("dft_energy_per_atom"), dft, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        predictions.get_array("dft_forces"), np.concatenate([f.get_forces().ravel() for f in evaluated]), atol=1e-12
    )
    kind_names = outputs["score"]["kind_names"]
    kinds = [kind_names[index] for index in predictions.get_array("kind")]
    assert kinds == ["volume"] * 5 + ["vacancyhost", "vacancy"] + ["rattle100"] * 3 + ["other"]


def test_the_dft_side_of_the_properties_is_emts(test_set):
    """EMT's own V0 and B0 (fitted here by ASE) and its unrelaxed vacancy formation energy E(7) − 7/8·E(8)."""
    frames, outputs = test_set
    properties = outputs["score"]["properties"]
    assert set(properties) == {"cu"}
    eos = properties["cu"]["equation_of_state"]
    volumes = [frame.get_volume() / len(frame) for frame in frames[:5]]
    energies = [frame.get_potential_energy() / len(frame) for frame in frames[:5]]
    v0, _, b0 = EquationOfState(volumes, energies, eos="birchmurnaghan").fit()
    assert eos["points"] == 5
    assert eos["equilibrium_volume_A3_per_atom"]["dft"] == pytest.approx(v0, rel=1e-6)
    assert eos["equilibrium_volume_A3_per_atom"]["dft"] == pytest.approx(LATTICE**3 / 4, rel=0.01)
    assert eos["bulk_modulus_GPa"]["dft"] == pytest.approx(b0 / units.GPa, rel=1e-4)
    host, defect = frames[5], frames[6]
    formation = defect.get_potential_energy() - 7 / 8 * host.get_potential_energy()
    vacancy = properties["cu"]["vacancy"]
    assert vacancy["sites"] == 1 and vacancy["atoms_perfect_cell"] == 8
    assert vacancy["unrelaxed_formation_energy_eV"]["dft"] == pytest.approx(formation, abs=1e-9)
    assert 0.5 < formation < 2.0  # a metal's vacancy: about 1 eV
