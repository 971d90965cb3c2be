"""Structure-generation calcfunctions: provenance links, seeded reproducibility, outputs, failures."""

import numpy as np
import pytest
from aiida.orm import Bool, Float, Int, List, StructureData
from ase.build import bulk

from aiida_annpot.calcfunctions import (
    rattle_structures,
    slab_structures,
    strain_structures,
    supercell_structure,
    vacancy_structures,
)
from aiida_annpot.core.errors import InputDataError


@pytest.fixture
def silicon():
    return StructureData(ase=bulk("Si", "diamond", a=5.43, cubic=True))


def test_outputs_are_linked_to_the_parent_and_the_seed(silicon):
    outputs, node = strain_structures.run_get_node(silicon, Int(4), Float(0.03), Bool(True), Int(11))
    assert node.is_finished_ok
    assert sorted(outputs) == [f"structure_{i:03d}" for i in range(4)]
    incoming = {link.link_label: link.node for link in node.base.links.get_incoming().all()}
    assert incoming["structure"].uuid == silicon.uuid and incoming["seed"].value == 11
    for structure in outputs.values():
        assert structure.creator.uuid == node.uuid
        assert len(structure.sites) == len(silicon.sites)


def test_same_seed_same_structures_different_seed_different(silicon):
    first = rattle_structures(silicon, Int(2), Float(0.05), Int(1))
    again = rattle_structures(silicon, Int(2), Float(0.05), Int(1))
    other = rattle_structures(silicon, Int(2), Float(0.05), Int(2))
    positions = {key: np.array([s.position for s in value.sites]) for key, value in first.items()}
    for key, value in again.items():
        np.testing.assert_array_equal(positions[key], np.array([s.position for s in value.sites]))
    assert not np.allclose(positions["structure_000"], np.array([s.position for s in other["structure_000"].sites]))


def test_supercell_vacancies_and_slabs(silicon):
    big = supercell_structure(silicon, List([2, 2, 1]))
    assert len(big.sites) == 32
    holes = vacancy_structures(big, Int(3), Int(0))
    assert [len(s.sites) for s in holes.values()] == [31, 31, 31]
    slabs = slab_structures(
        StructureData(ase=bulk("Cu", "fcc", a=3.61)), List([[1, 1, 1], [1, 0, 0]]), Int(3), Float(5.0)
    )
    assert len(slabs) == 2 and all(s.pbc == (True, True, True) for s in slabs.values())


def test_bad_parameters_fail_the_step_with_the_reason(silicon):
    with pytest.raises(InputDataError, match="max_strain"):
        strain_structures(silicon, Int(2), Float(0.9), Bool(False), Int(0))
