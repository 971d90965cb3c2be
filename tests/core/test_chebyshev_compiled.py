"""The compiled inference path of the Chebyshev descriptor (numba): when it is taken, that it gives the tensor
path's features and force contraction at the edges of the neighbour lists, independently of the thread count,
and the compiled force scatter."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch
from ase import Atoms

from aiida_annpot.common.config import ChebyshevConfig
from aiida_annpot.core.descriptors.chebyshev import ChebyshevDescriptor
from aiida_annpot.core.geometry import NeighborPairs, NeighborSearch
from aiida_annpot.core.pair_scatter import scatter_pair_gradients

CONFIG = ChebyshevConfig(radial_order=7, radial_cutoff=4.5, angular_order=3, angular_cutoff=3.0)


def _pairs(atoms: Atoms, dtype=torch.float64) -> NeighborPairs:
    return NeighborSearch(CONFIG.radial_cutoff)(atoms.positions, atoms.cell.array, atoms.pbc, dtype=dtype)


def _both_paths(descriptor: ChebyshevDescriptor, species, pairs, n_members: int = 3, seed: int = 0):
    """(features, ∂E/∂r_p) of the compiled and of the tensor path for one random ∂E/∂G."""
    results = []
    for compiled in (True, False):
        descriptor.compiled = compiled
        features, operator = descriptor.features_and_gradients(species, pairs)
        assert (type(operator).__name__ == "CompiledGradients") == compiled
        generator = torch.Generator().manual_seed(seed)
        dE_dG = torch.randn((n_members, *features.shape), generator=generator, dtype=features.dtype)
        results.append((features, operator(dE_dG)))
    descriptor.compiled = True
    return results


def _lonely_cluster() -> Atoms:
    """Cu/Au: a trimer within the angular cutoff, an atom that only the radial cutoff reaches, and one atom alone."""
    positions = [(0, 0, 0), (2.4, 0, 0), (1.1, 2.1, 0.3), (0.5, 0.2, 4.1), (20, 20, 20)]
    return Atoms(["Cu", "Au", "Cu", "Au", "Cu"], positions=positions, pbc=False)


@pytest.mark.parametrize("elements", [["Cu"], ["Au", "Cu"]])
def test_edges_of_the_neighbour_lists_match_the_tensor_path(elements):
    """An atom without neighbours, pairs beyond the angular cutoff only, and a structure without any pair: the same
    features and contraction as the tensor operations (one and two channels), to rounding."""
    descriptor = ChebyshevDescriptor(elements, CONFIG).double()
    for atoms in (_lonely_cluster(), Atoms("Cu", positions=[(0, 0, 0)], pbc=False)):
        if elements == ["Cu"]:
            atoms.numbers[:] = 29
        species = torch.tensor([elements.index(s) for s in atoms.get_chemical_symbols()])
        pairs = _pairs(atoms)
        (features, gradients), (expected_features, expected) = _both_paths(descriptor, species, pairs)
        torch.testing.assert_close(features, expected_features, rtol=0, atol=1e-12)
        torch.testing.assert_close(gradients, expected, rtol=0, atol=1e-12)
        assert gradients.shape == (3, pairs.first.shape[0], 3)
        assert torch.all(features[-1, : CONFIG.radial_order + 1] == 0)  # the lonely atom (or the single one)
    assert features.shape == (1, descriptor.n_features)


def test_tensor_path_where_the_compiled_one_does_not_apply():
    """Pairs not grouped by central atom, and pair vectors that autograd follows, take the tensor path: the
    compiled loops read each atom's pairs as one block and make no graph."""
    descriptor = ChebyshevDescriptor(["Cu"], CONFIG).double()
    atoms = Atoms("Cu4", positions=[(0, 0, 0), (2.4, 0, 0), (1.1, 2.1, 0.3), (0.5, 0.2, 2.4)], pbc=False)
    pairs = _pairs(atoms)
    species = torch.zeros(4, dtype=torch.long)
    order = torch.randperm(pairs.first.shape[0], generator=torch.Generator().manual_seed(1))
    shuffled = NeighborPairs(pairs.first[order], pairs.second[order], pairs.vectors[order], pairs.n_atoms)
    _, operator = descriptor.features_and_gradients(species, shuffled)
    assert type(operator).__name__ == "_PairGradients"
    followed = NeighborPairs(pairs.first, pairs.second, pairs.vectors.clone().requires_grad_(True), pairs.n_atoms)
    _, operator = descriptor.features_and_gradients(species, followed)
    assert type(operator).__name__ == "_PairGradients"
    _, operator = descriptor.features_and_gradients(species, pairs)
    assert type(operator).__name__ == "CompiledGradients"
    beyond = NeighborPairs(pairs.first, pairs.second, pairs.vectors, pairs.n_atoms - 1)  # atom 3 does not exist
    with pytest.raises((IndexError, RuntimeError), match="out of"):  # the tensor path refuses; no stray write
        descriptor.features_and_gradients(species, beyond)


def test_thread_count_does_not_change_the_results():
    """Each atom's sums are made by one thread in a fixed order, so one and two threads agree bit for bit."""
    from ase.build import bulk

    descriptor = ChebyshevDescriptor(["Au", "Cu"], CONFIG).double()
    atoms = bulk("CuAu", "rocksalt", a=4.2, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=4)
    species = torch.tensor([0 if s == "Au" else 1 for s in atoms.get_chemical_symbols()])
    pairs = _pairs(atoms)
    dE_dG = torch.randn((2, len(atoms), descriptor.n_features), generator=torch.Generator().manual_seed(2)).double()
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            torch.set_num_threads(count)
            features, operator = descriptor.features_and_gradients(species, pairs)
            results.append((features, operator(dE_dG)))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_scatter_matches_index_add(dtype):
    """Forces from pair gradients: each row added at its first atom and subtracted at its second, as two
    ``index_add`` calls do (repeated atoms in both lists, atoms without pairs)."""
    generator = torch.Generator().manual_seed(6)
    first = torch.tensor([0, 0, 1, 3, 3, 3, 5])
    second = torch.tensor([1, 3, 0, 0, 5, 1, 3])
    per_pair = torch.randn((7, 6), generator=generator, dtype=dtype)
    expected = torch.zeros((6, 6), dtype=dtype).index_add(0, first, per_pair) - torch.zeros(
        (6, 6), dtype=dtype
    ).index_add(0, second, per_pair)
    forces = scatter_pair_gradients(per_pair, first, second, 6)
    assert forces.dtype == dtype
    torch.testing.assert_close(forces, expected, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-14)
    assert torch.all(forces[2] == 0) and torch.all(forces[4] == 0)
    with pytest.raises(IndexError, match="beyond the structure"):
        scatter_pair_gradients(per_pair, first, second, 5)  # atom 5 does not exist
    tracked = per_pair.clone().requires_grad_(True)  # under autograd: index_add, with a gradient
    scatter_pair_gradients(tracked, first, second, 6).sum().backward()
    assert tracked.grad is not None and np.allclose(tracked.grad.numpy(), 0.0)  # +1 and -1 for every value
