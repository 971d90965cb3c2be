"""merge_dataset: reference labels (LabelData, built by hand) become dataset frames with units, sources and reasons.

The labels are the labeller contract's output (:class:`~aiida_annpot.data.label.LabelData`: eV, eV/Å, eV/Å³ with
ASE's sign), whatever code made them; what is specific to Quantum ESPRESSO (its stress sign, GPa, parsed outputs) is
tested in tests/workflows/test_labelling_quantumespresso.py.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from aiida.orm import StructureData
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from aiida_annpot.calcfunctions import merge_dataset
from aiida_annpot.calcfunctions.dataset import label_to_frame
from aiida_annpot.core.dataset import dataset_hash, read_frames
from aiida_annpot.data import AtomisticDataset, LabelData

DUPLICATE = "duplicate of a structure already in the dataset"


def si_structure(seed: int, rattle: float = 0.02) -> StructureData:
    """The 8-atom diamond Si cell rattled with ``seed``: equal seeds give equal positions (a duplicate)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(stdev=rattle, seed=seed)
    return StructureData(ase=atoms)


def make_label(
    structure: StructureData,
    energy: float = -850.25,
    forces: np.ndarray | None = None,
    stress: np.ndarray | None = None,
    with_stress: bool = True,
) -> dict:
    """A stored label of ``structure`` as a labeller makes it (engine units, ASE's stress sign).

    Returns the two merge_dataset inputs ``structure`` and ``label``, the ``forces`` and ``stress`` (3×3, eV/Å³)
    put in the label and the ``uuid`` of the (made-up) calculation behind it.
    """
    structure = structure if structure.is_stored else structure.store()
    n_atoms = len(structure.sites)
    rng = np.random.default_rng(structure.pk)
    forces = rng.normal(scale=0.3, size=(n_atoms, 3)) if forces is None else np.asarray(forces)
    stress = np.diag([-0.03, -0.03, -0.03]) if stress is None else np.asarray(stress)
    calculation_uuid = str(uuid.uuid4())
    label = LabelData.build(
        energy, forces, stress if with_stress else None, calculation_uuid=calculation_uuid, code="test"
    ).store()
    return {"structure": structure, "label": label, "forces": forces, "stress": stress, "uuid": calculation_uuid}


def inputs_of(**labels) -> dict:
    """merge_dataset keyword inputs for ``labels`` (suffix → make_label result), in the order given."""
    return {f"{part}_{suffix}": label[part] for suffix, label in labels.items() for part in ("structure", "label")}


@pytest.fixture(scope="module")
def good():
    """Three usable labels of different structures (seeds 1, 2, 3), energies -850, -851, -852 eV."""
    return {key: make_label(si_structure(seed), energy=-849.0 - seed) for key, seed in (("a", 1), ("b", 2), ("c", 3))}


@pytest.fixture(scope="module")
def unusable():
    """A label with forces for 7 atoms of an 8-atom structure (a label of another structure)."""
    return make_label(si_structure(9), forces=np.zeros((7, 3)))


def test_units_stress_and_source_pass_through(tmp_path):
    stress = np.array([[-0.03, 0.002, -0.001], [0.002, -0.025, 0.0006], [-0.001, 0.0006, -0.02]])  # eV/Å³, ASE sign
    label = make_label(si_structure(4), energy=-850.25, stress=stress)
    result = merge_dataset(**inputs_of(a=label))

    assert result["rejected"].get_dict() == {}
    dataset = result["dataset"]
    assert isinstance(dataset, AtomisticDataset) and dataset.is_stored
    assert dataset.n_frames == 1 and dataset.elements == ["Si"]
    assert dataset.sources == [label["uuid"]] == [label["label"].calculation_uuid]

    (frame,) = dataset.to_frames()
    assert frame.get_potential_energy() == pytest.approx(-850.25, abs=1e-12)
    np.testing.assert_allclose(frame.get_forces(), label["forces"], rtol=0, atol=1e-12)  # eV/Å stay eV/Å
    np.testing.assert_allclose(frame.positions, label["structure"].get_ase().positions, rtol=0, atol=1e-12)
    # the label's stress is already ASE's (eV/Å³, positive = tensile): taken as it is, in Voigt order
    np.testing.assert_allclose(frame.get_stress(), full_3x3_to_voigt_6_stress(stress), rtol=1e-12, atol=0)
    assert frame.get_stress()[0] == pytest.approx(-0.03, rel=1e-12)
    assert frame.get_stress()[3] == pytest.approx(0.0006, rel=1e-12)  # yz
    assert dataset.base.attributes.get("has_stress") is True
    # the stored hash is the engine's hash of the frames as a training job reads them, and survives a round trip
    assert dataset.content_hash == dataset_hash(read_frames(dataset.write_extxyz(tmp_path / "frames.extxyz")))
    assert AtomisticDataset.from_frames(dataset.to_frames()).content_hash == dataset.content_hash


def test_a_label_without_stress_gives_a_frame_without_stress():
    label = make_label(si_structure(5), with_stress=False)
    assert label["label"].stress is None
    frame = label_to_frame(label["structure"], label["label"])
    assert "stress" not in frame.calc.results
    assert frame.get_potential_energy() == pytest.approx(-850.25)
    dataset = merge_dataset(**inputs_of(a=label))["dataset"]
    assert dataset.base.attributes.get("has_stress") is False


def test_a_label_of_another_atom_count_is_rejected_with_its_reason(good, unusable):
    result = merge_dataset(**inputs_of(short_forces=unusable, ok=good["a"]))

    rejected = result["rejected"].get_dict()
    assert rejected == {
        "short_forces": {"structure": unusable["structure"].uuid, "reason": "forces of shape (7, 3) for 8 atoms"}
    }
    assert result["dataset"].n_frames == 1 and result["dataset"].sources == [good["a"]["uuid"]]
    with pytest.raises(ValueError, match=r"forces of shape \(7, 3\) for 8 atoms"):
        label_to_frame(unusable["structure"], unusable["label"])


def test_a_frame_with_overlapping_atoms_is_rejected_alone(good):
    """An overlapping structure that the reference code labelled anyway: the merge keeps every other label and names
    the reason (it used to raise, which dropped all the converged labels of the batch)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    crushed = make_label(StructureData(ase=atoms), energy=-700.0)
    result = merge_dataset(**inputs_of(a=good["a"], crushed=crushed, b=good["b"]))
    reason = result["rejected"].get_dict()["crushed"]["reason"]
    assert "label crushed" in reason and "0.3" in reason, reason
    assert result["dataset"].names == ["a", "b"]
    assert result["dataset"].sources == [good["a"]["uuid"], good["b"]["uuid"]]


def test_a_duplicate_structure_in_the_same_call_is_rejected(good):
    twin = make_label(si_structure(1), energy=-700.0)  # another node, same numbers, cell and positions as good["a"]
    assert twin["structure"].uuid != good["a"]["structure"].uuid
    result = merge_dataset(**inputs_of(k2=twin, k1=good["a"]))  # suffix order decides which one is kept

    assert result["rejected"].get_dict() == {"k2": {"structure": twin["structure"].uuid, "reason": DUPLICATE}}
    assert result["dataset"].sources == [good["a"]["uuid"]]
    assert result["dataset"].to_frames()[0].get_potential_energy() == pytest.approx(-850.0)


def test_a_duplicate_of_the_input_dataset_is_rejected_and_new_frames_are_appended(good):
    dataset = merge_dataset(**inputs_of(a=good["a"]))["dataset"]
    twin = make_label(si_structure(1), energy=-700.0)
    result = merge_dataset(dataset=dataset, **inputs_of(x=twin, y=good["b"]))

    assert result["rejected"].get_dict() == {"x": {"structure": twin["structure"].uuid, "reason": DUPLICATE}}
    assert result["dataset"].sources == [good["a"]["uuid"], good["b"]["uuid"]]
    energies = [frame.get_potential_energy() for frame in result["dataset"].to_frames()]
    assert energies == pytest.approx([-850.0, -851.0])


def test_appending_keeps_the_old_frames_and_sources_first_and_adds_in_suffix_order(good):
    old_frames = []
    for seed in range(2):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.rattle(stdev=0.05, seed=100 + seed)
        atoms.calc = SinglePointCalculator(atoms, energy=-800.0 - seed, forces=np.zeros((8, 3)))
        old_frames.append(atoms)
    old_source = "0c3f5e3a-1111-4a4b-9c9d-000000000001"
    dataset = AtomisticDataset.from_frames(old_frames, [old_source, None]).store()
    result = merge_dataset(dataset=dataset, **inputs_of(c=good["c"], a=good["a"], b=good["b"]))

    merged = result["dataset"]
    assert merged.uuid != dataset.uuid and dataset.n_frames == 2  # the input node is left as it was
    assert merged.sources == [old_source, None, *(good[key]["uuid"] for key in "abc")]
    frames = merged.to_frames()
    assert [frame.get_potential_energy() for frame in frames] == pytest.approx([-800.0, -801.0, -850.0, -851.0, -852.0])
    np.testing.assert_array_equal(frames[1].positions, old_frames[1].positions)
    np.testing.assert_allclose(frames[4].positions, good["c"]["structure"].get_ase().positions, rtol=0, atol=1e-12)
    assert merged.base.attributes.get("has_stress") is False  # the old frames had none
    assert "stress" not in frames[0].calc.results and "stress" in frames[2].calc.results


def test_no_usable_label_and_no_dataset_gives_no_dataset_output(unusable):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    crushed = make_label(StructureData(ase=atoms))
    result = merge_dataset(**inputs_of(a=unusable, b=crushed))
    assert "dataset" not in result
    assert set(result["rejected"].get_dict()) == {"a", "b"}
    assert result["rejected"].is_stored


def test_no_usable_label_with_a_dataset_returns_the_same_frames(good, unusable):
    dataset = merge_dataset(**inputs_of(a=good["a"]))["dataset"]
    result = merge_dataset(dataset=dataset, **inputs_of(a=unusable))
    assert list(result["rejected"].get_dict()) == ["a"]
    assert result["dataset"].sources == dataset.sources
    assert result["dataset"].content_hash == dataset.content_hash


def test_provenance_links_the_dataset_to_the_labels(good):
    labels = {"a": good["a"], "b": good["b"]}
    result = merge_dataset(**inputs_of(**labels))
    dataset = result["dataset"]

    creator = dataset.creator
    assert creator is not None and creator.process_label == "merge_dataset"
    assert result["rejected"].creator.uuid == creator.uuid
    incoming = {link.link_label: link.node.uuid for link in creator.base.links.get_incoming().all()}
    for key, label in labels.items():
        assert incoming[f"label_{key}"] == label["label"].uuid
        assert incoming[f"structure_{key}"] == label["structure"].uuid
    # from the dataset back to the calculations that made its labels
    inputs = [creator.base.links.get_incoming(link_label_filter=f"label_{key}").one().node for key in labels]
    assert all(isinstance(node, LabelData) for node in inputs)
    assert [node.calculation_uuid for node in inputs] == dataset.sources


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (("structure_1", "label_1", "foo_1"), "unexpected input 'foo_1'"),
        (("structure_1", "label_1", "parameters_1"), "unexpected input 'parameters_1'"),  # the old, pw.x-only inputs
        (("structure", "label"), "unexpected input 'structure'"),
        (("structure_1",), "label 1 lacks label_1"),
        (("label_1",), "label 1 lacks structure_1"),
    ],
)
def test_bad_keywords_raise(good, keys, message):
    nodes = {part: good["a"][part] for part in ("structure", "label")}
    nodes["foo"] = nodes["parameters"] = good["a"]["label"]
    with pytest.raises(ValueError, match=message):
        merge_dataset(**{key: nodes[key.partition("_")[0]] for key in keys})
