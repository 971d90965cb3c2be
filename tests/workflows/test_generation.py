"""Generated copies of an input cell (:func:`aiida_annpot.workflows.generation.generate_copies`): the names and kinds
of every copy, the geometry each kind promises (isotropic volume series, rattles that keep atoms apart, vacancies in
the vacancy supercell), the cell whose k-point mesh each copy uses, and provenance back to the input cell."""

from __future__ import annotations

import numpy as np
import pytest
from aiida.orm import StructureData
from ase.build import bulk
from ase.neighborlist import neighbor_list

from aiida_annpot.common.config import GenerationConfig
from aiida_annpot.workflows.generation import generate_copies, kind_of

LATTICE = 5.43
NEAREST = np.sqrt(3.0) / 4.0 * LATTICE

SETTINGS = GenerationConfig(
    volumes=5,
    anisotropic_strains=2,
    rattles=1,
    rattle_amplitudes=[0.05, 0.1],
    vacancies=1,
    vacancy_supercell=[2, 1, 1],
    vacancy_rattles=[0.05],
)
NAMES = {
    "ideal": "ideal",
    **{f"volume_{i:03d}": "volume" for i in (0, 1, 3, 4)},  # volume_002 would be the ideal cell again
    **{f"isotropic_{i:03d}": "isotropic" for i in range(4)},  # the default isotropic_strains
    "anisotropic_000": "anisotropic",
    "anisotropic_001": "anisotropic",
    "rattle050_000": "rattle050",
    "rattle100_000": "rattle100",
    "vacancyhost": "vacancyhost",
    "vacancy_000": "vacancy",
    "vacancyrattle050_000": "vacancyrattle050",
}
VACANCY_NAMES = ("vacancyhost", "vacancy_000", "vacancyrattle050_000")


@pytest.fixture(scope="module")
def silicon(aiida_profile):
    return StructureData(ase=bulk("Si", "diamond", a=LATTICE, cubic=True)).store()


@pytest.fixture(scope="module")
def made(silicon):
    return generate_copies(silicon, "si", SETTINGS)


def ase(made, name):
    return made.structures[name].get_ase()


def test_names_and_kinds(made):
    assert set(made.structures) == set(NAMES)
    assert {name: kind_of(name) for name in made.structures} == NAMES


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ideal", "ideal"),
        ("volume_004", "volume"),
        ("vacancyrattle120_013", "vacancyrattle120"),
        ("vacancyhost", "vacancyhost"),
        ("test_si_rattle050_001", "test_si_rattle050"),
        ("slab_10", "slab"),
    ],
)
def test_kind_of_strips_only_the_trailing_index(name, kind):
    assert kind_of(name) == kind


def volume_ratios(made, names, ideal) -> list[float]:
    """V/V0 of the named copies, each checked to be ``ideal`` scaled isotropically (fractional positions kept)."""
    ratios = []
    for name in names:
        copy = ase(made, name)
        np.testing.assert_allclose(copy.cell.angles(), 90.0)
        lengths = copy.cell.lengths() / ideal.cell.lengths()
        assert lengths == pytest.approx([lengths[0]] * 3, rel=1e-12)
        np.testing.assert_allclose(copy.get_scaled_positions(), ideal.get_scaled_positions(), atol=1e-12)
        ratios.append(copy.get_volume() / ideal.get_volume())
    return ratios


def test_the_volume_series_is_isotropic_and_spans_the_strain_with_the_ideal_cell_as_its_centre(made, silicon):
    names = sorted(name for name in made.structures if kind_of(name) in ("volume", "ideal"))
    ratios = sorted(volume_ratios(made, names, silicon.get_ase()))
    max_strain = SETTINGS.max_volume_strain
    assert ratios == pytest.approx(np.linspace(1.0 - max_strain, 1.0 + max_strain, 5), rel=1e-12)


def test_without_the_ideal_cell_the_series_keeps_its_centre(silicon):
    settings = GenerationConfig(include_ideal=False, volumes=5, max_volume_strain=0.06, isotropic_strains=0, rattles=0)
    made = generate_copies(silicon, "si", settings)
    assert sorted(made.structures) == [f"volume_{i:03d}" for i in range(5)]
    ratios = volume_ratios(made, sorted(made.structures), silicon.get_ase())
    assert ratios == pytest.approx(np.linspace(0.94, 1.06, 5), rel=1e-12)


def test_strained_copies_change_the_cell_within_the_strain(made, silicon):
    ideal = silicon.get_ase()
    for name in ("anisotropic_000", "anisotropic_001", "isotropic_000"):
        copy = ase(made, name)
        strain = np.linalg.solve(ideal.cell.array, copy.cell.array) - np.eye(3)
        assert 0.0 < np.abs(strain).max() <= SETTINGS.max_strain
        assert np.abs(strain - strain.T).max() < 1e-12  # symmetric: no rotation
    shear = np.linalg.solve(ideal.cell.array, ase(made, "anisotropic_000").cell.array)
    assert np.abs(shear - np.diag(np.diag(shear))).max() > 1e-4  # the anisotropic strain shears


def test_rattled_copies_have_their_amplitude_and_keep_atoms_apart(made, silicon):
    ideal = silicon.get_ase()
    spreads = {}
    for name in ("rattle050_000", "rattle100_000"):
        copy = ase(made, name)
        assert np.array_equal(copy.cell.array, ideal.cell.array)
        spreads[name] = float(np.sqrt(np.mean((copy.positions - ideal.positions) ** 2)))
        assert neighbor_list("d", copy, 3.0).min() >= SETTINGS.min_distance_ratio * NEAREST
    assert 0.5 * 0.05 < spreads["rattle050_000"] < 1.5 * 0.05  # 24 deviates: within ±50 % of the amplitude
    assert 0.5 * 0.10 < spreads["rattle100_000"] < 1.5 * 0.10


def test_vacancies_live_in_the_vacancy_supercell_and_use_its_mesh(made, silicon):
    host = made.cells["si_vacancy"]
    assert set(made.cells) == {"si", "si_vacancy"} and made.cells["si"] is silicon
    assert made.structures["vacancyhost"] is host
    assert len(host.sites) == 16
    assert host.get_ase().get_volume() == pytest.approx(2 * silicon.get_ase().get_volume(), rel=1e-12)
    vacancy, shaken = ase(made, "vacancy_000"), ase(made, "vacancyrattle050_000")
    assert len(vacancy) == len(shaken) == 15
    perfect = host.get_ase().positions
    kept = [np.isclose(perfect, position, atol=1e-9).all(axis=1).any() for position in vacancy.positions]
    assert all(kept)  # unrelaxed: 15 of the host's 16 sites
    displacement = shaken.positions - vacancy.positions
    assert 0.0 < np.sqrt(np.mean(displacement**2)) < 0.1
    assert {name: made.cell_of[name] for name in VACANCY_NAMES} == dict.fromkeys(VACANCY_NAMES, "si_vacancy")
    others = set(NAMES) - set(VACANCY_NAMES)
    assert {name: made.cell_of[name] for name in others} == dict.fromkeys(others, "si")


def test_without_a_vacancy_supercell_the_ideal_cell_hosts_the_vacancy(silicon):
    made = generate_copies(silicon, "si", GenerationConfig(isotropic_strains=0, rattles=0, vacancies=2))
    assert set(made.structures) == {"ideal", "vacancy_000", "vacancy_001"}
    assert set(made.cells) == {"si"} and set(made.cell_of.values()) == {"si"}
    assert [len(made.structures[name].sites) for name in ("vacancy_000", "vacancy_001")] == [7, 7]
    removed = [
        {tuple(np.round(p, 6)) for p in silicon.get_ase().positions}
        - {tuple(np.round(p, 6)) for p in made.structures[name].get_ase().positions}
        for name in ("vacancy_000", "vacancy_001")
    ]
    assert len(removed[0]) == len(removed[1]) == 1 and removed[0] != removed[1]  # distinct sites


def test_every_copy_is_made_by_a_calcfunction_from_its_parent(made, silicon):
    """Provenance: the ideal cell is the input itself; everything else is an output of a calcfunction whose
    ``structure`` input is the cell it was made from."""
    parent = {name: silicon for name in NAMES}
    parent.update(
        {"vacancy_000": made.structures["vacancyhost"], "vacancyrattle050_000": made.structures["vacancy_000"]}
    )
    assert made.structures["ideal"] is silicon and silicon.creator is None
    for name in set(NAMES) - {"ideal"}:
        structure = made.structures[name]
        assert structure.is_stored and structure.creator is not None, name
        inputs = {link.link_label: link.node for link in structure.creator.base.links.get_incoming().all()}
        assert inputs["structure"].uuid == parent[name].uuid, name
    rattle = made.structures["rattle100_000"].creator.base.links.get_incoming().all()
    values = {link.link_label: link.node.value for link in rattle if link.link_label != "structure"}
    assert values["stdev"] == 0.1 and values["min_distance_ratio"] == SETTINGS.min_distance_ratio


def test_the_same_settings_give_the_same_structures(made, silicon):
    again = generate_copies(silicon, "si", SETTINGS)
    for name in NAMES:
        np.testing.assert_array_equal(ase(again, name).positions, ase(made, name).positions)
        np.testing.assert_array_equal(ase(again, name).cell.array, ase(made, name).cell.array)
    other = generate_copies(
        silicon, "si", GenerationConfig(rattles=1, isotropic_strains=0, include_ideal=False, seed=1)
    )
    assert not np.allclose(ase(other, "rattle050_000").positions, ase(made, "rattle050_000").positions)


def test_rattled_vacancy_cells_keep_atoms_apart_too(made):
    links = made.structures["vacancyrattle050_000"].creator.base.links.get_incoming().all()
    values = {link.link_label: link.node.value for link in links if link.link_label != "structure"}
    assert values.get("min_distance_ratio") == SETTINGS.min_distance_ratio
