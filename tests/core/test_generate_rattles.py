"""Rattled copies that keep atoms apart (:func:`aiida_annpot.core.generate.rattled` with ``min_distance_ratio``):
closest approach checked against an independent neighbour list, seeded reproducibility, impossible limits."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from aiida_annpot.core import generate
from aiida_annpot.core.errors import InputDataError

#: Diamond Si: nearest neighbours at √3/4 · a.
LATTICE = 5.43
NEAREST = np.sqrt(3.0) / 4.0 * LATTICE


@pytest.fixture
def silicon():
    return bulk("Si", "diamond", a=LATTICE, cubic=True)


def closest(atoms) -> float:
    """Smallest interatomic distance (Å), periodic images included, by ASE's neighbour list (not vesin)."""
    return float(neighbor_list("d", atoms, 3.0).min())


def test_nearest_neighbour_distance_of_diamond(silicon):
    assert generate.nearest_neighbour_distance(silicon) == pytest.approx(NEAREST, rel=1e-9)
    assert generate.min_distance(silicon, 2.0) == np.inf  # no pair within 2 Å
    stretched = silicon.copy()
    stretched.positions[1] += 0.3 * (silicon.positions[0] - silicon.positions[1]) / NEAREST  # 0.3 Å towards atom 0
    assert generate.nearest_neighbour_distance(stretched) == pytest.approx(NEAREST - 0.3, rel=1e-9)


def test_the_ratio_keeps_every_pair_apart_where_plain_draws_come_closer(silicon):
    """0.2 Å per coordinate moves a bond by 0.28 Å (1σ): without a limit some of 20 copies bring a pair below
    0.8 × 2.35 = 1.88 Å; with the limit none does, and the copies are still displaced by about 0.2 Å."""
    limit = 0.8 * NEAREST
    plain = generate.rattled(silicon, 20, 0.2, seed=0)
    assert min(closest(frame) for frame in plain) < limit
    kept = generate.rattled(silicon, 20, 0.2, seed=0, min_distance_ratio=0.8)
    assert len(kept) == 20
    assert all(closest(frame) >= limit for frame in kept)
    displacements = np.concatenate([frame.positions - silicon.positions for frame in kept])
    assert displacements.std() == pytest.approx(0.2, rel=0.15)  # redraws reject the tail, not the amplitude
    assert all(len(frame) == len(silicon) and np.array_equal(frame.cell.array, silicon.cell.array) for frame in kept)


def test_same_seed_same_structures_other_seed_other_structures(silicon):
    first = generate.rattled(silicon, 6, 0.2, seed=4, min_distance_ratio=0.8)
    again = generate.rattled(silicon, 6, 0.2, seed=4, min_distance_ratio=0.8)
    other = generate.rattled(silicon, 6, 0.2, seed=5, min_distance_ratio=0.8)
    assert all(np.array_equal(a.positions, b.positions) for a, b in zip(first, again, strict=True))
    assert not np.allclose(first[0].positions, other[0].positions)
    assert len({frame.positions.tobytes() for frame in first}) == 6  # copies differ from each other


def test_no_ratio_is_the_plain_gaussian_rattle(silicon):
    """A ratio of 0 draws exactly what the unlimited rattle draws."""
    plain = generate.rattled(silicon, 3, 0.1, seed=2)
    rng = np.random.default_rng(2)
    for frame in plain:
        np.testing.assert_array_equal(frame.positions, silicon.positions + rng.normal(0.0, 0.1, (8, 3)))


def test_an_impossible_ratio_fails_naming_the_amplitude(silicon):
    """With 0.5 Å per coordinate no draw keeps all 16 bonds at 99 % of their length."""
    with pytest.raises(InputDataError, match=r"no rattle of 0\.5 Å in 1000 draws keeps atoms 2\.33 Å apart"):
        generate.rattled(silicon, 1, 0.5, seed=0, min_distance_ratio=0.99)


@pytest.mark.parametrize("ratio", [-0.1, 1.0])
def test_a_ratio_outside_zero_to_one_is_refused(silicon, ratio):
    with pytest.raises(InputDataError, match="min_distance_ratio"):
        generate.rattled(silicon, 1, 0.1, seed=0, min_distance_ratio=ratio)
