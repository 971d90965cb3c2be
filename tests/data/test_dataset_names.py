"""Per-frame structure names of ``annpot.dataset`` (:attr:`AtomisticDataset.names`): round trip through the database,
frames without a name, length checks, and datasets stored before frames had names."""

from __future__ import annotations

import numpy as np
import pytest
from aiida.orm import load_node
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from aiida_annpot.data import AtomisticDataset


def labelled(seed: int, repeat: int = 1):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeat, 1, 1))
    atoms.rattle(0.05, seed=seed)
    atoms.calc = EMT()
    atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    return atoms


def test_names_round_trip_through_the_database_next_to_their_frames(aiida_profile):
    frames = [labelled(seed, repeat=1 + seed % 2) for seed in range(4)]
    names = ["vacancyrattle050_000", None, "ideal", "volume_003"]
    sources = [None, "0c3f5e3a-1111-4a4b-9c9d-000000000001", None, None]
    node = AtomisticDataset.from_frames(frames, sources=sources, names=names).store()
    loaded = load_node(node.pk)
    assert loaded.names == names
    assert loaded.sources == sources
    for frame, back in zip(frames, loaded.to_frames(), strict=True):  # the name stays with its frame
        assert len(back) == len(frame) and back.get_potential_energy() == frame.get_potential_energy()


def test_names_do_not_change_the_content_hash(aiida_profile):
    """The hash is that of the training data a model records: names are bookkeeping, not data."""
    frames = [labelled(seed) for seed in range(3)]
    named = AtomisticDataset.from_frames(frames, names=["a_000", "b_000", "c_000"])
    assert named.content_hash == AtomisticDataset.from_frames(frames).content_hash


def test_without_names_every_frame_is_unnamed(aiida_profile):
    node = AtomisticDataset.from_frames([labelled(0), labelled(1)]).store()
    assert load_node(node.pk).names == [None, None]


@pytest.mark.parametrize("count", [1, 3])
def test_a_names_list_of_another_length_is_refused(aiida_profile, count):
    with pytest.raises(ValueError, match=f"{count} names given for 2 frames"):
        AtomisticDataset.from_frames([labelled(0), labelled(1)], names=["x"] * count)


def test_a_dataset_stored_without_the_names_array_reads_as_unnamed(aiida_profile):
    node = AtomisticDataset.from_frames([labelled(0), labelled(1), labelled(2)], names=["a", "b", "c"])
    node.delete_array("names")  # as stored before frames had names
    node.store()
    loaded = load_node(node.pk)
    assert "names" not in loaded.get_arraynames()
    assert loaded.names == [None, None, None]
    assert len(loaded.to_frames()) == 3


def test_names_array_is_stored_as_text(aiida_profile):
    node = AtomisticDataset.from_frames([labelled(0), labelled(1)], names=["rattle100_001", None]).store()
    stored = load_node(node.pk).get_array("names")
    assert stored.dtype.kind == "U" and stored.tolist() == ["rattle100_001", ""]
    assert np.array_equal(load_node(node.pk).get_array("n_atoms"), [4, 4])
