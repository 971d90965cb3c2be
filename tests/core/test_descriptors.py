"""Physics tests of the descriptor families: invariances, Jacobians, cutoff smoothness, periodic images, species
channels, precision and brute-force references. Every test compares against an independent computation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.transform import Rotation

from aiida_annpot.common.config import G2, G4, BehlerParrinelloConfig, ChebyshevConfig
from aiida_annpot.core.descriptors import Descriptor, make_descriptor
from aiida_annpot.core.descriptors.base import typespin_weights
from aiida_annpot.core.geometry import NeighborPairs, NeighborSearch

CHEBYSHEV = ChebyshevConfig(radial_order=6, radial_cutoff=4.5, angular_order=4, angular_cutoff=3.5)
BP = BehlerParrinelloConfig(
    cutoff=4.5,
    g2=[G2(eta=0.05), G2(eta=0.5, r_s=2.5), G2(eta=2.0, r_s=3.2)],
    g4=[G4(eta=0.01, zeta=1.0, lambda_=1), G4(eta=0.02, zeta=2.5, lambda_=-1), G4(eta=0.05, zeta=4.0, lambda_=1)],
)
CASES = [("chebyshev", ("Cu",)), ("chebyshev", ("Au", "Cu")), ("bp", ("Cu",)), ("bp", ("Au", "Cu"))]
CASE_IDS = [f"{family}-{''.join(elements)}" for family, elements in CASES]
case_param = pytest.mark.parametrize("case", CASES, ids=CASE_IDS)


def make(case) -> Descriptor:
    family, elements = case
    return make_descriptor(list(elements), CHEBYSHEV if family == "chebyshev" else BP)


def structure(kind: str, elements: tuple[str, ...], seed: int = 1) -> Atoms:
    """'bulk': Cu fcc 2x2x2 conventional / CuAu rocksalt cubic; 'cell': small cells whose images are within the
    cutoff (Cu cubic, CuAu primitive); 'cluster': non-periodic 13-atom cuboctahedron. All rattled."""
    binary = len(elements) > 1
    if kind == "bulk":
        atoms = bulk("CuAu", "rocksalt", a=5.0, cubic=True) if binary else bulk("Cu", "fcc", a=3.61, cubic=True) * 2
    elif kind == "cell":
        atoms = bulk("CuAu", "rocksalt", a=5.0) if binary else bulk("Cu", "fcc", a=3.61, cubic=True)
    else:
        shell = [p for p in itertools.product((-1.805, 0.0, 1.805), repeat=3) if np.count_nonzero(p) == 2]
        symbols = ["Cu", "Au"] * 7 if binary else ["Cu"] * 13
        atoms = Atoms(symbols[:13], positions=[(0.0, 0.0, 0.0), *shell], pbc=False)
    atoms.rattle(stdev=0.08, seed=seed)
    return atoms


def inputs(desc: Descriptor, atoms: Atoms, dtype=torch.float64, cutoff: float | None = None):
    search = NeighborSearch(cutoff or desc.cutoff)
    pairs = search(atoms.positions, atoms.cell.array, atoms.pbc, dtype=dtype)
    species = torch.tensor([desc.elements.index(s) for s in atoms.get_chemical_symbols()])
    return species, pairs


def features(desc: Descriptor, atoms: Atoms, dtype=torch.float64) -> np.ndarray:
    with torch.no_grad():
        return desc(*inputs(desc, atoms, dtype)).numpy()


def assert_same(actual: np.ndarray, expected: np.ndarray, tol: float = 1e-10) -> None:
    scale = np.abs(expected).max()
    assert scale > 0.1, "features unexpectedly trivial"
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@case_param
@pytest.mark.parametrize("kind", ["bulk", "cluster"])
def test_rotation_invariance(case, kind):
    desc, atoms = make(case), structure(kind, case[1])
    rotation = Rotation.random(random_state=7).as_matrix()
    rotated = Atoms(
        atoms.get_chemical_symbols(),
        positions=atoms.positions @ rotation.T,
        cell=atoms.cell.array @ rotation.T,
        pbc=atoms.pbc,
    )
    assert_same(features(desc, rotated), features(desc, atoms))


@case_param
@pytest.mark.parametrize("kind", ["bulk", "cluster"])
def test_translation_and_wrapping(case, kind):
    desc, atoms = make(case), structure(kind, case[1])
    reference = features(desc, atoms)
    moved = atoms.copy()
    moved.translate([0.37, -1.9, 2.61])
    assert_same(features(desc, moved), reference)
    if kind == "bulk":
        assert np.any(moved.get_scaled_positions(wrap=False) < 0)  # some atoms really left the cell
        moved.wrap()
        assert_same(features(desc, moved), reference)


@case_param
@pytest.mark.parametrize("kind", ["bulk", "cluster"])
def test_permutation_permutes_rows(case, kind):
    desc, atoms = make(case), structure(kind, case[1])
    order = np.random.default_rng(3).permutation(len(atoms))
    reference = features(desc, atoms)
    assert np.abs(reference[order] - reference).max() > 1e-3  # the permutation is visible in the rows
    assert_same(features(desc, atoms[order]), reference[order])


def position_derivative(jacobian: np.ndarray, pairs: NeighborPairs) -> np.ndarray:
    """dG_i/dx_j (N, D, N, 3) from the pair Jacobian: r_p = x_j - x_i + S·cell."""
    n, first, second = pairs.n_atoms, pairs.first.numpy(), pairs.second.numpy()
    full = np.zeros((n, n, jacobian.shape[1], 3))
    np.add.at(full, (first, second), jacobian)
    np.add.at(full, (first, first), -jacobian)
    return full.transpose(0, 2, 1, 3)


@case_param
@pytest.mark.parametrize("kind", ["cell", "cluster"])
def test_jacobian_matches_finite_differences(case, kind):
    desc, atoms, h = make(case), structure(kind, case[1]), 1e-5
    species, pairs = inputs(desc, atoms)
    _, jacobian = desc.features_and_jacobian(species, pairs)
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
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)


@case_param
@pytest.mark.parametrize("kind", ["cell", "cluster"])
def test_analytic_jacobian_matches_autograd(case, kind):
    desc = make(case)
    species, pairs = inputs(desc, structure(kind, case[1]), cutoff=desc.cutoff + 0.5)  # pairs beyond R_c too
    features_analytic, jacobian_analytic = desc.features_and_jacobian(species, pairs)
    features_auto, jacobian_auto = Descriptor.features_and_jacobian(desc, species, pairs)
    np.testing.assert_allclose(features_analytic.numpy(), features_auto.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(jacobian_analytic.numpy(), jacobian_auto.numpy(), rtol=0, atol=1e-10)


def angular_columns(desc: Descriptor) -> np.ndarray:
    if desc.config.type == "chebyshev":
        radial, n_block = desc.config.radial_order + 1, desc.n_block
        return np.array([c for c in range(desc.n_features) if c % n_block >= radial])
    return np.arange(len(desc.elements) * desc.n_g2, desc.n_features)


def run(desc: Descriptor, atoms: Atoms, cutoff: float):
    g, j = desc.features_and_jacobian(*inputs(desc, atoms, cutoff=cutoff))
    return g.numpy(), j.numpy()


@case_param
def test_dimer_vanishes_smoothly_at_cutoff(case):
    desc = make(case)
    rc = desc.cutoff
    symbols = case[1] if len(case[1]) > 1 else ("Cu", "Cu")
    for delta in (1e-2, 1e-4, 1e-6, 0.0, -1e-6, -0.3):
        dimer = Atoms(symbols, positions=[(0.0, 0.0, 0.0), (rc - delta, 0.0, 0.0)], pbc=False)
        g, j = run(desc, dimer, cutoff=rc + 1.0)  # the pair is listed; the descriptor must switch it off
        assert j.shape == (2, desc.n_features, 3)
        if delta > 0:
            assert 0 < np.abs(g).max() <= delta**2 and np.abs(j).max() <= 10 * delta
        else:
            assert not g.any() and not j.any()
    near = run(desc, Atoms(symbols, positions=[(0.0, 0.0, 0.0), (rc - 1.0, 0.0, 0.0)], pbc=False), rc)
    assert np.abs(near[0]).max() > 0.01 and np.abs(near[1]).max() > 0.01


@case_param
def test_angular_terms_vanish_smoothly_at_angular_cutoff(case):
    """Trimer: atom 2 crosses atom 0's angular cutoff; atom 0's angular block goes continuously to 0. For Chebyshev
    (angular cutoff below the radial one) the radial block stays continuous there and still counts atom 2."""
    desc = make(case)
    rc_angular = desc.config.angular_cutoff if case[0] == "chebyshev" else desc.cutoff
    columns = angular_columns(desc)
    others = np.setdiff1d(np.arange(desc.n_features), columns)
    symbols = ("Cu", "Au", "Cu") if len(case[1]) > 1 else ("Cu",) * 3
    angle = np.radians(40.0)
    rest = {}
    for delta in (0.5, 1e-3, 1e-6, 0.0, -1e-6):
        positions = [(0, 0, 0), (2.2 * np.cos(angle), 2.2 * np.sin(angle), 0), (rc_angular - delta, 0, 0)]
        species, pairs = inputs(desc, Atoms(symbols, positions=positions, pbc=False), cutoff=desc.cutoff + 1.0)
        g, j = (x.numpy() for x in desc.features_and_jacobian(species, pairs))
        own = pairs.first.numpy() == 0
        assert own.sum() == 2
        angular, d_angular = g[0, columns], j[own][:, columns]
        if delta > 0:
            assert 0 < np.abs(angular).max() <= 10 * delta**2 and np.abs(d_angular).max() <= 10 * delta
        else:  # exactly 0 for BP; Chebyshev moments leave (Σw)² - Σw² rounding with one angular neighbour
            limit = 0.0 if case[0] == "bp" else 1e-13
            assert np.abs(angular).max() <= limit and np.abs(d_angular).max() <= limit
        rest[delta] = g[0, others], j[own][:, others]
    if case[0] == "chebyshev":
        for before, after in zip(rest[1e-6], rest[-1e-6], strict=True):
            np.testing.assert_allclose(before, after, rtol=0, atol=1e-4)
        assert np.abs(rest[0.0][1][1]).max() > 0.01  # the radial Jacobian of pair (0, 2) is alive


@pytest.mark.parametrize("elements", [("Cu",), ("Au", "Cu")], ids=["Cu", "AuCu"])
def test_bp_g4_vanishes_when_neighbours_separate_beyond_cutoff(elements):
    """BP G4 also carries f_c(r_jk): two neighbours at 2.7 Å from atom 0, their separation crossing R_c."""
    desc = make(("bp", elements))
    rc, columns = desc.cutoff, angular_columns(desc)
    symbols = ("Cu", "Au", "Cu") if len(elements) > 1 else ("Cu",) * 3
    for delta in (1e-2, 1e-4, 1e-6, 0.0, -1e-6):
        half = (rc - delta) / 2
        trimer = Atoms(symbols, positions=[(0, 0, 0), (-half, 1.5, 0), (half, 1.5, 0)], pbc=False)
        g, j = run(desc, trimer, cutoff=rc)
        own = inputs(desc, trimer)[1].first.numpy() == 0
        angular, d_angular = g[0, columns], j[own][:, columns]
        if delta > 0:
            assert 0 < np.abs(angular).max() <= 10 * delta**2 and np.abs(d_angular).max() <= 10 * delta
        else:
            assert not angular.any() and not d_angular.any()


@case_param
def test_supercell_tiles_unit_cell_features(case):
    desc, cell = make(case), structure("cell", case[1])
    assert np.linalg.norm(cell.cell.array, axis=1).min() < desc.cutoff  # own periodic images are neighbours
    supercell = cell.repeat((2, 2, 1))
    assert_same(features(desc, supercell), np.tile(features(desc, cell), (4, 1)))


def weighted(type_weights: dict[str, float]) -> Descriptor:
    config = ChebyshevConfig(**{**CHEBYSHEV.model_dump(), "type_weights": type_weights})  # validated copy
    return make_descriptor(["Au", "Cu"], config)


def test_chebyshev_type_channel():
    atoms = structure("bulk", ("Au", "Cu"))
    n_block = CHEBYSHEV.radial_order + CHEBYSHEV.angular_order + 2
    n_radial = CHEBYSHEV.radial_order + 1
    single = make_descriptor(["Cu"], CHEBYSHEV)
    assert single.n_features == n_block == features(single, structure("bulk", ("Cu",))).shape[1]
    weights = {"Au": 0.5, "Cu": 2.0}
    g = features(weighted(weights), atoms)
    g_swap = features(weighted({"Au": 2.0, "Cu": 0.5}), atoms)
    assert g.shape[1] == 2 * n_block
    assert_same(g_swap[:, :n_block], g[:, :n_block])  # the untyped block ignores the weights
    assert np.abs(g_swap[:, n_block:] - g[:, n_block:]).max() > 0.1
    assert np.abs(g_swap[:, n_block + n_radial :] - g[:, n_block + n_radial :]).max() > 0.1  # angular typed too
    # the typed radial block is linear in the weights: t + t_swapped = 2.5 everywhere
    assert_same(g[:, n_block : n_block + n_radial] + g_swap[:, n_block : n_block + n_radial], 2.5 * g[:, :n_radial])
    ones = features(weighted({"Au": 1.0, "Cu": 1.0}), atoms)
    assert_same(ones[:, n_block:], ones[:, :n_block])
    # an all-Cu structure: the binary descriptor's untyped block is the single-species descriptor
    copper = structure("bulk", ("Cu",))
    assert_same(features(make_descriptor(["Au", "Cu"], CHEBYSHEV), copper)[:, :n_block], features(single, copper))
    assert typespin_weights(["Cu", "Au"]) == {"Au": -1.0, "Cu": 1.0}


def test_bp_species_resolution():
    binary, single = make(("bp", ("Au", "Cu"))), make(("bp", ("Cu",)))
    n2, n4 = binary.n_g2, binary.n_g4
    assert single.n_features == n2 + n4 and binary.n_features == 2 * n2 + 3 * n4
    atoms = structure("bulk", ("Au", "Cu"))
    g = features(binary, atoms)
    all_copper = atoms.copy()
    all_copper.set_chemical_symbols(["Cu"] * len(atoms))
    g_single = features(single, all_copper)
    # element blocks add up to the species-blind functions
    assert_same(g[:, :n2] + g[:, n2 : 2 * n2], g_single[:, :n2])
    g4 = g[:, 2 * n2 :].reshape(len(atoms), 3, n4)
    assert_same(g4.sum(axis=1), g_single[:, n2:])
    assert np.abs(g4).min(axis=(0, 2)).min() > 1e-6  # rocksalt: every pair block populated
    # relabelling Au <-> Cu swaps the element blocks: G2 (Au, Cu), G4 (Au-Au, Cu-Cu), mixed block fixed
    swapped = atoms.copy()
    swapped.set_chemical_symbols(["Au" if s == "Cu" else "Cu" for s in atoms.get_chemical_symbols()])
    g_swap = features(binary, swapped)
    assert_same(g_swap[:, :n2], g[:, n2 : 2 * n2])
    assert_same(g_swap[:, 2 * n2 :].reshape(-1, 3, n4), g4[:, ::-1])


@case_param
def test_n_features_and_float32(case):
    desc, atoms = make(case), structure("cluster", case[1])
    g64, j64 = desc.features_and_jacobian(*inputs(desc, atoms, torch.float64))
    g32, j32 = desc.features_and_jacobian(*inputs(desc, atoms, torch.float32))
    assert g64.shape == (len(atoms), desc.n_features) and j64.shape[1:] == (desc.n_features, 3)
    assert g32.dtype == j32.dtype == torch.float32 and g64.dtype == j64.dtype == torch.float64
    for low, high in ((g32, g64), (j32, j64)):
        high = high.numpy()
        np.testing.assert_allclose(low.double().numpy(), high, rtol=1e-4, atol=1e-4 * np.abs(high).max())


@case_param
def test_few_neighbours_and_no_pairs(case):
    desc = make(case)
    symbols = ("Cu", "Au", "Cu", "Cu") if len(case[1]) > 1 else ("Cu",) * 4
    # atom 3 isolated, atoms 0-1-2 exactly collinear (cos θ = -1: (1 + λ cos)^ζ at 0 for λ = +1)
    atoms = Atoms(symbols, positions=[(0, 0, 0), (2.3, 0, 0), (-2.3, 0, 0), (20, 0, 0)], pbc=False)
    g, j = desc.features_and_jacobian(*inputs(desc, atoms))
    assert np.isfinite(j.numpy()).all() and not g[3].any()
    np.testing.assert_allclose(
        j.numpy(), Descriptor.features_and_jacobian(desc, *inputs(desc, atoms))[1].numpy(), atol=1e-12
    )
    single = Atoms(symbols[:1], positions=[(0, 0, 0)], pbc=False)
    g, j = desc.features_and_jacobian(*inputs(desc, single))
    assert g.shape == (1, desc.n_features) and j.shape == (0, desc.n_features, 3) and not g.any()
    g, j = Descriptor.features_and_jacobian(desc, *inputs(desc, single))
    assert g.shape == (1, desc.n_features) and j.shape == (0, desc.n_features, 3)


def brute_neighbours(atoms: Atoms, i: int, cutoff: float) -> list[tuple[int, np.ndarray]]:
    """(j, r_ij) for every neighbour within the cutoff, images enumerated explicitly."""
    shifts = itertools.product(range(-4, 5), repeat=3) if atoms.pbc.all() else [(0, 0, 0)]
    shifts = np.array(list(shifts)) @ atoms.cell.array
    result = []
    for j, shift in itertools.product(range(len(atoms)), shifts):
        vector = atoms.positions[j] + shift - atoms.positions[i]
        if 1e-8 < np.linalg.norm(vector) < cutoff:
            result.append((j, vector))
    return result


def cosine_fc(r: float, cutoff: float) -> float:
    return 0.5 * (np.cos(np.pi * r / cutoff) + 1.0) if r < cutoff else 0.0


def brute_chebyshev(desc, atoms: Atoms, i: int) -> np.ndarray:
    config = desc.config
    weights = config.type_weights or typespin_weights(desc.elements)
    symbols = atoms.get_chemical_symbols()
    chebyshev = [np.polynomial.Chebyshev.basis(a) for a in range(max(config.radial_order, config.angular_order) + 1)]
    neighbours = brute_neighbours(atoms, i, config.radial_cutoff)
    channels = [lambda j: 1.0] + ([lambda j: weights[symbols[j]]] if len(desc.elements) > 1 else [])
    blocks = []
    for t in channels:
        radial = np.zeros(config.radial_order + 1)
        for j, v in neighbours:
            r = np.linalg.norm(v)
            for a in range(config.radial_order + 1):
                radial[a] += t(j) * chebyshev[a](2 * r / config.radial_cutoff - 1) * cosine_fc(r, config.radial_cutoff)
        angular = np.zeros(config.angular_order + 1)
        for (j, vj), (k, vk) in itertools.combinations(neighbours, 2):  # j < k
            rj, rk = np.linalg.norm(vj), np.linalg.norm(vk)
            cos = vj @ vk / (rj * rk)
            weight = t(j) * t(k) * cosine_fc(rj, config.angular_cutoff) * cosine_fc(rk, config.angular_cutoff)
            for a in range(config.angular_order + 1):
                angular[a] += weight * chebyshev[a](cos)
        blocks += [radial, angular]
    return np.concatenate(blocks)


def brute_bp(desc, atoms: Atoms, i: int) -> np.ndarray:
    config, elements = desc.config, desc.elements
    n_el, rc = len(elements), config.cutoff
    pair_blocks = [(e1, e2) for e1 in range(n_el) for e2 in range(e1, n_el)]
    element = [elements.index(s) for s in atoms.get_chemical_symbols()]
    neighbours = brute_neighbours(atoms, i, rc)
    g2 = np.zeros((n_el, len(config.g2)))
    for j, v in neighbours:
        r = np.linalg.norm(v)
        for s, g in enumerate(config.g2):
            g2[element[j], s] += np.exp(-g.eta * (r - g.r_s) ** 2) * cosine_fc(r, rc)
    g4 = np.zeros((len(pair_blocks), len(config.g4)))
    for (j, vj), (k, vk) in itertools.permutations(neighbours, 2):  # all ordered j != k
        rj, rk, rjk = np.linalg.norm(vj), np.linalg.norm(vk), np.linalg.norm(vk - vj)
        cos = vj @ vk / (rj * rk)
        block = pair_blocks.index(tuple(sorted((element[j], element[k]))))
        for s, g in enumerate(config.g4):
            g4[block, s] += (
                2 ** (1 - g.zeta)
                * (1 + g.lambda_ * cos) ** g.zeta
                * np.exp(-g.eta * (rj**2 + rk**2 + rjk**2))
                * cosine_fc(rj, rc)
                * cosine_fc(rk, rc)
                * cosine_fc(rjk, rc)
            )
    return np.concatenate([g2.ravel(), g4.ravel()])


@case_param
@pytest.mark.parametrize("kind", ["bulk", "cluster"])
def test_brute_force_reference(case, kind):
    desc, atoms = make(case), structure(kind, case[1])
    g = features(desc, atoms)
    brute = brute_chebyshev if case[0] == "chebyshev" else brute_bp
    for i in (0, 5):
        assert_same(g[i], brute(desc, atoms, i))
