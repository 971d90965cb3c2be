"""Physics tests of :class:`~aiida_annpot.core.model.Potential`: symmetries, forces and stress against finite
differences, smoothness at the cutoff, periodic images, momentum conservation, committees and precision.

Networks are randomly initialised (seeded) and the standardisation is set from the features of the test structures
(perturbed), so every network input is O(1) and the energy depends non-trivially on every feature.
"""

from __future__ import annotations

import copy
import importlib.util
import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from aiida_annpot.common.config import G2, G4, BehlerParrinelloConfig, ChebyshevConfig, NetworkConfig
from aiida_annpot.core import model as model_module
from aiida_annpot.core import pair_gradients as pair_gradients_module
from aiida_annpot.core.committee import committee_statistics
from aiida_annpot.core.geometry import NeighborSearch
from aiida_annpot.core.model import Potential
from aiida_annpot.core.pair_gradients import contract_by_atom, pair_gradients

CHEBYSHEV = ChebyshevConfig(radial_order=6, radial_cutoff=4.5, angular_order=4, angular_cutoff=3.5)
BP = BehlerParrinelloConfig(
    cutoff=4.5,
    g2=[G2(eta=0.05), G2(eta=0.5, r_s=2.5), G2(eta=2.0, r_s=3.2)],
    g4=[G4(eta=0.01, zeta=1.0, lambda_=1), G4(eta=0.02, zeta=2.5, lambda_=-1), G4(eta=0.05, zeta=4.0, lambda_=1)],
)
NETWORK = NetworkConfig(hidden=[8, 6], activation="tanh")
FAMILIES = {"chebyshev": CHEBYSHEV, "bp": BP}
family_param = pytest.mark.parametrize("family", list(FAMILIES))


def _require(family: str) -> None:
    """Skip Behler–Parrinello cases while that descriptor module does not exist."""
    if family == "bp" and importlib.util.find_spec("aiida_annpot.core.descriptors.behler_parrinello") is None:
        pytest.skip("Behler–Parrinello descriptor module not available")


def rocksalt(seed: int = 0) -> Atoms:
    """CuAu rocksalt, cubic 8-atom cell (a = 4.2 Å < cutoff: atoms see their own images), sheared and rattled."""
    atoms = bulk("CuAu", "rocksalt", a=4.2, cubic=True)
    shear = np.array([[1.0, 0.03, -0.02], [0.01, 0.98, 0.04], [-0.03, 0.02, 1.02]])
    atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
    atoms.rattle(stdev=0.1, seed=seed)
    return atoms


def cluster(seed: int = 0) -> Atoms:
    """Non-periodic 13-atom Cu/Au cuboctahedron, rattled."""
    shell = [p for p in itertools.product((-1.805, 0.0, 1.805), repeat=3) if np.count_nonzero(p) == 2]
    atoms = Atoms((["Cu", "Au"] * 7)[:13], positions=[(0.0, 0.0, 0.0), *shell], pbc=False)
    atoms.rattle(stdev=0.1, seed=seed)
    return atoms


STRUCTURES = {"rocksalt": rocksalt, "cluster": cluster}


def make_potential(
    family: str = "chebyshev", n_members: int = 1, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Potential:
    """A CuAu potential with seeded random weights, feature statistics from the test structures (perturbed per
    member), reference energies and an energy scale, so nothing in the model is an identity."""
    _require(family)
    potential = Potential(["Cu", "Au"], FAMILIES[family], NETWORK, n_members=n_members).to(torch.float64)
    generator = torch.Generator().manual_seed(seed)
    potential.networks.reset_parameters(generator)
    with torch.no_grad():  # larger output layers than the training initialisation: O(0.1-1) eV/Å forces
        for index, weight in enumerate(potential.networks.weights):
            if index % potential.networks.n_layers == potential.networks.n_layers - 1:
                weight.mul_(10.0)
    search = NeighborSearch(potential.descriptor.cutoff)
    features, species = [], []
    for atoms in (rocksalt(seed=11), cluster(seed=12)):
        species.append(potential.species(atoms.numbers))
        features.append(potential.descriptor(species[-1], search(atoms.positions, atoms.cell.array, atoms.pbc)))
    features, species = torch.cat(features).double(), torch.cat(species)
    for element in range(len(potential.elements)):
        values = features[species == element]
        mean, std = values.mean(0), values.std(0).clamp(min=1e-3)
        for member in range(n_members):
            noise = torch.randn((2, mean.shape[0]), generator=generator, dtype=torch.float64)
            potential.feature_mean[member, element] = mean + 0.2 * std * noise[0]
            potential.feature_std[member, element] = std * (1.0 + 0.1 * noise[1].abs())
    potential.reference_energy.copy_(torch.tensor([[-3.8, -3.2]] * n_members) + 0.1 * torch.arange(n_members)[:, None])
    potential.energy_scale.fill_(0.7)
    return potential.to(dtype)


def predict(potential: Potential, atoms: Atoms, forces: bool = True):
    """Prediction of one structure (stress when periodic)."""
    pairs = NeighborSearch(potential.descriptor.cutoff)(atoms.positions, atoms.cell.array, atoms.pbc)
    volume = atoms.get_volume() if atoms.pbc.all() else None
    return potential(atoms.numbers, pairs, volume=volume, forces=forces)


def energy(potential: Potential, atoms: Atoms) -> float:
    return predict(potential, atoms, forces=False).energy[0, 0].item()


def rotation(seed: int) -> np.ndarray:
    """A random proper rotation matrix."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ------------------------------------------------------------------------------------------------ symmetries


@family_param
@pytest.mark.parametrize("kind", list(STRUCTURES))
def test_rotation_invariance_and_equivariance(family, kind):
    potential = make_potential(family)
    atoms = STRUCTURES[kind]()
    R = rotation(3)
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ R.T
    rotated.set_cell(atoms.cell.array @ R.T)  # cell vectors are rows
    before, after = predict(potential, atoms), predict(potential, rotated)
    assert abs(before.energy[0, 0].item()) > 1.0
    assert after.energy[0, 0].item() == pytest.approx(before.energy[0, 0].item(), abs=1e-10)
    forces = before.forces[0].numpy()
    assert np.abs(forces).max() > 1e-2  # non-degenerate
    np.testing.assert_allclose(after.forces[0].numpy(), forces @ R.T, atol=1e-10)  # F(Rx) = R F(x)
    if atoms.pbc.all():
        stress = before.stress[0, 0].numpy()
        np.testing.assert_allclose(after.stress[0, 0].numpy(), R @ stress @ R.T, atol=1e-12)


@family_param
def test_translation_invariance(family):
    potential = make_potential(family)
    for atoms in (rocksalt(), cluster()):
        shifted = atoms.copy()
        shifted.positions += np.array([1.3, -2.7, 0.45])
        before, after = predict(potential, atoms), predict(potential, shifted)
        assert after.energy[0, 0].item() == pytest.approx(before.energy[0, 0].item(), abs=1e-10)
        np.testing.assert_allclose(after.forces[0].numpy(), before.forces[0].numpy(), atol=1e-10)


@family_param
def test_permutation_invariance(family):
    potential = make_potential(family)
    for atoms in (rocksalt(), cluster()):
        order = np.random.default_rng(5).permutation(len(atoms))
        permuted = atoms[order]
        before, after = predict(potential, atoms), predict(potential, permuted)
        assert after.energy[0, 0].item() == pytest.approx(before.energy[0, 0].item(), abs=1e-10)
        np.testing.assert_allclose(after.forces[0].numpy(), before.forces[0].numpy()[order], atol=1e-10)
        atomic_before, atomic_after = before.atomic_energies[0].detach(), after.atomic_energies[0].detach()
        np.testing.assert_allclose(atomic_after.numpy(), atomic_before.numpy()[order], atol=1e-10)


def test_species_matter():
    """Swapping the elements of two inequivalent atoms changes the energy (the model is not species-blind)."""
    potential = make_potential()
    atoms = rocksalt()
    swapped = atoms.copy()
    swapped.numbers[[0, 1]] = swapped.numbers[[1, 0]]
    assert abs(energy(potential, swapped) - energy(potential, atoms)) > 1e-3


# ------------------------------------------------------------------------------------------ derivatives


@family_param
@pytest.mark.parametrize("kind", list(STRUCTURES))
def test_forces_are_negative_energy_gradient(family, kind):
    """Analytic forces against central finite differences of the energy (h = 1e-5 Å), every atom and component."""
    potential = make_potential(family)
    atoms = STRUCTURES[kind]()
    analytic = predict(potential, atoms).forces[0].numpy()
    h = 1e-5
    numeric = np.zeros_like(analytic)
    for i, c in itertools.product(range(len(atoms)), range(3)):
        values = []
        for step in (h, -h):
            moved = atoms.copy()
            moved.positions[i, c] += step
            values.append(energy(potential, moved))
        numeric[i, c] = -(values[0] - values[1]) / (2 * h)
    assert np.abs(numeric).max() > 0.05  # forces of a random potential on a rattled structure are not tiny
    np.testing.assert_allclose(analytic, numeric, atol=1e-7, rtol=0)


@family_param
def test_stress_is_strain_derivative(family):
    """σ_ab = (1/V) ∂E/∂ε_ab by central differences of a homogeneously strained (triclinic, rattled) cell."""
    potential = make_potential(family)
    atoms = rocksalt()
    analytic = predict(potential, atoms).stress[0, 0].numpy()
    h = 1e-5
    numeric = np.zeros((3, 3))
    for a, b in itertools.product(range(3), range(3)):
        values = []
        for step in (h, -h):
            strain = np.eye(3)
            strain[a, b] += step
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
            values.append(energy(potential, strained))
        numeric[a, b] = (values[0] - values[1]) / (2 * h) / atoms.get_volume()
    assert np.abs(numeric).max() > 1e-3
    np.testing.assert_allclose(analytic, numeric, atol=1e-8, rtol=0)
    np.testing.assert_allclose(analytic, analytic.T, atol=1e-12)  # rotation invariance ⇒ symmetric stress


# ------------------------------------------------------------------------------------------------ cutoff


def _scan(potential: Potential, make_atoms, distances):
    energies, forces = [], []
    for r in distances:
        prediction = predict(potential, make_atoms(r))
        energies.append(prediction.energy[0, 0].item())
        forces.append(prediction.forces[0].numpy())
    return np.array(energies), np.array(forces)


def _dimer(r: float) -> Atoms:
    return Atoms("CuAu", positions=[(0.0, 0.0, 0.0), (r, 0.0, 0.0)], pbc=False)


def _trimer(r: float) -> Atoms:
    """Au at (2.5, 0, 0) stays a neighbour of Cu at the origin; the second Cu moves along y (its distance to the
    Au, sqrt(6.25 + r²), stays clear of both cutoffs for r near 3.5 Å and 4.5 Å)."""
    return Atoms("CuAuCu", positions=[(0.0, 0.0, 0.0), (2.5, 0.0, 0.0), (0.0, r, 0.0)], pbc=False)


CUTOFF_CASES = [
    ("chebyshev", "dimer", 4.5),
    ("chebyshev", "trimer", 4.5),
    ("chebyshev", "trimer", 3.5),
    ("bp", "dimer", 4.5),
    ("bp", "trimer", 4.5),
]


@pytest.mark.parametrize(("family", "shape", "cutoff"), CUTOFF_CASES, ids=[f"{f}-{s}-{c}" for f, s, c in CUTOFF_CASES])
def test_energy_smooth_across_cutoff(family, shape, cutoff):
    """A neighbour crossing a cutoff (radial 4.5 Å; Chebyshev angular 3.5 Å) leaves E continuous with continuous
    forces (no step, no kink). Past the radial cutoff E is constant; inside, E - E_out ∝ δ² (cosine cutoff),
    δ = R_c - r, so the energy steps between scan points → 0 and the force on the neighbour vanishes at R_c."""
    potential = make_potential(family)
    make_atoms, moving, path = (_dimer, 1, [1.0, 0.0, 0.0]) if shape == "dimer" else (_trimer, 2, [0.0, 1.0, 0.0])
    # no step, no kink: across R_c ± h the energy changes by the slope x 2h and the forces agree
    h = 1e-5
    (e_in, e_out), (f_in, f_out) = _scan(potential, make_atoms, [cutoff - h, cutoff + h])
    slope = -f_in[moving] @ np.array(path)
    assert abs((e_out - e_in) - 2 * h * slope) < 1e-10
    np.testing.assert_allclose(f_out, f_in, atol=1e-4)
    if cutoff == 3.5:  # angular cutoff: the neighbour still contributes radially
        assert np.abs(f_in[moving]).max() > 1e-3
        return
    deltas = np.array([0.04, 0.02, 0.01, 0.005, 0.0025, 1e-3, 1e-4, 0.0, -1e-4, -1e-3, -0.01, -0.04])
    energies, forces = _scan(potential, make_atoms, cutoff - deltas)
    outside = energies[deltas <= 0]
    np.testing.assert_allclose(outside, outside[0], atol=1e-12, rtol=0)
    np.testing.assert_allclose(forces[deltas <= 0][:, moving], 0.0, atol=1e-12)
    inside = deltas > 0
    gap = energies[inside] - outside[0]
    assert abs(gap[0]) > 1e-6  # the neighbour does contribute inside the cutoff
    ratio = gap / deltas[inside] ** 2  # tends to a finite, non-zero constant: quadratic approach
    np.testing.assert_allclose(ratio[3:], ratio[-1], rtol=0.1)  # δ ≤ 5 mÅ
    steps = np.abs(np.diff(energies[: int(inside.sum()) + 1]))  # consecutive differences up to δ = 0
    assert steps[-1] < 1e-4 * abs(gap[0])
    force = np.linalg.norm(forces[inside][:, moving], axis=1)
    assert force[0] > 1e-5
    assert np.all(np.diff(force) < 0)  # monotonically → 0
    assert force[-1] < 1e-2 * force[0]  # δ = 1e-4 vs 0.04: linear decay


# ------------------------------------------------------------------------------- periodic images, momentum


@family_param
def test_supercell_is_extensive(family):
    """A 2x2x2 supercell has 8x the energy, the same forces on equivalent atoms (tiled) and the same stress."""
    potential = make_potential(family)
    atoms = rocksalt()
    unit, super_ = predict(potential, atoms), predict(potential, atoms.repeat((2, 2, 2)))
    assert super_.energy[0, 0].item() == pytest.approx(8 * unit.energy[0, 0].item(), abs=1e-9)
    np.testing.assert_allclose(super_.forces[0].numpy(), np.tile(unit.forces[0].numpy(), (8, 1)), atol=1e-10)
    np.testing.assert_allclose(super_.stress[0, 0].numpy(), unit.stress[0, 0].numpy(), atol=1e-12)


@family_param
def test_total_force_vanishes(family):
    potential = make_potential(family)
    for atoms in (rocksalt(), rocksalt().repeat((2, 1, 1)), cluster()):
        forces = predict(potential, atoms).forces[0].numpy()
        assert np.abs(forces).max() > 1e-2
        np.testing.assert_allclose(forces.sum(0), 0.0, atol=1e-11)


def test_small_cell_sees_images():
    """The cubic rocksalt cell is smaller than the cutoff: its energy must differ from the same atoms without PBC."""
    potential = make_potential()
    atoms = rocksalt()
    isolated = atoms.copy()
    isolated.pbc = False
    assert abs(energy(potential, atoms) - energy(potential, isolated)) > 0.1


# ------------------------------------------------------------------------------------------------ committee


MEMBER_BUFFERS = ("feature_mean", "feature_std", "reference_energy", "energy_scale")


def member(potential: Potential, k: int) -> Potential:
    """Committee member ``k`` as a potential of its own (K = 1)."""
    single = Potential(potential.elements, potential.descriptor_config, potential.network_config).to(potential.dtype)
    state = {
        name: value[k : k + 1].clone()
        for name, value in potential.state_dict().items()
        if name.startswith("networks.") or name in MEMBER_BUFFERS
    }
    single.load_state_dict(state, strict=False)
    return single


def test_identical_members_have_zero_deviation():
    potential = make_potential(n_members=3)
    with torch.no_grad():
        for tensor in [*potential.networks.parameters(), *(getattr(potential, b) for b in MEMBER_BUFFERS)]:
            tensor[1:] = tensor[0]
    atoms = rocksalt()
    stats = committee_statistics(predict(potential, atoms))
    assert stats.energy_std == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(stats.forces_std.numpy(), 0.0, atol=1e-12)  # round-off of the batched matmul
    assert stats.max_force_std == pytest.approx(0.0, abs=1e-12)
    single = predict(member(potential, 0), atoms)
    assert stats.energy == pytest.approx(single.energy[0, 0].item(), abs=1e-10)
    np.testing.assert_allclose(stats.forces.numpy(), single.forces[0].numpy(), atol=1e-12)


@family_param
def test_committee_mean_and_deviations_match_separate_members(family):
    potential = make_potential(family, n_members=3, seed=7)
    atoms = rocksalt()
    prediction = predict(potential, atoms)
    stats = committee_statistics(prediction)
    singles = [predict(member(potential, k), atoms) for k in range(3)]
    energies = np.array([s.energy[0, 0].item() for s in singles])
    forces = np.stack([s.forces[0].numpy() for s in singles])
    stresses = np.stack([s.stress[0, 0].numpy() for s in singles])
    np.testing.assert_allclose(prediction.energy[:, 0].detach().numpy(), energies, atol=1e-10)  # batched = separate
    np.testing.assert_allclose(prediction.forces.numpy(), forces, atol=1e-10)
    assert stats.energy == pytest.approx(energies.mean(), abs=1e-10)
    np.testing.assert_allclose(stats.forces.numpy(), forces.mean(0), atol=1e-10)
    np.testing.assert_allclose(stats.stress.numpy(), stresses.mean(0), atol=1e-12)
    # deviations: population std of the energy per atom; per-atom RMS force deviation over members
    assert stats.energy_std == pytest.approx(energies.std() / len(atoms), rel=1e-8)
    expected = np.sqrt(((forces - forces.mean(0)) ** 2).sum(-1).mean(0))
    np.testing.assert_allclose(stats.forces_std.numpy(), expected, rtol=1e-8, atol=1e-12)
    assert stats.energy_std > 1e-4
    assert np.all(stats.forces_std.numpy() > 1e-4)
    assert stats.max_force_std == pytest.approx(expected.max(), rel=1e-10)


@family_param
def test_several_structures_in_one_call_match_separate_calls(family):
    """``forward_many`` (exploration's trajectories side by side): two periodic cells of different shapes and a
    cluster without stress, one call for a committee of 3, give each structure what ``forward`` gives it."""
    potential = make_potential(family, n_members=3, seed=5)
    search = NeighborSearch(potential.descriptor.cutoff)
    requests = []
    for atoms in (rocksalt(seed=1), cluster(seed=2), rocksalt(seed=3).repeat((2, 1, 1))):
        pairs = search(atoms.positions, atoms.cell.array, atoms.pbc)
        requests.append((atoms.numbers, pairs, atoms.get_volume() if atoms.pbc.all() else None))
    for forces in (True, False):
        together = potential.forward_many(requests, forces=forces)
        for request, result in zip(requests, together, strict=True):
            alone = potential(*request, forces=forces)
            for name in ("energy", "forces", "stress", "atomic_energies", "features"):
                expected, value = getattr(alone, name), getattr(result, name)
                if expected is None:
                    assert value is None, name
                else:
                    np.testing.assert_allclose(value.detach().numpy(), expected.detach().numpy(), atol=1e-12)
    assert together[1].stress is None and together[0].stress is None  # a cluster has none; no forces, none at all
    assert potential.forward_many(requests)[2].stress.shape == (3, 1, 3, 3)


INFERENCE_PATHS = [
    pytest.param("bp", "eager", 2.0),
    pytest.param("bp", "eager", 1.0),
    pytest.param("chebyshev", "compiled", 2.0),
    pytest.param("chebyshev", "eager", 2.0),
    pytest.param("chebyshev", "eager", 1.0),
]


@pytest.mark.parametrize(("family", "path", "padding_limit"), INFERENCE_PATHS)
@pytest.mark.parametrize("n_members", [1, 4])
def test_inference_contraction_equals_the_stored_jacobian(family, path, n_members, padding_limit, monkeypatch):
    """Inference contracts ∂E/∂G with the descriptor's operator (for Chebyshev, J's factors: compiled loops, or
    tensor operations with one product per atom), training with the stored J per pair: the same features and
    ∂E/∂r_p to rounding, for one and two elements (one and two channels), a bulk cell, a cluster with pairs beyond
    the angular cutoff and uneven neighbour counts, and both in one call; with the padding limit at 1, the uneven
    cluster takes the per-pair product."""
    monkeypatch.setattr(pair_gradients_module, "PADDING_LIMIT", padding_limit)
    generator = torch.Generator().manual_seed(3)
    _require(family)
    copper = Potential(["Cu"], FAMILIES[family], NETWORK, n_members=n_members).double()
    for potential in (make_potential(family, n_members=n_members), copper):
        if family == "chebyshev":
            potential.descriptor.compiled = path == "compiled"
        search = NeighborSearch(potential.descriptor.cutoff)
        structures = [rocksalt().repeat(2), cluster()]
        if potential is copper:
            for atoms in structures:
                atoms.numbers[:] = 29
        pairs = [search(a.positions, a.cell.array, a.pbc) for a in structures]
        joined, _ = model_module._concatenate(pairs, torch.float64)
        numbers = np.concatenate([a.numbers for a in structures])
        for each_pairs, each_numbers in [*zip(pairs, (a.numbers for a in structures), strict=True), (joined, numbers)]:
            species = potential.species(each_numbers)
            features, jacobian = potential.descriptor.features_and_jacobian(species, each_pairs)
            same_features, operator = potential.descriptor.features_and_gradients(species, each_pairs)
            assert (type(operator).__name__ == "CompiledGradients") == (path == "compiled")
            torch.testing.assert_close(same_features, features, rtol=0, atol=0 if path == "eager" else 1e-12)
            dE_dG = torch.randn((n_members, *features.shape), generator=generator, dtype=torch.float64)
            expected = pair_gradients(dE_dG, jacobian, each_pairs.first)
            assert expected.abs().max() > 0.1
            torch.testing.assert_close(operator(dE_dG), expected, rtol=0, atol=1e-12)


def test_contraction_by_atom_matches_its_definition_in_any_pair_order():
    """Σ_f rows[p, x, f] weights[first[p], f, k] for pairs grouped by atom (one padded product per atom) and for
    the same pairs shuffled (one product per pair), against einsum."""
    generator = torch.Generator().manual_seed(5)
    counts = torch.tensor([3, 0, 5, 1, 4])
    first = torch.repeat_interleave(torch.arange(5), counts)
    rows = torch.randn((first.shape[0], 3, 6), generator=generator, dtype=torch.float64)
    weights = torch.randn((5, 6, 4), generator=generator, dtype=torch.float64)
    for order in (torch.arange(first.shape[0]), torch.randperm(first.shape[0], generator=generator)):
        expected = torch.einsum("pxf,pfk->pxk", rows[order], weights[first[order]])
        torch.testing.assert_close(contract_by_atom(rows[order], first[order], weights), expected, rtol=0, atol=1e-13)
    assert contract_by_atom(rows[:0], first[:0], weights).shape == (0, 3, 4)


# ------------------------------------------------------------------------------------------------ precision


@family_param
def test_float32_agrees_with_float64(family):
    potential64 = make_potential(family)
    potential32 = copy.deepcopy(potential64).to(torch.float32)
    assert potential32.dtype == torch.float32
    for atoms in (rocksalt(), cluster()):
        p64, p32 = predict(potential64, atoms), predict(potential32, atoms)
        assert p32.energy.dtype == torch.float32 and p32.forces.dtype == torch.float32
        assert p32.energy[0, 0].item() == pytest.approx(p64.energy[0, 0].item(), abs=1e-4 * len(atoms))
        np.testing.assert_allclose(p32.forces[0].double().numpy(), p64.forces[0].numpy(), atol=1e-4)
        if atoms.pbc.all():
            np.testing.assert_allclose(p32.stress[0, 0].double().numpy(), p64.stress[0, 0].numpy(), atol=1e-5)
