"""ASE contract of :class:`~aiida_annpot.core.calculator.AnnCalculator`: properties and units, agreement with the
potential and with finite differences, cache invalidation, committee extras, Verlet skin and NVE conservation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.calculator import Calculator, PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from aiida_annpot.common.config import ChebyshevConfig, NetworkConfig
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.geometry import NeighborSearch
from aiida_annpot.core.model import Potential

DESCRIPTOR = ChebyshevConfig(radial_order=6, radial_cutoff=4.5, angular_order=4, angular_cutoff=3.5)
NETWORK = NetworkConfig(hidden=[8, 6])


def cuau(seed: int = 0) -> Atoms:
    """CuAu rocksalt cubic cell, slightly sheared and rattled (8 atoms)."""
    atoms = bulk("CuAu", "rocksalt", a=4.2, cubic=True)
    atoms.set_cell(
        atoms.cell.array @ np.array([[1.0, 0.02, 0.0], [0.0, 1.01, -0.03], [0.01, 0.0, 0.99]]), scale_atoms=True
    )
    atoms.rattle(stdev=0.08, seed=seed)
    return atoms


def make_potential(n_members: int = 1, seed: int = 0) -> Potential:
    """Seeded random CuAu potential with standardisation from a reference structure (features O(1))."""
    potential = Potential(["Au", "Cu"], DESCRIPTOR, NETWORK, n_members=n_members).double()
    generator = torch.Generator().manual_seed(seed)
    potential.networks.reset_parameters(generator)
    with torch.no_grad():
        for index, weight in enumerate(potential.networks.weights):
            if index % potential.networks.n_layers == potential.networks.n_layers - 1:
                weight.mul_(10.0)
    reference = cuau(seed=99)
    species = potential.species(reference.numbers)
    pairs = NeighborSearch(DESCRIPTOR.radial_cutoff)(reference.positions, reference.cell.array, reference.pbc)
    features = potential.descriptor(species, pairs).double()
    for element in range(2):
        values = features[species == element]
        for k in range(n_members):
            noise = torch.randn(values.shape[1], generator=generator, dtype=torch.float64)
            potential.feature_mean[k, element] = values.mean(0) + 0.1 * noise
            potential.feature_std[k, element] = values.std(0).clamp(min=0.05)
    potential.reference_energy.copy_(torch.tensor([[-3.2, -3.8]] * n_members))
    potential.energy_scale.fill_(0.5)
    return potential


def direct(potential: Potential, atoms: Atoms):
    """Committee-mean energy, forces and stress (3x3) straight from the potential."""
    pairs = NeighborSearch(potential.descriptor.cutoff)(atoms.positions, atoms.cell.array, atoms.pbc)
    prediction = potential(atoms.numbers, pairs, volume=atoms.get_volume() if atoms.pbc.all() else None)
    stress = None if prediction.stress is None else prediction.stress[:, 0].detach().mean(0).numpy()
    return prediction.energy[:, 0].detach().mean().item(), prediction.forces.detach().mean(0).numpy(), stress


def test_implemented_properties():
    expected = {"energy", "free_energy", "forces", "stress", "energies", "energy_std", "forces_std", "max_force_std"}
    assert expected <= set(AnnCalculator.implemented_properties)


def test_results_match_the_potential():
    potential = make_potential()
    atoms = cuau()
    atoms.calc = AnnCalculator(potential)
    energy, forces, stress = direct(potential, atoms)
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-10)
    assert atoms.get_potential_energy(force_consistent=True) == pytest.approx(energy, abs=1e-10)
    calc_forces = atoms.get_forces()
    assert calc_forces.shape == (len(atoms), 3) and calc_forces.dtype == np.float64
    np.testing.assert_allclose(calc_forces, forces, atol=1e-12)
    voigt = atoms.get_stress()  # xx, yy, zz, yz, xz, xy
    expected = [stress[0, 0], stress[1, 1], stress[2, 2], stress[1, 2], stress[0, 2], stress[0, 1]]
    np.testing.assert_allclose(voigt, expected, atol=1e-14)
    np.testing.assert_allclose(atoms.get_stress(voigt=False), stress, atol=1e-14)
    assert np.abs(voigt[3:]).max() > 1e-5  # the sheared cell has off-diagonal stress: Voigt order matters
    energies = atoms.get_potential_energies()
    assert energies.shape == (len(atoms),)
    assert energies.sum() == pytest.approx(energy, abs=1e-10)


def test_numerical_forces_and_stress():
    """ASE's finite-difference forces and stress (what ase.calculators.test checks) agree with the analytic ones."""
    atoms = cuau()
    atoms.calc = AnnCalculator(make_potential())
    forces, stress = atoms.get_forces(), atoms.get_stress()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        numeric_forces = calculate_numerical_forces(atoms, eps=1e-5)
        numeric_stress = calculate_numerical_stress(atoms, eps=1e-6, voigt=True)
    assert np.abs(forces).max() > 0.05
    np.testing.assert_allclose(forces, numeric_forces, atol=1e-7)
    np.testing.assert_allclose(stress, numeric_stress, atol=1e-8)


def test_results_follow_the_atoms():
    """Moving an atom, straining the cell or swapping elements invalidates the cached results."""
    potential = make_potential()
    atoms = cuau()
    atoms.calc = AnnCalculator(potential)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces().copy()
    atoms.positions[3] += [0.1, -0.05, 0.07]
    moved_energy, moved_forces = direct(potential, atoms)[:2]
    assert atoms.get_potential_energy() == pytest.approx(moved_energy, abs=1e-10)
    assert abs(moved_energy - energy) > 1e-4
    np.testing.assert_allclose(atoms.get_forces(), moved_forces, atol=1e-12)
    assert np.abs(atoms.get_forces() - forces).max() > 1e-3
    atoms.set_cell(atoms.cell.array * 1.02, scale_atoms=True)
    assert atoms.get_potential_energy() == pytest.approx(direct(potential, atoms)[0], abs=1e-10)
    atoms.numbers[[0, 1]] = atoms.numbers[[1, 0]]
    assert atoms.get_potential_energy() == pytest.approx(direct(potential, atoms)[0], abs=1e-10)


def test_stress_needs_full_periodicity():
    calc = AnnCalculator(make_potential())
    cluster = cuau()
    cluster.pbc = False
    cluster.calc = calc
    assert np.isfinite(cluster.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        cluster.get_stress()
    slab = cuau()
    slab.pbc = [True, True, False]
    slab.calc = calc
    with pytest.raises(PropertyNotImplementedError):
        slab.get_stress()
    np.testing.assert_allclose(slab.get_forces(), direct(calc.potential, slab)[1], atol=1e-12)


def test_committee_extras():
    potential = make_potential(n_members=3, seed=4)
    atoms = cuau()
    atoms.calc = AnnCalculator(potential)
    energy, forces, _ = direct(potential, atoms)
    assert atoms.get_potential_energy() == pytest.approx(energy, abs=1e-10)  # committee mean
    np.testing.assert_allclose(atoms.get_forces(), forces, atol=1e-12)
    energy_std = atoms.calc.get_property("energy_std", atoms)
    forces_std = atoms.calc.get_property("forces_std", atoms)
    max_force_std = atoms.calc.get_property("max_force_std", atoms)
    assert isinstance(energy_std, float) and energy_std > 0
    assert forces_std.shape == (len(atoms),) and np.all(forces_std > 0)
    assert max_force_std == pytest.approx(forces_std.max())
    fingerprint = atoms.calc.get_property("fingerprint", atoms)
    assert fingerprint.ndim == 1 and np.all(np.isfinite(fingerprint))
    single = cuau()
    single.calc = AnnCalculator(make_potential(n_members=1))
    assert single.calc.get_property("energy_std", single) == 0.0
    assert single.calc.get_property("max_force_std", single) == 0.0


def test_float32_calculator():
    potential = make_potential()
    atoms = cuau()
    atoms.calc = AnnCalculator(make_potential())
    reference_energy, reference_forces = atoms.get_potential_energy(), atoms.get_forces()
    fast = cuau()
    fast.calc = AnnCalculator(potential, dtype="float32")
    assert fast.calc.potential.dtype == torch.float32
    assert fast.get_potential_energy() == pytest.approx(reference_energy, abs=1e-4)
    np.testing.assert_allclose(fast.get_forces(), reference_forces, atol=1e-4)


def _md_atoms(seed: int = 1) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 1))
    atoms.numbers[::3] = 79  # some Au
    atoms.rattle(stdev=0.03, seed=seed)
    return atoms


def test_min_distance_is_the_closest_pair_within_the_cutoff():
    """What exploration's stop rule reads every MD step instead of a neighbour search of its own: the closest pair,
    periodic images included, also when a Verlet list is reused; ``inf`` when no pair is within the cutoff."""
    atoms = cuau()
    atoms.positions[2] = atoms.positions[5] + [0.9, 0.4, 0.0]
    atoms.calc = AnnCalculator(make_potential(), skin=0.5)
    for shift in (0.0, 0.05):  # the second evaluation reuses the Verlet list
        atoms.positions[2, 0] += shift
        expected = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min()
        assert atoms.calc.get_property("min_distance", atoms) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(np.hypot(0.95, 0.4), abs=1e-12)  # the pair placed on purpose
    lone = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], pbc=False)
    lone.calc = AnnCalculator(make_potential())
    assert lone.calc.get_property("min_distance", lone) == np.inf


def test_verlet_skin_matches_fresh_neighbour_lists():
    """MD with a cached (skin 0.5 Å) neighbour list gives the same energies and forces as rebuilding every step,
    including after atoms moved farther than the skin (list rebuilt) — 20 steps of 4 fs at ~2000 K."""
    potential = make_potential()
    atoms = _md_atoms()
    thermalize_momenta(atoms, temperature_K=2000, rng=np.random.default_rng(0))
    Stationary(atoms)
    atoms.calc = AnnCalculator(potential, skin=0.5)
    fresh = AnnCalculator(potential, skin=0.0)
    start = atoms.positions.copy()
    dyn = VelocityVerlet(atoms, timestep=4 * units.fs)
    records = []

    def compare():
        copy = atoms.copy()
        copy.calc = fresh
        records.append(
            (
                atoms.get_potential_energy(),
                copy.get_potential_energy(),
                np.abs(atoms.get_forces() - copy.get_forces()).max(),
            )
        )

    dyn.attach(compare, interval=1)
    dyn.run(20)
    records = np.array(records)
    assert len(records) == 21
    np.testing.assert_allclose(records[:, 0], records[:, 1], atol=1e-10, rtol=0)
    assert records[:, 2].max() < 1e-10
    assert np.ptp(records[:, 0]) > 1e-3  # the energy did change along the run
    assert np.linalg.norm(atoms.positions - start, axis=1).max() > 0.5  # beyond the skin: rebuilds happened


def test_nve_energy_conservation():
    """Velocity Verlet with a 0.5 fs step for 50 fs from ~300 K: total energy drifts < 1 % of the kinetic energy
    (forces are the exact gradient of the energy the integrator sees). Measured: drift 2.5 meV against a mean
    kinetic energy of 1.66 eV (the random potential heats the cell), i.e. 6x below the bound."""
    potential = make_potential()
    atoms = _md_atoms()
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(2))
    Stationary(atoms)
    atoms.calc = AnnCalculator(potential, skin=0.5)
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    totals, kinetic = [], []

    def record():
        kinetic.append(atoms.get_kinetic_energy())
        totals.append(atoms.get_potential_energy() + kinetic[-1])

    dyn.attach(record, interval=1)
    dyn.run(100)
    totals, kinetic = np.array(totals), np.array(kinetic)
    assert np.ptp(kinetic) > 0.02  # energy does flow between kinetic and potential
    drift = np.abs(totals - totals[0]).max()
    assert drift < 0.01 * kinetic.mean(), (drift, kinetic.mean())


def test_fingerprint_on_request_reuses_the_last_evaluation(monkeypatch):
    """MD asks for the fingerprint only on sampled frames: it must not trigger a second model evaluation, and it
    must equal the fingerprint of a fresh calculation of the same structure."""
    potential = make_potential(n_members=2)
    atoms = cuau()
    atoms.calc = AnnCalculator(potential)
    calls = []
    original = Potential.forward
    monkeypatch.setattr(Potential, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    atoms.get_forces()
    assert "fingerprint" not in atoms.calc.results  # not computed at every step
    lazy = atoms.calc.get_property("fingerprint", atoms)
    assert len(calls) == 1
    fresh = cuau()
    fresh.calc = AnnCalculator(potential)
    direct_fingerprint = fresh.calc.get_property("fingerprint", fresh)
    np.testing.assert_allclose(lazy, direct_fingerprint, rtol=0, atol=1e-12)
    assert lazy.shape == (2 * potential.descriptor.n_features,)
    atoms.positions[0] += 0.1  # a moved atom invalidates both results and the cached evaluation
    moved = atoms.calc.get_property("fingerprint", atoms)
    assert len(calls) == 3 and not np.allclose(moved, lazy)


def test_unchanged_atoms_are_not_evaluated_again_and_any_change_is(monkeypatch):
    """The quick exact comparison keeps ASE's rule: the same atoms (or an equal copy) reuse the results; a moved
    atom, a changed cell, new initial charges or magnetic moments (arrays the model ignores but ASE counts as
    changes) each trigger an evaluation, and every edit is reported as ASE's own comparison reports it."""
    potential = make_potential()
    atoms = cuau()
    atoms.calc = AnnCalculator(potential)
    calls = []
    original = Potential.forward_many
    monkeypatch.setattr(Potential, "forward_many", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    atoms.get_forces()
    atoms.get_potential_energy()
    atoms.calc.get_property("max_force_std", atoms.copy())  # an equal copy: same state
    assert len(calls) == 1
    changes = [
        lambda a: a.positions.__setitem__((2, 1), a.positions[2, 1] + 1e-9),
        lambda a: a.set_cell(a.cell.array * 1.0001, scale_atoms=False),
        lambda a: a.set_initial_charges(np.linspace(0.0, 0.1, len(a))),
        lambda a: a.set_initial_magnetic_moments(np.ones(len(a))),
    ]
    for count, change in enumerate(changes, start=2):
        change(atoms)
        assert atoms.calc.check_state(atoms) != []
        atoms.get_forces()
        assert len(calls) == count
    edits = {
        "nothing": lambda a: None,
        "momenta (not a change for ASE)": lambda a: a.set_momenta(np.ones((len(a), 3))),
        "a step below the tolerance": lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-16),
        "a step above it": lambda a: a.positions.__setitem__((0, 0), a.positions[0, 0] + 1e-12),
        "cell and charges": lambda a: (a.set_cell(a.cell.array * 1.01), a.set_initial_charges(np.ones(len(a)))),
        "pbc": lambda a: a.set_pbc([True, True, False]),
        "charges removed": lambda a: a.arrays.pop("initial_charges"),
    }
    for name, edit in edits.items():
        copy = atoms.copy()
        edit(copy)
        assert sorted(atoms.calc.check_state(copy)) == sorted(Calculator.check_state(atoms.calc, copy)), name
