"""The Quantum ESPRESSO labeller's label: parsed pw.x outputs (built by hand, no pw.x) become a LabelData in the
engine's units, with QE's stress sign and GPa turned into ASE's eV/Å³, and unusable outputs are refused by reason.

Each calculation is made to look like a finished PwCalculation: a CalcJobNode of process type ``quantumespresso.pw``
with the structure as input and ``output_parameters`` / ``output_trajectory`` created by it; a PwBaseWorkChain node
returns them where the label work chain's own step is tested.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from aiida.common.links import LinkType
from aiida.orm import CalcJobNode, Dict, StructureData, TrajectoryData, WorkChainNode
from aiida.plugins import CalculationFactory, WorkflowFactory
from ase import units
from ase.build import bulk
from ase.stress import full_3x3_to_voigt_6_stress
from plumpy import ProcessState

from aiida_annpot.calcfunctions import merge_dataset
from aiida_annpot.data import LabelData
from aiida_annpot.workflows.labelling import labeller_names, load_labeller
from aiida_annpot.workflows.labelling.quantumespresso import (
    QuantumEspressoLabelWorkChain,
    quantumespresso_label,
    read_label,
)

PW_PROCESS_TYPE = "aiida.calculations:quantumespresso.pw"
PW_BASE_PROCESS_TYPE = "aiida.workflows:quantumespresso.pw.base"


def si_structure(seed: int, rattle: float = 0.02) -> StructureData:
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(stdev=rattle, seed=seed)
    return StructureData(ase=atoms)


def pw_outputs(
    structure: StructureData,
    energy: float | None = -850.25,
    forces: np.ndarray | None = None,
    stress_gpa: np.ndarray | None = None,
    exit_status: int = 0,
    with_forces: bool = True,
    with_stress: bool = True,
    energy_units: str = "eV",
) -> dict:
    """A stored, sealed PwCalculation node that finished with ``exit_status`` on ``structure``, and its outputs.

    Returns ``calc``, ``structure``, ``parameters`` (output_parameters) and ``trajectory`` (output_trajectory), and
    the ``forces`` and ``stress_gpa`` arrays put in the trajectory. ``energy=None`` leaves the energy out.
    """
    structure = structure if structure.is_stored else structure.store()
    n_atoms = len(structure.sites)
    rng = np.random.default_rng(structure.pk)
    forces = rng.normal(scale=0.3, size=(n_atoms, 3)) if forces is None else np.asarray(forces)
    stress_gpa = np.diag([5.0, 5.0, 5.0]) if stress_gpa is None else np.asarray(stress_gpa)

    calc = CalcJobNode(process_type=PW_PROCESS_TYPE)
    calc.set_process_label("PwCalculation")
    calc.base.links.add_incoming(structure, link_type=LinkType.INPUT_CALC, link_label="structure")
    calc.store()

    parameters = {"energy": energy, "energy_units": energy_units, "number_of_atoms": n_atoms}
    parameters = Dict({key: value for key, value in parameters.items() if value is not None})
    parameters.base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label="output_parameters")
    parameters.store()

    atoms = structure.get_ase()
    trajectory = TrajectoryData()
    trajectory.set_trajectory(
        atoms.get_chemical_symbols(),
        atoms.positions[None],
        cells=atoms.cell.array[None],
        pbc=[bool(p) for p in atoms.pbc],
    )
    if with_forces:
        trajectory.set_array("forces", forces[None])
    if with_stress:
        trajectory.set_array("stress", stress_gpa[None])
    trajectory.base.links.add_incoming(calc, link_type=LinkType.CREATE, link_label="output_trajectory")
    trajectory.store()

    calc.set_exit_status(exit_status)
    calc.set_process_state(ProcessState.FINISHED)
    calc.seal()
    return {
        "calc": calc,
        "structure": structure,
        "parameters": parameters,
        "trajectory": trajectory,
        "forces": forces,
        "stress_gpa": stress_gpa,
    }


@pytest.fixture(scope="module")
def good():
    return pw_outputs(si_structure(1), energy=-850.0)


def test_the_hand_made_calculation_looks_like_a_finished_pw_calculation(good):
    calc = good["calc"]
    assert calc.process_class is CalculationFactory("quantumespresso.pw") and calc.process_label == "PwCalculation"
    assert calc.is_finished_ok and calc.exit_status == 0 and calc.is_sealed
    assert good["parameters"].creator.uuid == calc.uuid
    assert good["trajectory"].creator.uuid == calc.uuid
    assert calc.base.links.get_incoming().get_node_by_label("structure").uuid == good["structure"].uuid


def test_quantumespresso_is_an_installed_labeller():
    assert "quantumespresso" in labeller_names()
    assert load_labeller("quantumespresso") is QuantumEspressoLabelWorkChain
    assert WorkflowFactory("annpot.labelling.quantumespresso") is QuantumEspressoLabelWorkChain
    with pytest.raises(ValueError, match=r"unknown labeller 'vasp'; installed: .*quantumespresso"):
        load_labeller("vasp")


def test_units_stress_sign_and_calculation(tmp_path):
    stress_gpa = np.array([[5.0, 0.3, -0.2], [0.3, 4.0, 0.1], [-0.2, 0.1, 3.0]])  # QE's sign: positive = compressed
    outputs = pw_outputs(si_structure(4), energy=-850.25, stress_gpa=stress_gpa)
    label = quantumespresso_label(outputs["parameters"], outputs["trajectory"])

    assert isinstance(label, LabelData) and label.is_stored and label.code == "quantumespresso"
    assert label.calculation_uuid == outputs["calc"].uuid  # the PwCalculation, whose frame the dataset will keep
    creator = label.creator
    assert creator.process_label == "quantumespresso_label"
    incoming = {link.link_label: link.node.uuid for link in creator.base.links.get_incoming().all()}
    assert incoming == {"parameters": outputs["parameters"].uuid, "trajectory": outputs["trajectory"].uuid}

    assert label.energy == pytest.approx(-850.25, abs=1e-12)  # eV stay eV
    np.testing.assert_allclose(label.forces, outputs["forces"], rtol=0, atol=1e-12)  # eV/Å stay eV/Å
    # ASE stress (eV/Å³, positive = tensile) is minus QE's, and 1 GPa = ase.units.GPa eV/Å³
    np.testing.assert_allclose(label.stress, -stress_gpa * units.GPa, rtol=1e-12, atol=0)
    assert label.stress[0, 0] == pytest.approx(-5.0 / 160.21766208, rel=1e-6)  # compressed → negative in ASE
    assert label.stress[1, 2] == pytest.approx(-0.1 * units.GPa, rel=1e-12)  # yz

    # through the merge, the frame has the same numbers and the PwCalculation as its source
    dataset = merge_dataset(structure_a=outputs["structure"], label_a=label)["dataset"]
    assert dataset.sources == [outputs["calc"].uuid]
    (frame,) = dataset.to_frames()
    assert frame.get_potential_energy() == pytest.approx(-850.25, abs=1e-12)
    np.testing.assert_allclose(frame.get_stress(), full_3x3_to_voigt_6_stress(-stress_gpa * units.GPa), rtol=1e-12)


def test_no_stress_in_the_trajectory_gives_a_label_without_stress():
    outputs = pw_outputs(si_structure(5), with_stress=False)
    energy, forces, stress = read_label(outputs["parameters"].get_dict(), outputs["trajectory"])
    assert stress is None and energy == -850.25 and forces.shape == (8, 3)
    assert quantumespresso_label(outputs["parameters"], outputs["trajectory"]).stress is None


def _reason(outputs: dict) -> str:
    """Why the outputs give no label: read_label's or LabelData.build's refusal."""
    with pytest.raises(ValueError) as info:
        energy, forces, stress = read_label(outputs["parameters"].get_dict(), outputs["trajectory"])
        LabelData.build(energy, forces, stress, calculation_uuid=outputs["calc"].uuid, code="quantumespresso")
    return str(info.value)


def test_unusable_outputs_are_refused_with_their_reasons():
    reasons = {
        "no forces in output_trajectory (tprnfor must be set)": pw_outputs(si_structure(10), with_forces=False),
        "no finite total energy (energy = None)": pw_outputs(si_structure(11), energy=None),
        "energy units 'Ry', expected 'eV'": pw_outputs(si_structure(12), energy_units="Ry"),
        "forces of shape (8, 3) or not finite": pw_outputs(si_structure(13), forces=np.full((8, 3), np.nan)),
    }
    assert {reason: _reason(outputs) for reason, outputs in reasons.items()} == {reason: reason for reason in reasons}


@pytest.mark.parametrize("energy", [math.nan, math.inf])
def test_a_non_finite_energy_is_refused(good, energy):
    """AiiDA cannot store NaN in a Dict, so a non-finite energy is checked on the plain parsed dictionary."""
    parameters = {**good["parameters"].get_dict(), "energy": energy}
    energy_read, forces, stress = read_label(parameters, good["trajectory"])
    with pytest.raises(ValueError, match=rf"no finite total energy \(energy = {energy}\)"):
        LabelData.build(energy_read, forces, stress, calculation_uuid=good["calc"].uuid, code="quantumespresso")


# --- the label work chain's inspection of its PwBaseWorkChain ---------------------------------------------------


def pw_base(exit_status: int, outputs: dict | None = None, message: str = "") -> WorkChainNode:
    """A finished PwBaseWorkChain node (``exit_status``, ``message``) returning ``outputs``' parameters and
    trajectory."""
    node = WorkChainNode()
    node.process_type = PW_BASE_PROCESS_TYPE
    node.set_process_label("PwBaseWorkChain")
    node.store()
    if outputs is not None:
        for name in ("parameters", "trajectory"):
            outputs[name].base.links.add_incoming(node, link_type=LinkType.RETURN, link_label=f"output_{name}")
    node.set_process_state(ProcessState.FINISHED)
    node.set_exit_status(exit_status)
    node.set_exit_message(message or None)
    node.seal()
    return node


@pytest.fixture
def label_process(aiida_profile, local_computer, si_pseudo_family):
    """Factory ``label_process(pw_base_node)``: a QuantumEspressoLabelWorkChain instance (not run) whose
    PwBaseWorkChain is ``pw_base_node``, ready for ``inspect_pw``."""
    from aiida.engine.utils import instantiate_process
    from aiida.manage import get_manager
    from aiida.orm import InstalledCode

    code = InstalledCode(
        computer=local_computer,
        filepath_executable="/bin/true",
        label="pw-never-run",
        default_calc_job_plugin="quantumespresso.pw",
    )
    settings = {
        "pseudo_family": si_pseudo_family,
        "parameters": {"CONTROL": {"tprnfor": True}},
        "kpoints_distance": 0.6,
    }

    def make(node):
        process = instantiate_process(
            get_manager().get_runner(),
            QuantumEspressoLabelWorkChain,
            structure=si_structure(20),
            code=code,
            settings=Dict(settings),
        )
        process.ctx.pw_base = node
        return process

    return make


def test_a_failed_pw_base_work_chain_is_named_with_its_exit_status(label_process):
    node = pw_base(410, message="the electronic minimization cycle did not reach self-consistency")
    exit_code = label_process(node).inspect_pw()
    assert exit_code.status == QuantumEspressoLabelWorkChain.exit_codes.ERROR_CALCULATION_FAILED.status == 310
    assert exit_code.message == (
        f"PwBaseWorkChain<{node.pk}> failed: exit status 410: the electronic "
        "minimization cycle did not reach self-consistency"
    )


def test_outputs_without_forces_are_an_invalid_label(label_process):
    node = pw_base(0, pw_outputs(si_structure(21), with_forces=False))
    exit_code = label_process(node).inspect_pw()
    assert exit_code.status == QuantumEspressoLabelWorkChain.exit_codes.ERROR_INVALID_LABEL.status == 311
    assert exit_code.message == (
        f"PwBaseWorkChain<{node.pk}> gave no usable label: no forces in output_trajectory (tprnfor must be set)"
    )


def test_good_outputs_give_the_label_of_the_pw_calculation(label_process):
    outputs = pw_outputs(si_structure(22), energy=-851.5)
    process = label_process(pw_base(0, outputs))
    assert process.inspect_pw() is None
    label = process.outputs["label"]
    assert label.calculation_uuid == outputs["calc"].uuid and label.energy == -851.5
    assert label.creator.process_label == "quantumespresso_label"
