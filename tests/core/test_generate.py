"""Structure generation (pure ASE): strain magnitudes, displacement statistics, vacancies, slabs, seeds, bad input."""

import numpy as np
import pytest
from ase.build import bulk

from aiida_annpot.core import generate
from aiida_annpot.core.errors import InputDataError


@pytest.fixture
def silicon():
    return bulk("Si", "diamond", a=5.43, cubic=True)


def test_supercell_multiplies_atoms_and_volume(silicon):
    big = generate.supercell(silicon, (2, 1, 3))
    assert len(big) == 6 * len(silicon)
    assert big.get_volume() == pytest.approx(6 * silicon.get_volume())


def test_isotropic_strain_scales_the_cell_uniformly_within_bounds(silicon):
    frames = generate.strained(silicon, 20, 0.05, anisotropic=False, seed=1)
    for frame in frames:
        ratios = frame.cell.lengths() / silicon.cell.lengths()
        assert np.allclose(ratios, ratios[0]) and abs(ratios[0] - 1) <= 0.05
        np.testing.assert_allclose(frame.cell.angles(), 90.0)
        np.testing.assert_allclose(frame.get_scaled_positions(), silicon.get_scaled_positions(), atol=1e-12)
    assert len({round(f.get_volume(), 6) for f in frames}) == 20  # all different


def test_anisotropic_strain_changes_shape_and_is_reproducible(silicon):
    frames = generate.strained(silicon, 10, 0.04, anisotropic=True, seed=7)
    assert any(np.ptp(f.cell.lengths()) > 1e-3 for f in frames)
    assert any(np.abs(f.cell.angles() - 90.0).max() > 0.1 for f in frames)  # shear components too
    strains = [np.linalg.solve(silicon.cell.array, f.cell.array) - np.eye(3) for f in frames]
    assert max(np.abs(s).max() for s in strains) <= 0.04
    again = generate.strained(silicon, 10, 0.04, anisotropic=True, seed=7)
    assert all(np.array_equal(a.cell.array, b.cell.array) for a, b in zip(frames, again, strict=True))
    other = generate.strained(silicon, 10, 0.04, anisotropic=True, seed=8)
    assert not np.array_equal(frames[0].cell.array, other[0].cell.array)


def test_rattle_has_the_requested_spread(silicon):
    frames = generate.rattled(generate.supercell(silicon, (3, 3, 3)), 5, 0.1, seed=3)
    displacements = np.concatenate([f.positions for f in frames]) - np.tile(
        generate.supercell(silicon, (3, 3, 3)).positions, (5, 1)
    )
    assert displacements.std() == pytest.approx(0.1, rel=0.05)
    assert abs(displacements.mean()) < 0.01


def test_vacancies_remove_one_atom_at_distinct_sites(silicon):
    frames = generate.vacancies(silicon, 8, seed=0)
    assert all(len(f) == len(silicon) - 1 for f in frames)
    removed = set()
    for frame in frames:
        missing = [i for i, p in enumerate(silicon.positions) if not np.isclose(frame.positions, p).all(1).any()]
        assert len(missing) == 1
        removed.add(missing[0])
    assert len(removed) == 8  # all 8 sites of the cubic cell, each once


def test_slab_has_layers_and_vacuum(silicon):
    primitive = bulk("Cu", "fcc", a=3.61)
    slab = generate.slab(primitive, (1, 1, 1), layers=4, vacuum=6.0)
    assert len(slab) == 4 and slab.pbc.all()
    heights = slab.positions[:, 2]
    assert slab.cell[2, 2] - (heights.max() - heights.min()) == pytest.approx(12.0, abs=1e-6)
    assert len(np.unique(np.round(heights, 4))) == 4


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: generate.strained(s, 0, 0.05, False, 0), "count"),
        (lambda s: generate.strained(s, 3, 0.7, False, 0), "max_strain"),
        (lambda s: generate.rattled(s, 3, -0.1, 0), "stdev"),
        (lambda s: generate.vacancies(s[:1], 1, 0), "at least 2 atoms"),
        (lambda s: generate.slab(s, (0, 0, 0), 3, 5.0), "Miller"),
        (lambda s: generate.supercell(s, (2, 0, 1)), "repeat"),
    ],
)
def test_bad_parameters_name_the_problem(silicon, call, message):
    with pytest.raises(InputDataError, match=message):
        call(silicon)
