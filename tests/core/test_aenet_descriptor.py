"""aenet fingerprint setups and the per-element Behler–Parrinello sets they become: function counts, hand-computed
G2/G4 values (aenet's formulas), invariances, Jacobians and model forces against finite differences, brute-force
references, equivalence with the shared sets, backward compatibility, and errors that name the file and line."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from scipy.spatial.transform import Rotation

from aiida_annpot.common.config import G2, G4, BehlerParrinelloConfig, BehlerParrinelloSet, NetworkConfig
from aiida_annpot.core.aenet import descriptor_from_setups, read_fingerprint_setup
from aiida_annpot.core.descriptors import Descriptor, make_descriptor
from aiida_annpot.core.errors import AenetFormatError, ElementMismatchError
from aiida_annpot.core.geometry import NeighborSearch
from aiida_annpot.core.model import Potential
from aiida_annpot.core.modelfile import load_potential, read_metadata, save_model

from .aenet_files import H_SETUP, N_FUNCTIONS, O_SETUP, water_cluster

ELEMENTS = ["O", "H"]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> BehlerParrinelloConfig:
    """The descriptor of the O and H setups of the test set."""
    folder = tmp_path_factory.mktemp("setups")
    (folder / "O.fingerprint.stp").write_text(O_SETUP)
    (folder / "H.fingerprint.stp").write_text(H_SETUP)
    setups = {e: read_fingerprint_setup(folder / f"{e}.fingerprint.stp") for e in ELEMENTS}
    descriptor, notes = descriptor_from_setups(setups, ELEMENTS)
    assert notes == []
    return descriptor


def water_box(seed: int = 0) -> Atoms:
    """Two water molecules in a 5 Å periodic cell: periodic images of every atom are within the 6 Å cut-off."""
    atoms = water_cluster(seed)
    atoms.cell = [[5.0, 0.0, 0.0], [0.4, 5.2, 0.0], [0.0, 0.3, 5.4]]
    atoms.pbc = True
    atoms.center()
    return atoms


def structure(kind: str, seed: int = 0) -> Atoms:
    return water_cluster(seed, molecules=3) if kind == "cluster" else water_box(seed)


def inputs(desc: Descriptor, atoms: Atoms, dtype=torch.float64, cutoff: float | None = None):
    pairs = NeighborSearch(cutoff or desc.cutoff)(atoms.positions, atoms.cell.array, atoms.pbc, dtype=dtype)
    species = torch.tensor([desc.elements.index(s) for s in atoms.get_chemical_symbols()])
    return species, pairs


def features(desc: Descriptor, atoms: Atoms) -> np.ndarray:
    with torch.no_grad():
        return desc(*inputs(desc, atoms)).numpy()


def fc(r: float, rc: float) -> float:
    return 0.5 * (math.cos(math.pi * r / rc) + 1.0) if r < rc else 0.0


def test_setups_become_per_element_sets(config):
    assert config.cutoff == 6.0
    assert {e: len(s.g2) + len(s.g4) for e, s in config.per_element.items()} == N_FUNCTIONS
    oxygen = config.per_element["O"]
    assert oxygen.g2[2] == G2(eta=0.5, r_s=0.96, neighbour="H")  # the overall cut-off is not repeated per function
    assert oxygen.g2[4] == G2(eta=0.071421, neighbour="H", cutoff=4.5)
    assert oxygen.g4[2] == G4(eta=0.000357, zeta=1.0, lambda_=-1, neighbours=("O", "H"))
    desc = make_descriptor(ELEMENTS, config)
    assert desc.elements == ["H", "O"] and desc.features_per_element == [5, 9] and desc.n_features == 9
    g = features(desc, structure("cluster"))
    hydrogen = [s == "H" for s in structure("cluster").get_chemical_symbols()]
    assert not g[hydrogen, 5:].any() and np.abs(g[hydrogen, :5]).min() > 0  # H: 5 functions, then zero padding


def test_networks_read_only_their_elements_functions(config):
    potential = Potential(ELEMENTS, config, NetworkConfig(hidden=[4, 3]))
    inputs_per_element = [potential.networks.weights[e * 3].shape[1] for e in range(2)]
    assert inputs_per_element == [5, 9]  # H, O
    n_parameters = sum(p.numel() for p in potential.networks.parameters())
    assert n_parameters == sum((d + 1) * 4 + 5 * 3 + 4 * 1 for d in (5, 9))


def test_hand_computed_g2_and_g4(config):
    """O at the origin, two H at 0.96 Å and 104.5°: the sums written out for a few columns of the O setup.

    G4 is Behler's double sum over ordered pairs, 2^{1-ζ} Σ_{j≠k} (1 + λ cos θ)^ζ e^{-η (r_ij² + r_ik² + r_jk²)}
    f_c f_c f_c: twice aenet's value, which sums j < k (symmfunc.f90: 2 ((1 + λ cos θ)/2)^ζ F F F per pair j < k).
    """
    theta = math.radians(104.5)
    h1, h2 = np.array([0.96, 0.0, 0.0]), np.array([0.96 * math.cos(theta), 0.96 * math.sin(theta), 0.0])
    atoms = Atoms("OHH", positions=[(0, 0, 0), h1, h2])
    g = features(make_descriptor(ELEMENTS, config), atoms)
    r, r_hh = 0.96, float(np.linalg.norm(h1 - h2))
    # O: G=2 type2=H eta=0.003214 Rs=0 Rc=6 (column 1), both hydrogens at 0.96 Å
    assert g[0, 1] == pytest.approx(2 * math.exp(-0.003214 * r**2) * fc(r, 6.0), rel=1e-13)
    # O: G=2 type2=H eta=0.5 Rs=0.96 (column 2): the Gaussian peaks at both hydrogens
    assert g[0, 2] == pytest.approx(2 * fc(r, 6.0), rel=1e-13)
    assert g[0, 0] == 0.0 and g[0, 3] == 0.0  # type2=O: no O neighbour
    # O: G=4 type2=H type3=H eta=0.028569 lambda=1 zeta=2 (column 6), one H-O-H angle
    radial = math.exp(-0.028569 * (r**2 + r**2 + r_hh**2)) * fc(r, 6.0) ** 2 * fc(r_hh, 6.0)
    ordered_pairs = 2  # (H1, H2) and (H2, H1)
    assert g[0, 6] == pytest.approx(2 ** (1 - 2) * ordered_pairs * (1 + math.cos(theta)) ** 2 * radial, rel=1e-13)
    aenet = 2 * ((1 + math.cos(theta)) / 2) ** 2 * radial  # one unordered pair
    assert g[0, 6] == pytest.approx(2 * aenet, rel=1e-13)
    assert g[0, 7] == 0.0 and g[0, 8] == 0.0  # O-H and O-O pairs: none around O
    # H1: G=4 type2=O type3=H eta=0.000357 lambda=-1 zeta=1 (column 3 of H): the pair (O, H2), angle O-H1-H2
    to_o, to_h = -h1, h2 - h1
    cos = to_o @ to_h / (np.linalg.norm(to_o) * np.linalg.norm(to_h))
    radial = math.exp(-0.000357 * (r**2 + r_hh**2 + r**2)) * fc(r, 6.0) * fc(r_hh, 6.0) * fc(r, 6.0)
    assert g[1, 3] == pytest.approx(2 ** (1 - 1) * ordered_pairs * (1 - cos) * radial, rel=1e-13)
    # H1: G=2 type2=H eta=0.003214 (column 2): the other hydrogen
    assert g[1, 2] == pytest.approx(math.exp(-0.003214 * r_hh**2) * fc(r_hh, 6.0), rel=1e-13)


def test_each_function_has_its_own_cutoff(config):
    """O-H at 5 Å: inside R_c = 6 Å (column 1), outside the 4.5 Å of column 4 of the O setup."""
    g = features(make_descriptor(ELEMENTS, config), Atoms("OH", positions=[(0, 0, 0), (5.0, 0, 0)]))
    assert g[0, 1] == pytest.approx(math.exp(-0.003214 * 25.0) * fc(5.0, 6.0), rel=1e-13)
    assert g[0, 4] == 0.0


@pytest.mark.parametrize("kind", ["cluster", "box"])
def test_rotation_translation_and_permutation_invariance(config, kind):
    desc, atoms = make_descriptor(ELEMENTS, config), structure(kind)
    reference = features(desc, atoms)
    rotation = Rotation.random(random_state=7).as_matrix()
    rotated = Atoms(
        atoms.get_chemical_symbols(),
        positions=atoms.positions @ rotation.T,
        cell=atoms.cell.array @ rotation.T,
        pbc=atoms.pbc,
    )
    np.testing.assert_allclose(features(desc, rotated), reference, rtol=1e-10, atol=1e-12)
    moved = atoms.copy()
    moved.translate([0.37, -1.9, 2.61])
    if kind == "box":
        moved.wrap()
    np.testing.assert_allclose(features(desc, moved), reference, rtol=1e-10, atol=1e-12)
    order = np.random.default_rng(3).permutation(len(atoms))
    assert np.abs(reference[order] - reference).max() > 1e-3
    np.testing.assert_allclose(features(desc, atoms[order]), reference[order], rtol=1e-10, atol=1e-12)
    swapped = atoms.copy()  # exchange two hydrogens: the same structure, their rows exchanged
    swapped.positions[[1, 5]] = swapped.positions[[5, 1]]
    exchange = np.arange(len(atoms))
    exchange[[1, 5]] = [5, 1]
    np.testing.assert_allclose(features(desc, swapped), reference[exchange], rtol=1e-10, atol=1e-12)


def test_supercell_tiles_the_cell(config):
    desc, box = make_descriptor(ELEMENTS, config), water_box(2)
    np.testing.assert_allclose(
        features(desc, box.repeat((2, 1, 1))), np.tile(features(desc, box), (2, 1)), rtol=1e-10, atol=1e-12
    )


def position_derivative(jacobian: np.ndarray, pairs) -> np.ndarray:
    """dG_i/dx_j (N, D, N, 3) from the pair Jacobian: r_p = x_j - x_i + S·cell."""
    n, first, second = pairs.n_atoms, pairs.first.numpy(), pairs.second.numpy()
    full = np.zeros((n, n, jacobian.shape[1], 3))
    np.add.at(full, (first, second), jacobian)
    np.add.at(full, (first, first), -jacobian)
    return full.transpose(0, 2, 1, 3)


@pytest.mark.parametrize("kind", ["cluster", "box"])
def test_jacobian_matches_finite_differences_and_autograd(config, kind):
    desc, atoms, h = make_descriptor(ELEMENTS, config), structure(kind), 1e-5
    species, pairs = inputs(desc, atoms, cutoff=desc.cutoff + 0.5)  # pairs beyond every cut-off too
    g, jacobian = desc.features_and_jacobian(species, pairs)
    g_auto, jacobian_auto = Descriptor.features_and_jacobian(desc, species, pairs)
    np.testing.assert_allclose(g.numpy(), g_auto.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(jacobian.numpy(), jacobian_auto.numpy(), rtol=0, atol=1e-11)
    analytic = position_derivative(jacobian.numpy(), pairs)
    numeric = np.zeros_like(analytic)
    for a, k in itertools.product(range(len(atoms)), range(3)):
        shifted = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[a, k] += sign * h
            shifted.append(features(desc, moved))
        numeric[:, :, a, k] = (shifted[0] - shifted[1]) / (2 * h)
    assert np.abs(analytic).max() > 0.1
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-7)


def brute_force(config: BehlerParrinelloConfig, atoms: Atoms, i: int) -> list[float]:
    """The functions of atom i's element, from explicit image sums over ordered neighbour pairs (Behler 2011)."""
    functions = config.per_element[atoms.get_chemical_symbols()[i]]
    symbols = atoms.get_chemical_symbols()
    shifts = itertools.product(range(-3, 4), repeat=3) if atoms.pbc.all() else [(0, 0, 0)]
    shifts = np.array(list(shifts)) @ atoms.cell.array
    neighbours = [
        (symbols[j], atoms.positions[j] + s - atoms.positions[i])
        for j, s in itertools.product(range(len(atoms)), shifts)
    ]
    neighbours = [(e, v) for e, v in neighbours if 1e-8 < np.linalg.norm(v) < config.cutoff]
    values = []
    for g in functions.g2:
        rc = g.cutoff or config.cutoff
        values.append(
            sum(
                math.exp(-g.eta * (np.linalg.norm(v) - g.r_s) ** 2) * fc(np.linalg.norm(v), rc)
                for e, v in neighbours
                if e == g.neighbour
            )
        )
    for g in functions.g4:
        rc, total = g.cutoff or config.cutoff, 0.0
        for (ej, vj), (ek, vk) in itertools.permutations(neighbours, 2):
            if sorted((ej, ek)) != sorted(g.neighbours):
                continue
            rj, rk, rjk = np.linalg.norm(vj), np.linalg.norm(vk), np.linalg.norm(vk - vj)
            angular = 2 ** (1 - g.zeta) * (1 + g.lambda_ * vj @ vk / (rj * rk)) ** g.zeta
            total += angular * math.exp(-g.eta * (rj**2 + rk**2 + rjk**2)) * fc(rj, rc) * fc(rk, rc) * fc(rjk, rc)
        values.append(total)
    return values


@pytest.mark.parametrize("kind", ["cluster", "box"])
def test_brute_force_reference(config, kind):
    atoms = structure(kind, seed=4)
    g = features(make_descriptor(ELEMENTS, config), atoms)
    for i in (0, 1, 4):  # O, H, H
        expected = brute_force(config, atoms, i)
        np.testing.assert_allclose(g[i, : len(expected)], expected, rtol=1e-11, atol=1e-14)
        assert not g[i, len(expected) :].any()


def test_explicit_sets_reproduce_the_shared_sets():
    """Shared g2/g4 without neighbour names equal per-element sets that name every element (pair) in block order."""
    elements = ["Au", "Cu"]
    g2 = [G2(eta=0.05), G2(eta=0.5, r_s=2.5)]
    g4 = [G4(eta=0.01, zeta=1.0, lambda_=1), G4(eta=0.05, zeta=4.0, lambda_=-1)]
    shared = BehlerParrinelloConfig(cutoff=4.5, g2=g2, g4=g4)
    explicit = BehlerParrinelloSet(
        g2=[g.model_copy(update={"neighbour": e}) for e in elements for g in g2],
        g4=[
            g.model_copy(update={"neighbours": pair}) for pair in (("Au", "Au"), ("Au", "Cu"), ("Cu", "Cu")) for g in g4
        ],
    )
    per_element = BehlerParrinelloConfig(cutoff=4.5, per_element={e: explicit for e in elements})
    atoms = Atoms("CuAuCuAuCuCu", positions=np.random.default_rng(1).uniform(0, 4.5, (6, 3)), pbc=False)
    np.testing.assert_allclose(
        features(make_descriptor(elements, per_element), atoms),
        features(make_descriptor(elements, shared), atoms),
        rtol=1e-13,
        atol=1e-15,
    )


def test_shared_sets_compute_as_before():
    """Values of the shared layout computed with the code before per-element sets existed (a regression guard)."""
    config = BehlerParrinelloConfig(cutoff=4.0, g2=[G2(eta=0.5, r_s=2.0)], g4=[G4(eta=0.05, zeta=2.0, lambda_=-1)])
    atoms = Atoms("CuAuCu", positions=[(0, 0, 0), (2.5, 0, 0), (0.4, 2.2, 0.3)])
    before = [
        [0.2723899794259811, 0.3871970679108865, 0.0, 0.0038997047931836823, 0.0],
        [0.0, 0.34750728611969484, 0.0, 0.0, 0.0005639528276418145],
        [0.07511730669371372, 0.3871970679108865, 0.0, 0.0009535357400608041, 0.0],
    ]
    np.testing.assert_array_equal(features(make_descriptor(["Au", "Cu"], config), atoms), before)


def test_shared_configuration_dumps_as_before():
    """New settings stay out of the dumps of configurations that do not use them: model file metadata, AiiDA
    attributes and their hashes are unchanged."""
    config = BehlerParrinelloConfig(cutoff=4.0, g2=[G2(eta=0.5)], g4=[G4(eta=0.05, zeta=2.0, lambda_=-1)])
    assert config.model_dump(mode="json", by_alias=True) == {
        "type": "behler_parrinello",
        "cutoff": 4.0,
        "g2": [{"eta": 0.5, "r_s": 0.0}],
        "g4": [{"eta": 0.05, "zeta": 2.0, "lambda": -1}],
    }
    assert BehlerParrinelloConfig.model_validate(config.model_dump(mode="json", by_alias=True)) == config


def make_potential(config, atoms: Atoms, seed: int = 0) -> Potential:
    """Random weights, standardisation from the features of ``atoms`` (as training sets it: the networks work in
    their sensitive range) and reference energies."""
    potential = Potential(ELEMENTS, config, NetworkConfig(hidden=[5, 4])).double()
    generator = torch.Generator().manual_seed(seed)
    potential.networks.reset_parameters(generator)
    g = torch.as_tensor(features(potential.descriptor, atoms))
    species = inputs(potential.descriptor, atoms)[0]
    with torch.no_grad():
        for weight in potential.networks.weights:  # larger weights: forces well above rounding
            weight.mul_(3.0)
        for element in range(2):
            rows = g[species == element]
            potential.feature_mean[0, element] = rows.mean(0)
            potential.feature_std[0, element] = rows.std(0).clamp_min(0.05)
        potential.reference_energy.copy_(torch.tensor([[-13.6, -432.5]], dtype=torch.float64))
    return potential


def energy_and_forces(potential: Potential, atoms: Atoms) -> tuple[float, np.ndarray]:
    pairs = NeighborSearch(potential.descriptor.cutoff)(atoms.positions, atoms.cell.array, atoms.pbc)
    prediction = potential(atoms.numbers, pairs)
    return float(prediction.energy[0, 0].detach()), prediction.forces[0].detach().numpy()


@pytest.mark.parametrize("kind", ["cluster", "box"])
def test_model_forces_match_finite_differences(config, kind):
    atoms, h = structure(kind, seed=6), 1e-5
    potential = make_potential(config, atoms)
    _, forces = energy_and_forces(potential, atoms)
    numeric = np.zeros_like(forces)
    for a, k in itertools.product(range(len(atoms)), range(3)):
        energies = []
        for sign in (1.0, -1.0):
            moved = atoms.copy()
            moved.positions[a, k] += sign * h
            energies.append(energy_and_forces(potential, moved)[0])
        numeric[a, k] = -(energies[0] - energies[1]) / (2 * h)
    assert np.abs(forces).max() > 0.5
    np.testing.assert_allclose(forces, numeric, rtol=1e-6, atol=1e-6)
    assert np.abs(forces.sum(axis=0)).max() < 1e-10  # no net force on an isolated or periodic system


def test_model_file_round_trip(config, tmp_path):
    atoms = structure("box", seed=1)
    potential = make_potential(config, atoms, seed=2)
    path = save_model(potential, tmp_path / "water.safetensors")
    assert read_metadata(path)["descriptor"] == config.model_dump(mode="json", by_alias=True)
    loaded = load_potential(path)
    assert loaded.descriptor_config == config
    for got, expected in zip(energy_and_forces(loaded, atoms), energy_and_forces(potential, atoms), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_elements_that_disagree_with_the_sets(config):
    with pytest.raises(ElementMismatchError, match="no function set for C"):
        make_descriptor(["C", "H", "O"], config)
    with pytest.raises(ElementMismatchError, match="function sets for H, which the model does not cover"):
        make_descriptor(
            ["O"],
            config.model_copy(update={"per_element": {"O": config.per_element["O"], "H": config.per_element["H"]}}),
        )
    shared = BehlerParrinelloConfig(g2=[G2(eta=0.1, neighbour="Zr")], g4=[])
    with pytest.raises(ElementMismatchError, match="neighbour element Zr, which the model does not cover"):
        make_descriptor(ELEMENTS, shared)


def write_setup(tmp_path, text: str, name: str = "O.fingerprint.stp"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_setup_elements_that_disagree_with_the_types(tmp_path):
    setups = {
        e: read_fingerprint_setup(write_setup(tmp_path, t, f"{e}.stp")) for e, t in (("O", O_SETUP), ("H", H_SETUP))
    }
    with pytest.raises(ElementMismatchError, match="no setup for C"):
        descriptor_from_setups(setups, ["O", "H", "C"])
    with pytest.raises(ElementMismatchError, match="ATOM H, but it is the setup of O"):
        descriptor_from_setups({"O": setups["H"], "H": setups["H"]}, ELEMENTS)
    with pytest.raises(ElementMismatchError, match=r"ENV names H, not among the elements O"):
        descriptor_from_setups({"O": setups["O"]}, ["O"])
    oxygen_only = O_SETUP.replace("ENV  2\nO\nH", "ENV  1\nO").replace("=H ", "=O ")
    setups["O"] = read_fingerprint_setup(write_setup(tmp_path, oxygen_only))
    _, notes = descriptor_from_setups(setups, ELEMENTS)
    assert any("ENV lacks H" in note for note in notes)


#: (text replaced, its replacement), the text of the line named in the error (None: the file), the message.
SETUP_ERRORS = {
    "G=5": (("G=2 type2=O   eta=0.2", "G=5 type2=O type3=O eta=0.2"), "G=5", "G=5 functions are not supported"),
    "G=3": (("G=2 type2=O   eta=0.2", "G=3 type2=O kappa=1.0 eta=0.2"), "G=3", "G=3 functions are not supported"),
    "unknown key": (("Rs=2.8000", "Rs=2.8 kappa=1"), "kappa", "unknown kappa"),
    "missing key": (("Rs=2.8000  Rc=6.0000", "Rs=2.8"), "Rs=2.8", "missing rc"),
    "type not in ENV": (("G=2 type2=O   eta=0.2", "G=2 type2=Ti eta=0.2"), "Ti", r"type2=Ti is not in ENV \(O, H\)"),
    "lambda": (("lambda=  1.0  zeta= 4.0", "lambda= 0.5  zeta= 4.0"), "lambda= 0.5", "lambda must be -1 or \\+1"),
    "zeta": (("lambda=  1.0  zeta= 4.0", "lambda= 1.0  zeta= 0.5"), "zeta= 0.5", "invalid G=4 function: zeta"),
    "cut-off": (("Rs=2.8000  Rc=6.0000", "Rs=2.8000  Rc=25.0"), "25.0", "invalid G=2 function: cutoff"),
    "not a number": (("eta=0.2 ", "eta=high "), "high", "eta: expected a number, got 'high'"),
    "not key=value": (("G=2 type2=O   eta=0.2", "G=2 type2=O eta 0.2"), "eta 0.2", "expected key=value items"),
    "too few functions": (("Behler2011\n9", "Behler2011\n10"), "zeta= 4.0", "file ends where function 10"),
    "too many functions": (("Behler2011\n9", "Behler2011\n8"), "zeta= 4.0", "unknown keyword 'G=4'"),
    "basis type": (("SYMMFUNC type=Behler2011", "SYMMFUNC type=Behler2006"), "Behler2006", "type=Behler2006 is not"),
    "twice": (("ATOM O\n", "ATOM O\nATOM O\n"), "ATOM O\n\nENV", "ATOM is given twice"),
    "unknown keyword": (("RMIN 0.75d0", "RCUT 0.75d0"), "RCUT", "unknown keyword 'RCUT'"),
    "env count": (("ENV  2", "ENV  two"), "two", "ENV count: expected an integer"),
    "descr": (("END DESCR", "END"), "DESCR", "DESCR is not closed"),
    "no basis": (("SYMMFUNC type=Behler2011\n9\n", "! no functions\n"), None, "no SYMMFUNC, FUNCTIONS or BASIS"),
}


def line_of(text: str, marker: str) -> int:
    """The line (1-based) on which ``marker`` first starts."""
    return text[: text.index(marker)].count("\n") + 1


@pytest.mark.parametrize("case", SETUP_ERRORS, ids=list(SETUP_ERRORS))
def test_malformed_setups_name_the_file_and_line(tmp_path, case):
    (old, new), marker, message = SETUP_ERRORS[case]
    assert old in O_SETUP
    text = O_SETUP.replace(old, new, 1)
    if case == "no basis":
        text = text.split("! no functions")[0]
    path = write_setup(tmp_path, text)
    with pytest.raises(AenetFormatError, match=message) as error:
        read_fingerprint_setup(path)
    where = f"{path}, line {line_of(text, marker)}:" if marker else f"{path}:"
    assert str(error.value).startswith(where), str(error.value)


CHEBYSHEV = """\
ATOM {element}
ENV 2
O
H
RMIN 0.75d0
BASIS type=Chebyshev
radial_Rc = {rc}  radial_N = 8 angular_Rc = 4.0  angular_N = 3
"""


def test_chebyshev_setups_with_aenet_type_weights(tmp_path):
    setups = {
        e: read_fingerprint_setup(write_setup(tmp_path, CHEBYSHEV.format(element=e, rc=6.5), f"{e}.stp"))
        for e in ELEMENTS
    }
    config, _ = descriptor_from_setups(setups, ELEMENTS)
    assert (config.type, config.radial_order, config.radial_cutoff, config.angular_order, config.angular_cutoff) == (
        "chebyshev",
        8,
        6.5,
        3,
        4.0,
    )
    assert config.type_weights == {"O": -1.0, "H": 1.0}  # aenet: -1, +1 in ENV order (annpot's default sorts: H, O)
    setups["H"] = read_fingerprint_setup(write_setup(tmp_path, CHEBYSHEV.format(element="H", rc=7.0), "H.stp"))
    with pytest.raises(AenetFormatError, match="differ in their Chebyshev parameters"):
        descriptor_from_setups(setups, ELEMENTS)
    setups["H"] = read_fingerprint_setup(write_setup(tmp_path, H_SETUP, "H.stp"))
    with pytest.raises(AenetFormatError, match="mix basis types"):
        descriptor_from_setups(setups, ELEMENTS)
    broken = write_setup(tmp_path, CHEBYSHEV.format(element="O", rc=6.5).replace("angular_N = 3", "angular = 3"))
    with pytest.raises(AenetFormatError, match=f"{broken}, line 7: expected radial_Rc"):
        read_fingerprint_setup(broken)


def test_sets_without_radial_or_angular_functions():
    """One element with G2 functions only, the other with G4 functions only: both blocks are optional."""
    config = BehlerParrinelloConfig(
        cutoff=5.0,
        per_element={
            "O": BehlerParrinelloSet(g2=[G2(eta=0.1, neighbour="H"), G2(eta=0.3, neighbour="O", cutoff=3.5)]),
            "H": BehlerParrinelloSet(g4=[G4(eta=0.01, zeta=2.0, lambda_=1, neighbours=("O", "H"))]),
        },
    )
    desc = make_descriptor(ELEMENTS, config)
    assert desc.features_per_element == [1, 2] and desc.n_features == 2
    atoms = structure("cluster", seed=8)
    species, pairs = inputs(desc, atoms, cutoff=desc.cutoff + 0.5)
    g, jacobian = desc.features_and_jacobian(species, pairs)
    _, jacobian_auto = Descriptor.features_and_jacobian(desc, species, pairs)
    np.testing.assert_allclose(jacobian.numpy(), jacobian_auto.numpy(), rtol=0, atol=1e-12)
    hydrogen = species == desc.elements.index("H")
    assert not g[hydrogen, 1:].any() and g[hydrogen, 0].abs().min() > 0 and g[~hydrogen].abs().min() > 0
    for i in (0, 1):
        expected = brute_force(config, atoms, i)
        np.testing.assert_allclose(g[i, : len(expected)].numpy(), expected, rtol=1e-11, atol=1e-14)
