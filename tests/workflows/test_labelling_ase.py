"""The ASE labeller (benchmarks and workflow tests): a real ``annpot label`` CalcJob on the local computer whose
LabelData is ASE's EMT on the same structure, with the calculation as its provenance; only registered calculator
names pass the ports."""

from __future__ import annotations

import numpy as np
import pytest
from aiida.common.links import LinkType
from aiida.engine import run_get_node
from aiida.orm import Dict, Int, Str, StructureData
from aiida.plugins import CalculationFactory, WorkflowFactory
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

from aiida_annpot.calculations.ase_label import AseLabelCalculation
from aiida_annpot.parsers.readers import OutputFileError, read_label_file
from aiida_annpot.workflows.labelling import labeller_names, load_labeller
from aiida_annpot.workflows.labelling.ase import AseLabelWorkChain
from aiida_annpot.workflows.reference import ReferenceWorkChain

from ..submission import validation_error

EMT_SETTINGS = {"calculator": "emt"}


def rattled_copper(seed: int, strain: float = 1.0) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61 * strain, cubic=True)
    atoms.cell[0, 1] = 0.15  # a sheared cell: every stress component is non-zero
    atoms.rattle(stdev=0.08, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def labelled(annpot_code) -> tuple[Atoms, object]:
    """(structure, finished AseLabelWorkChain node) of one rattled, sheared Cu cell."""
    atoms = rattled_copper(3)
    _, node = run_get_node(
        AseLabelWorkChain, structure=StructureData(ase=atoms), code=annpot_code, settings=Dict(EMT_SETTINGS)
    )
    assert node.is_finished_ok, f"{node.exit_status} {node.exit_message}"
    return atoms, node


def test_ase_is_an_installed_labeller():
    assert "ase" in labeller_names()
    assert load_labeller("ase") is AseLabelWorkChain is WorkflowFactory("annpot.labelling.ase")
    assert CalculationFactory("annpot.ase_label") is AseLabelCalculation


def test_the_label_is_emt_on_the_same_structure(labelled):
    atoms, node = labelled
    label = node.outputs.label
    reference = atoms.copy()
    reference.calc = EMT()
    assert label.code == "ase" and label.base.attributes.get("n_atoms") == len(atoms)
    assert label.energy == pytest.approx(reference.get_potential_energy(), abs=1e-10)
    np.testing.assert_allclose(label.forces, reference.get_forces(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(label.stress, reference.get_stress(voigt=False), rtol=0, atol=1e-12)  # eV/Å³, ASE sign
    assert np.abs(label.stress).min() > 1e-6  # a sheared, rattled cell: the comparison covers every component


def test_the_label_comes_from_the_calcjob(labelled):
    _, node = labelled
    label = node.outputs.label
    (link,) = node.base.links.get_outgoing(link_type=LinkType.CALL_CALC).all()
    calc = link.node
    assert link.link_label == "calculation" and calc.process_class is AseLabelCalculation and calc.is_finished_ok
    assert label.creator.uuid == calc.uuid == label.calculation_uuid  # label → the CalcJob that computed it
    assert calc.inputs.structure.uuid == node.inputs.structure.uuid
    assert calc.computer.uuid == node.inputs.code.computer.uuid  # it ran on the code's computer
    assert calc.get_remote_workdir()
    assert "label.json" in calc.outputs.retrieved.base.repository.list_object_names()


def test_a_structure_without_periodicity_gets_no_stress_and_an_element_emt_lacks_fails(annpot_code):
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]], cell=[10, 10, 10], pbc=False)
    _, node = run_get_node(
        AseLabelWorkChain, structure=StructureData(ase=cluster), code=annpot_code, settings=Dict(EMT_SETTINGS)
    )
    assert node.is_finished_ok and node.outputs.label.stress is None
    cluster.calc = EMT()
    np.testing.assert_allclose(node.outputs.label.forces, cluster.get_forces(), atol=1e-10)

    silicon = bulk("Si", "diamond", a=5.43)
    _, node = run_get_node(
        AseLabelWorkChain, structure=StructureData(ase=silicon), code=annpot_code, settings=Dict(EMT_SETTINGS)
    )
    assert node.exit_status == AseLabelWorkChain.exit_codes.ERROR_CALCULATION_FAILED.status
    assert "AseLabelCalculation<" in node.exit_message and "emt cannot label Si2" in node.exit_message


@pytest.mark.parametrize(
    "settings, expected",
    [
        (
            {"calculator": "mypackage.calculators.Evil"},
            "calculator 'mypackage.calculators.Evil' is not a registered ASE calculator (registered: zbl, lj, morse, "
            "emt",
        ),
        ({"calculator": "vasp"}, "calculator 'vasp' is not a registered ASE calculator"),
        ({"calculator": "emt", "parameters": {"cutoff": 3.0}}, "baseline 'emt' does not take parameter(s) cutoff"),
        ({"calculator": "emt", "command": "rm"}, "command: Extra inputs are not permitted"),
        ({}, "calculator: Field required"),
    ],
)
def test_an_unregistered_calculator_is_refused_at_the_ports(annpot_code, settings, expected):
    structure = StructureData(ase=rattled_copper(1))
    inputs = {"structure": structure, "code": annpot_code, "settings": Dict(settings)}
    message = validation_error(AseLabelWorkChain, inputs)
    assert message is not None and "ase settings: configuration: invalid AseLabelSettings" in message
    assert expected in message
    calc_inputs = {"structure": structure, "code": annpot_code, "config": Dict(settings)}
    assert expected in validation_error(AseLabelCalculation, calc_inputs)  # the CalcJob refuses it on its own too
    assert validation_error(AseLabelCalculation, {**calc_inputs, "config": Dict({"calculator": "lj"})}) is None


def test_the_protocol_entries_are_the_settings():
    assert AseLabelWorkChain.settings_from_protocol({"calculator": "emt"}, None, None) == {
        "calculator": "emt",
        "parameters": {},
    }
    with pytest.raises(ValueError, match="calculator\n  Field required"):
        AseLabelWorkChain.settings_from_protocol({}, None, None)


def test_reference_labels_a_set_through_the_seam_into_a_dataset(annpot_code):
    structures = {f"r{index}": StructureData(ase=rattled_copper(index)) for index in range(3)}
    _, node = run_get_node(
        ReferenceWorkChain,
        structures=structures,
        labeller=Str("ase"),
        code=annpot_code,
        settings=Dict(EMT_SETTINGS),
        max_concurrent=Int(2),
    )
    assert node.is_finished_ok and node.outputs.failed.get_dict() == {}
    dataset = node.outputs.dataset
    calcs = {node.outputs.labels[key].calculation_uuid for key in structures}
    assert dataset.n_frames == 3 and set(dataset.sources) == calcs
    expected = []
    for structure in structures.values():
        atoms = structure.get_ase()
        atoms.calc = EMT()
        expected.append(atoms.get_potential_energy())
    energies = sorted(frame.get_potential_energy() for frame in dataset.to_frames())
    np.testing.assert_allclose(energies, sorted(expected), rtol=0, atol=1e-10)


def test_the_label_file_reader():
    result = read_label_file(
        '{"energy": -1.5, "forces": [[0, 0, 1], [0, 0, -1]], "stress": null, "compute_seconds": 0.01, '
        '"process_seconds": 0.6}'
    )
    assert result["energy"] == -1.5 and result["forces"].shape == (2, 3) and result["stress"] is None
    assert (result["compute_seconds"], result["process_seconds"]) == (0.01, 0.6)
    assert read_label_file('{"energy": null, "forces": []}')["energy"] is None  # LabelData refuses it later
    with pytest.raises(OutputFileError, match="no usable energy, forces and stress"):
        read_label_file('{"energy": -1.5}')
    with pytest.raises(OutputFileError, match="not valid JSON"):
        read_label_file("{")
