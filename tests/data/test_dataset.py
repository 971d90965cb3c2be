"""annpot.dataset: round trips through the database and extxyz, hashes, provenance UUIDs, queries, bad input."""

import ase.io
import numpy as np
import pytest
from aiida.orm import QueryBuilder, load_node
from aiida.plugins import DataFactory
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from aiida_annpot.core.dataset import dataset_hash
from aiida_annpot.core.errors import InputDataError
from aiida_annpot.data import AtomisticDataset


def labelled(seed: int, stress: bool = True, element: str = "Cu", repeat: int = 2):
    atoms = bulk(element, "fcc", a=3.61 if element == "Cu" else 4.08, cubic=True).repeat((repeat, 1, 1))
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if stress:
        results["stress"] = atoms.get_stress()
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def assert_same_frames(left, right, atol: float = 0.0):
    """Equal frames: bit for bit by default; extxyz text keeps 8 decimals, hence ``atol`` for it."""
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        assert np.array_equal(a.numbers, b.numbers) and np.array_equal(a.pbc, b.pbc)
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=atol)
        np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=atol)
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), rel=0, abs=atol)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), rtol=0, atol=atol)
        if "stress" in a.calc.results:
            np.testing.assert_allclose(a.get_stress(), b.get_stress(), rtol=0, atol=atol)
        else:
            assert "stress" not in b.calc.results


def test_entry_point_loads_the_class():
    assert DataFactory("annpot.dataset") is AtomisticDataset


def test_round_trip_through_the_database_keeps_frames_labels_hash_and_sources(tmp_path):
    frames = [labelled(seed, repeat=1 + seed % 3) for seed in range(5)]  # frames of different sizes
    sources = ["0c3f5e3a-1111-4a4b-9c9d-000000000001", None, "0c3f5e3a-1111-4a4b-9c9d-000000000003", None, None]
    node = AtomisticDataset.from_frames(frames, sources=sources).store()
    loaded = load_node(node.pk)
    assert isinstance(loaded, AtomisticDataset)
    assert_same_frames(frames, loaded.to_frames())
    assert loaded.sources == sources
    assert loaded.n_frames == 5 and loaded.base.attributes.get("n_atoms") == sum(len(f) for f in frames)
    assert loaded.elements == ["Cu"] and loaded.base.attributes.get("has_stress") is True
    # the hash is the engine's, over the frames as a training run reads them from the extxyz it is given
    written = ase.io.read(loaded.write_extxyz(tmp_path / "written.extxyz"), index=":")
    assert loaded.content_hash == dataset_hash(written) == AtomisticDataset.from_frames(written).content_hash


def test_frames_without_stress_stay_without_stress():
    frames = [labelled(0, stress=False), labelled(1)]
    node = AtomisticDataset.from_frames(frames).store()
    assert node.base.attributes.get("has_stress") is False
    assert_same_frames(frames, node.to_frames())


def test_extxyz_export_and_import_round_trip(tmp_path):
    frames = [labelled(seed) for seed in range(3)] + [labelled(9, element="Au")]
    node = AtomisticDataset.from_frames(frames)
    path = node.write_extxyz(tmp_path / "data.extxyz")
    read_back = ase.io.read(path, index=":")
    assert_same_frames(frames, read_back, atol=1e-7)
    again = AtomisticDataset.from_extxyz(path)
    assert again.content_hash == dataset_hash(read_back) and again.elements == ["Au", "Cu"]
    assert again.n_frames == 4


def test_queryable_by_hash_and_elements():
    frames = [labelled(seed, element="Au") for seed in (11, 12)]
    node = AtomisticDataset.from_frames(frames).store()
    query = QueryBuilder().append(AtomisticDataset, filters={"attributes.content_hash": node.content_hash})
    assert [n.pk for n in query.all(flat=True)] == [node.pk]
    query = QueryBuilder().append(AtomisticDataset, filters={"attributes.elements": {"contains": ["Au"]}})
    assert node.pk in [n.pk for n in query.all(flat=True)]


def test_bad_frames_are_rejected_before_a_node_exists():
    frame = labelled(0)
    frame.calc.results["energy"] = float("nan")
    with pytest.raises(InputDataError, match="non-finite energy"):
        AtomisticDataset.from_frames([frame])
    with pytest.raises(InputDataError, match="empty"):
        AtomisticDataset.from_frames([])
    with pytest.raises(ValueError, match="2 sources given for 1 frames"):
        AtomisticDataset.from_frames([labelled(1)], sources=[None, None])
