"""merge_dataset: PwCalculation outputs (built by hand, no pw.x) become dataset frames with units, sources and reasons.

Each label is made to look like the outputs of a finished PwCalculation: a CalcJobNode of process type
``quantumespresso.pw`` with the structure as input and ``output_parameters`` / ``output_trajectory`` created by it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from aiida.common.links import LinkType
from aiida.orm import CalcJobNode, Dict, StructureData, TrajectoryData
from aiida.plugins import CalculationFactory
from ase import units
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from plumpy import ProcessState

from aiida_annpot.calcfunctions import merge_dataset
from aiida_annpot.calcfunctions.dataset import label_to_frame
from aiida_annpot.core.dataset import dataset_hash, read_frames
from aiida_annpot.data import AtomisticDataset

PW_PROCESS_TYPE = "aiida.calculations:quantumespresso.pw"
DUPLICATE = "duplicate of a structure already in the dataset"


def si_structure(seed: int, rattle: float = 0.02) -> StructureData:
    """The 8-atom diamond Si cell rattled with ``seed``: equal seeds give equal positions (a duplicate)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(stdev=rattle, seed=seed)
    return StructureData(ase=atoms)


def pw_label(
    structure: StructureData,
    energy: float | None = -850.25,
    forces: np.ndarray | None = None,
    stress_gpa: np.ndarray | None = None,
    exit_status: int = 0,
    with_forces: bool = True,
    energy_units: str = "eV",
) -> dict:
    """A stored, sealed PwCalculation node that finished with ``exit_status`` on ``structure``, and its outputs.

    Returns ``calc``, the three merge_dataset inputs ``structure``, ``parameters`` and ``trajectory``, and the
    ``forces`` and ``stress_gpa`` arrays put in the trajectory. ``energy=None`` leaves the energy out.
    """
    structure = structure if structure.is_stored else structure.store()
    n_atoms = len(structure.sites)
    rng = np.random.default_rng(structure.pk)
    forces = rng.normal(scale=0.3, size=(n_atoms, 3)) if forces is None else np.asarray(forces)
    stress_gpa = np.diag([5.0, 5.0, 5.0]) if stress_gpa is None else np.asarray(stress_gpa)

    calc = CalcJobNode(process_type=PW_PROCESS_TYPE)
    calc.base.links.add_incoming(structure, link_type=LinkType.INPUT_CALC, link_label="structure")
    calc.store()

    parameters = {"energy": energy, "energy_units": energy_units, "number_of_atoms": n_atoms}
    parameters = Dict({key: value for key, value in parameters.items() if value is not None})
    parameters.base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label="output_parameters")
    parameters.store()

    atoms = structure.get_ase()
    trajectory = TrajectoryData()
    trajectory.set_trajectory(atoms.get_chemical_symbols(), atoms.positions[None], cells=atoms.cell.array[None],
                              pbc=[bool(p) for p in atoms.pbc])  # fmt: skip
    if with_forces:
        trajectory.set_array("forces", forces[None])
    trajectory.set_array("stress", stress_gpa[None])
    trajectory.base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label="output_trajectory")
    trajectory.store()

    calc.set_exit_status(exit_status)
    calc.set_process_state(ProcessState.FINISHED)
    calc.seal()
    return {"calc": calc, "structure": structure, "parameters": parameters, "trajectory": trajectory,
            "forces": forces, "stress_gpa": stress_gpa}  # fmt: skip


def inputs_of(**labels) -> dict:
    """merge_dataset keyword inputs for ``labels`` (suffix → pw_label result), in the order given."""
    return {f"{part}_{suffix}": label[part] for suffix, label in labels.items()
            for part in ("structure", "parameters", "trajectory")}  # fmt: skip


@pytest.fixture(scope="module")
def good():
    """Three usable labels of different structures (seeds 1, 2, 3), energies -850, -851, -852 eV."""
    return {key: pw_label(si_structure(seed), energy=-849.0 - seed) for key, seed in (("a", 1), ("b", 2), ("c", 3))}


@pytest.fixture(scope="module")
def failed():
    """A PwCalculation that finished with exit status 410 (the SCF did not converge)."""
    return pw_label(si_structure(9), exit_status=410)


def test_the_hand_made_calculation_looks_like_a_finished_pw_calculation(good, failed):
    calc = good["a"]["calc"]
    assert calc.process_class is CalculationFactory("quantumespresso.pw")
    assert calc.is_finished_ok and calc.exit_status == 0 and calc.is_sealed
    assert good["a"]["parameters"].creator.uuid == calc.uuid
    assert good["a"]["trajectory"].creator.uuid == calc.uuid
    assert calc.base.links.get_incoming().get_node_by_label("structure").uuid == good["a"]["structure"].uuid
    assert failed["calc"].is_finished and not failed["calc"].is_finished_ok and failed["calc"].exit_status == 410


def test_units_stress_sign_and_source(tmp_path):
    stress_gpa = np.array([[5.0, 0.3, -0.2], [0.3, 4.0, 0.1], [-0.2, 0.1, 3.0]])  # QE's sign: positive = compressed
    label = pw_label(si_structure(4), energy=-850.25, stress_gpa=stress_gpa)
    result = merge_dataset(**inputs_of(a=label))

    assert result["rejected"].get_dict() == {}
    dataset = result["dataset"]
    assert isinstance(dataset, AtomisticDataset) and dataset.is_stored
    assert dataset.n_frames == 1 and dataset.elements == ["Si"]
    assert dataset.sources == [label["calc"].uuid]

    (frame,) = dataset.to_frames()
    assert frame.get_potential_energy() == pytest.approx(-850.25, abs=1e-12)
    np.testing.assert_allclose(frame.get_forces(), label["forces"], rtol=0, atol=1e-12)  # eV/Å stay eV/Å
    np.testing.assert_allclose(frame.positions, label["structure"].get_ase().positions, rtol=0, atol=1e-12)
    # ASE stress (eV/Å³, positive = tensile) is minus QE's, and 1 GPa = ase.units.GPa eV/Å³
    expected = full_3x3_to_voigt_6_stress(-stress_gpa * units.GPa)
    np.testing.assert_allclose(frame.get_stress(), expected, rtol=1e-12, atol=0)
    assert frame.get_stress()[0] == pytest.approx(-5.0 / 160.21766208, rel=1e-6)  # compressed → negative in ASE
    assert frame.get_stress()[3] == pytest.approx(-0.1 * units.GPa, rel=1e-12)  # yz
    assert dataset.base.attributes.get("has_stress") is True
    # the stored hash is the engine's hash of the frames as a training job reads them, and survives a round trip
    assert dataset.content_hash == dataset_hash(read_frames(dataset.write_extxyz(tmp_path / "frames.extxyz")))
    assert AtomisticDataset.from_frames(dataset.to_frames()).content_hash == dataset.content_hash


def test_unusable_labels_are_rejected_with_their_reasons(good, failed):
    bad = {
        "failed": failed,
        "no_forces": pw_label(si_structure(10), with_forces=False),
        "no_energy": pw_label(si_structure(11), energy=None),
        "rydberg": pw_label(si_structure(12), energy_units="Ry"),
        "nan_forces": pw_label(si_structure(13), forces=np.full((8, 3), np.nan)),
        "short_forces": pw_label(si_structure(14), forces=np.zeros((7, 3))),
    }
    reasons = {
        "failed": "the calculation did not finish successfully (exit status 410)",
        "no_forces": "no forces in output_trajectory (tprnfor must be set)",
        "no_energy": "no finite total energy in output_parameters (energy = None)",
        "rydberg": "energy units 'Ry', expected 'eV'",
        "nan_forces": "forces of shape (8, 3) or not finite, for 8 atoms",
        "short_forces": "forces of shape (7, 3) or not finite, for 8 atoms",
    }
    result = merge_dataset(**inputs_of(**bad, ok=good["a"]))

    rejected = result["rejected"].get_dict()
    assert {key: entry["reason"] for key, entry in rejected.items()} == reasons
    assert {key: entry["structure"] for key, entry in rejected.items()} == {
        k: v["structure"].uuid for k, v in bad.items()
    }
    assert result["dataset"].n_frames == 1 and result["dataset"].sources == [good["a"]["calc"].uuid]


def test_a_frame_with_overlapping_atoms_is_rejected_alone(good):
    """An overlapping structure that pw.x labelled anyway: the merge keeps every other label and names the reason
    (it used to raise, which dropped all the converged labels of the batch)."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions[1] = atoms.positions[0] + [0.3, 0.0, 0.0]
    crushed = pw_label(StructureData(ase=atoms), energy=-700.0)
    result = merge_dataset(**inputs_of(a=good["a"], crushed=crushed, b=good["b"]))
    reason = result["rejected"].get_dict()["crushed"]["reason"]
    assert "label crushed" in reason and "0.3" in reason, reason
    assert result["dataset"].names == ["a", "b"]
    assert result["dataset"].sources == [good["a"]["calc"].uuid, good["b"]["calc"].uuid]


@pytest.mark.parametrize("energy", [math.nan, math.inf])
def test_a_non_finite_energy_is_refused(good, energy):
    """AiiDA cannot store NaN in a Dict, so a non-finite energy is checked on the plain parsed dictionary."""
    parameters = {**good["a"]["parameters"].get_dict(), "energy": energy}
    with pytest.raises(ValueError, match=rf"no finite total energy in output_parameters \(energy = {energy}\)"):
        label_to_frame(good["a"]["structure"], parameters, good["a"]["trajectory"])


def test_a_duplicate_structure_in_the_same_call_is_rejected(good):
    twin = pw_label(si_structure(1), energy=-700.0)  # another node, same numbers, cell and positions as good["a"]
    assert twin["structure"].uuid != good["a"]["structure"].uuid
    result = merge_dataset(**inputs_of(k2=twin, k1=good["a"]))  # suffix order decides which one is kept

    assert result["rejected"].get_dict() == {"k2": {"structure": twin["structure"].uuid, "reason": DUPLICATE}}
    assert result["dataset"].sources == [good["a"]["calc"].uuid]
    assert result["dataset"].to_frames()[0].get_potential_energy() == pytest.approx(-850.0)


def test_a_duplicate_of_the_input_dataset_is_rejected_and_new_frames_are_appended(good):
    dataset = merge_dataset(**inputs_of(a=good["a"]))["dataset"]
    twin = pw_label(si_structure(1), energy=-700.0)
    result = merge_dataset(dataset=dataset, **inputs_of(x=twin, y=good["b"]))

    assert result["rejected"].get_dict() == {"x": {"structure": twin["structure"].uuid, "reason": DUPLICATE}}
    assert result["dataset"].sources == [good["a"]["calc"].uuid, good["b"]["calc"].uuid]
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
    assert merged.sources == [old_source, None, *(good[key]["calc"].uuid for key in "abc")]
    frames = merged.to_frames()
    assert [frame.get_potential_energy() for frame in frames] == pytest.approx([-800.0, -801.0, -850.0, -851.0, -852.0])
    np.testing.assert_array_equal(frames[1].positions, old_frames[1].positions)
    np.testing.assert_allclose(frames[4].positions, good["c"]["structure"].get_ase().positions, rtol=0, atol=1e-12)
    assert merged.base.attributes.get("has_stress") is False  # the old frames had none
    assert "stress" not in frames[0].calc.results and "stress" in frames[2].calc.results


def test_no_usable_label_and_no_dataset_gives_no_dataset_output(failed):
    no_energy = pw_label(si_structure(15), energy=None)
    result = merge_dataset(**inputs_of(a=failed, b=no_energy))
    assert "dataset" not in result
    assert set(result["rejected"].get_dict()) == {"a", "b"}
    assert result["rejected"].is_stored


def test_no_usable_label_with_a_dataset_returns_the_same_frames(good, failed):
    dataset = merge_dataset(**inputs_of(a=good["a"]))["dataset"]
    result = merge_dataset(dataset=dataset, **inputs_of(a=failed))
    assert list(result["rejected"].get_dict()) == ["a"]
    assert result["dataset"].sources == dataset.sources
    assert result["dataset"].content_hash == dataset.content_hash


def test_provenance_links_the_dataset_to_the_parsed_outputs(good):
    labels = {"a": good["a"], "b": good["b"]}
    result = merge_dataset(**inputs_of(**labels))
    dataset = result["dataset"]

    creator = dataset.creator
    assert creator is not None and creator.process_label == "merge_dataset"
    assert result["rejected"].creator.uuid == creator.uuid
    incoming = {link.link_label: link.node.uuid for link in creator.base.links.get_incoming().all()}
    for key, label in labels.items():
        assert incoming[f"parameters_{key}"] == label["parameters"].uuid
        assert incoming[f"trajectory_{key}"] == label["trajectory"].uuid
        assert incoming[f"structure_{key}"] == label["structure"].uuid
    # from the dataset back to the calculations that made its labels
    parameters = [creator.base.links.get_incoming(link_label_filter=f"parameters_{key}").one().node for key in labels]
    assert [node.creator.uuid for node in parameters] == dataset.sources


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (("structure_1", "parameters_1", "trajectory_1", "foo_1"), "unexpected input 'foo_1'"),
        (("structure", "parameters", "trajectory"), "unexpected input 'structure'"),
        (("structure_1", "trajectory_1"), "label 1 lacks parameters_1"),
        (("structure_1",), "label 1 lacks parameters_1, trajectory_1"),
    ],
)
def test_bad_keywords_raise(good, keys, message):
    nodes = {part: good["a"][part] for part in ("structure", "parameters", "trajectory")}
    nodes["foo"] = good["a"]["parameters"]
    with pytest.raises(ValueError, match=message):
        merge_dataset(**{key: nodes[key.partition("_")[0]] for key in keys})
