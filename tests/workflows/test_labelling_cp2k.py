"""The CP2K labeller with the real CP2K (Debian's cp2k.psmp, one rank, one thread; scripts/setup.sh installs it).

Water clusters in a 9 Å non-periodic box (wavelet Poisson solver) with BLYP-D3, GTH pseudopotentials and the
DZVP-MOLOPT-SR-GTH basis at 400 Ry: the label's energy and forces are the CP2K output's Hartree and Hartree/bohr
numbers in eV and eV/Å (read here with CODATA 2018 constants, independently of the module's parser), the forces are
the gradient of the labelled energy (central difference of two more labels), an isolated molecule feels no net force,
and a rotated dimer has the same energy and rotated forces; a periodic cell gets the analytical stress in ASE's sign.
Structures and settings that CP2K cannot take are refused at port validation, naming the structure, element or field.

All CP2K runs (six, 5–55 s each on a loaded 2-core machine, 3 minutes in all) happen once, in the module fixture
``labelled``; the tests that use it are marked ``cp2k`` and ``slow``, the others need no CP2K run.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from aiida.common.links import LinkType
from aiida.engine import run_get_node
from aiida.orm import CalcJobNode, Dict, StructureData
from aiida.plugins import CalculationFactory, WorkflowFactory
from ase import Atoms
from ase.build import molecule
from ase.collections import s22

from aiida_annpot.data import LabelData
from aiida_annpot.workflows.labelling import labeller_names, load_labeller
from aiida_annpot.workflows.labelling.cp2k import (
    PRESETS,
    Cp2kLabelWorkChain,
    Cp2kSettings,
    cp2k_parameters,
    read_label,
    read_stress,
)

from ..submission import validation_error

#: CODATA 2018, independent of ASE's constants (CODATA 2014; the two differ by 1e-8 relative).
HARTREE_EV = 27.211386245988
BOHR_ANGSTROM = 0.529177210903
GPA_EV_PER_A3 = 1.0 / 160.21766208

#: Central-difference step (Å) and the atom and direction displaced: the H-bond donor's oxygen along y, where the
#: force is about 0.75 eV/Å. The difference's own error is O(STEP²): 0.25 % of the force at 0.005 Å, 0.06 % at
#: 0.0025 Å (by hand on the monomer: the Richardson extrapolation of the two matched CP2K's force to 2e-6 eV/Å).
STEP, ATOM, AXIS = 0.002, 0, 1
#: The balanced preset in a 9 Å box (the preset's 12 Å box has 2.4× the grid points) with 2.5 Å of vacuum.
SETTINGS = Cp2kLabelWorkChain.settings_from_protocol({"preset": "balanced", "box": 9.0, "min_vacuum": 2.5}, None, None)
#: A rotation of the dimer about its centre: 37° about (1, 2, 3).
ROTATION = (37.0, (1.0, 2.0, 3.0))


def isolated(atoms: Atoms) -> StructureData:
    """A non-periodic structure of ``atoms`` (the cell is not used: the box is ``SETTINGS['box']``)."""
    atoms = atoms.copy()
    atoms.cell, atoms.pbc = np.eye(3) * 10.0, False
    return StructureData(ase=atoms)


def dimer() -> Atoms:
    """The water dimer of the S22 set (donor O, H, H, acceptor O, H, H)."""
    return s22["Water_dimer"].copy()


def displaced(step: float) -> Atoms:
    atoms = dimer()
    atoms.positions[ATOM, AXIS] += step
    return atoms


def rotated() -> Atoms:
    atoms = dimer()
    atoms.rotate(ROTATION[0], ROTATION[1], center="COP")
    return atoms


def periodic_water() -> StructureData:
    """One water molecule in a periodic 4.5 Å cube: compressed, so its stress is about 1 GPa."""
    atoms = molecule("H2O")
    atoms.cell, atoms.pbc = np.eye(3) * 4.5, True
    atoms.center()
    return StructureData(ase=atoms)


@pytest.fixture(scope="module")
def labelled(cp2k_code) -> dict:
    """``{name: (structure, Cp2kLabelWorkChain node)}`` of every structure this module labels, each run once."""
    structures = {
        "monomer": isolated(molecule("H2O")),
        "dimer": isolated(dimer()),
        "plus": isolated(displaced(+STEP)),
        "minus": isolated(displaced(-STEP)),
        "rotated": isolated(rotated()),
        "periodic": periodic_water(),
    }
    nodes = {}
    for name, structure in structures.items():
        fixed = Cp2kLabelWorkChain.fixed_inputs(structure, Dict(SETTINGS), name)  # the periodic cell's own grid
        _, node = run_get_node(
            Cp2kLabelWorkChain, structure=structure, code=cp2k_code, settings=Dict(SETTINGS), fixed=fixed
        )
        assert node.is_finished_ok, f"{name}: {node.exit_status} {node.exit_message}"
        nodes[name] = (structure, node)
    return nodes


def calculation_of(node) -> CalcJobNode:
    """The (single) Cp2kCalculation under a label work chain."""
    (calc,) = [child for child in node.called_descendants if isinstance(child, CalcJobNode)]
    return calc


def output_text(node) -> str:
    return calculation_of(node).outputs.retrieved.base.repository.get_object_content("aiida.out")


def file_energy_and_forces(text: str) -> tuple[float, np.ndarray]:
    """Energy (Hartree) and forces (Hartree/bohr) as CP2K printed them, read without the module's parser."""
    (energy,) = re.findall(r"^ ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)$", text, re.M)
    block = text.split(" ATOMIC FORCES in [a.u.]")[-1].split(" SUM OF ATOMIC FORCES")[0]
    rows = re.findall(r"^\s+\d+\s+\d+\s+[A-Z][a-z]?\s+(\S+)\s+(\S+)\s+(\S+)$", block, re.M)
    return float(energy), np.array(rows, dtype=float)


# --- the label and its units ------------------------------------------------------------------------------------
def test_cp2k_is_an_installed_labeller():
    assert "cp2k" in labeller_names()
    assert load_labeller("cp2k") is Cp2kLabelWorkChain is WorkflowFactory("annpot.labelling.cp2k")
    assert Cp2kLabelWorkChain.calc_job_plugins == ("cp2k",)


@pytest.mark.cp2k
@pytest.mark.slow
@pytest.mark.parametrize("name", ["monomer", "dimer"])
def test_energy_and_forces_are_the_output_file_in_ev_and_ev_per_angstrom(labelled, name):
    structure, node = labelled[name]
    label = node.outputs.label
    energy_hartree, forces_atomic = file_energy_and_forces(output_text(node))
    assert isinstance(label, LabelData) and label.code == "cp2k"
    assert label.energy == pytest.approx(energy_hartree * HARTREE_EV, rel=1e-7)
    assert label.energy == pytest.approx({"monomer": -467.6, "dimer": -935.5}[name], abs=0.2)  # BLYP-D3, GTH
    assert forces_atomic.shape == (len(structure.sites), 3) == label.forces.shape
    np.testing.assert_allclose(label.forces, forces_atomic * HARTREE_EV / BOHR_ANGSTROM, rtol=1e-7, atol=1e-9)
    assert label.stress is None  # non-periodic: no stress
    assert np.abs(label.forces).max() > 0.1  # real forces, not zeros: the S22 geometry is not BLYP's minimum


@pytest.mark.cp2k
@pytest.mark.slow
@pytest.mark.parametrize("name", ["monomer", "dimer"])
def test_an_isolated_molecule_feels_no_net_force(labelled, name):
    """Up to the real-space grid's breaking of translation invariance (egg-box effect), which at 400 Ry depends on
    how the atoms sit on the grid: measured 0.040 eV/Å for both in the 9 Å box, 0.002 and 0.016 eV/Å in a 10 Å one;
    the dimer's largest force is 0.95 eV/Å."""
    forces = labelled[name][1].outputs.label.forces
    assert np.linalg.norm(forces.sum(axis=0)) < 0.06


@pytest.mark.cp2k
@pytest.mark.slow
def test_the_forces_are_the_gradient_of_the_energy(labelled):
    """Central difference of the labels of the dimer with one atom moved by ±STEP. CP2K centres the cluster's
    bounding box in its box, which this atom (not an extreme one along y) does not move; the grid's egg-box effect is
    part of the energy that the forces are the exact gradient of. Measured agreement: 4e-4 eV/Å (the O(STEP²) error
    of the difference)."""
    forces = labelled["dimer"][1].outputs.label.forces
    positions = dimer().positions[:, AXIS]
    assert positions.min() < positions[ATOM] - STEP and positions[ATOM] + STEP < positions.max()
    energy_plus = labelled["plus"][1].outputs.label.energy
    energy_minus = labelled["minus"][1].outputs.label.energy
    difference = -(energy_plus - energy_minus) / (2 * STEP)
    assert abs(forces[ATOM, AXIS]) > 0.3  # a force worth checking
    assert difference == pytest.approx(forces[ATOM, AXIS], abs=1e-3)


@pytest.mark.cp2k
@pytest.mark.slow
def test_a_rotated_dimer_has_the_same_energy_and_rotated_forces(labelled):
    """Exact invariance is broken only by the real-space grid (egg-box effect): measured 2.2 meV in energy at
    400 Ry (a 1e-5 eV match would need a far finer grid) and about 0.05 eV/Å in the forces, as the net force."""
    label, rotated_label = labelled["dimer"][1].outputs.label, labelled["rotated"][1].outputs.label
    assert rotated_label.energy == pytest.approx(label.energy, abs=5e-3)
    atoms = dimer()
    atoms.set_array("forces", label.forces)
    atoms.rotate(ROTATION[0], ROTATION[1], center="COP")
    rotation = np.linalg.lstsq(
        dimer().positions - dimer().positions.mean(0), atoms.positions - atoms.positions.mean(0), rcond=None
    )[0]
    np.testing.assert_allclose(rotated_label.forces, label.forces @ rotation, atol=0.08)


@pytest.mark.cp2k
@pytest.mark.slow
def test_a_periodic_cell_gets_the_analytical_stress_in_ase_sign(labelled):
    """CP2K prints the stress in GPa with the sign of a pressure; ASE's (eV/Å³) is positive under tension. The
    sign and the 0.01 % agreement with a strain derivative of the energy were checked by hand (see the module)."""
    _, node = labelled["periodic"]
    label, text = node.outputs.label, output_text(node)
    block = text.split("STRESS| Analytical stress tensor [GPa]")[-1].splitlines()[2:5]
    printed = np.array([[float(value) for value in line.split()[2:5]] for line in block])
    np.testing.assert_allclose(label.stress, -printed * GPA_EV_PER_A3, rtol=1e-7)
    assert np.trace(printed) / 3 > 0.3  # compressed: CP2K's pressure is positive ...
    assert np.trace(label.stress) < 0  # ... and ASE's stress negative
    energy_hartree, _ = file_energy_and_forces(text)
    assert label.energy == pytest.approx(energy_hartree * HARTREE_EV, rel=1e-7)


@pytest.mark.cp2k
@pytest.mark.slow
def test_the_label_comes_from_the_cp2k_calculation(labelled):
    _, node = labelled["monomer"]
    label, calc = node.outputs.label, calculation_of(node)
    assert calc.process_class is CalculationFactory("cp2k") and calc.is_finished_ok
    assert label.calculation_uuid == calc.uuid
    creator = label.creator
    assert creator.process_label == "cp2k_label"
    incoming = creator.base.links.get_incoming(link_type=LinkType.INPUT_CALC).all()
    incoming = {link.link_label: link.node.uuid for link in incoming}
    assert incoming == {"parameters": calc.outputs.output_parameters.uuid, "retrieved": calc.outputs.retrieved.uuid}
    outgoing = node.base.links.get_outgoing(link_type=LinkType.CALL_CALC).all()
    assert [link.link_label for link in outgoing] == ["label"]
    inputs = calc.inputs.parameters.get_dict()
    assert inputs["FORCE_EVAL"]["DFT"]["XC"]["XC_FUNCTIONAL"] == {"_": "BLYP"}
    assert inputs["FORCE_EVAL"]["SUBSYS"]["CELL"] == {"PERIODIC": "NONE", "ABC": "9.0 9.0 9.0"}
    crystal = calculation_of(labelled["periodic"][1]).inputs.parameters.get_dict()["FORCE_EVAL"]["SUBSYS"]["CELL"]
    assert crystal["CELL_REF"]["A"] == "4.5000000000 0.0000000000 0.0000000000"


# --- launch checks and settings (no CP2K run) -------------------------------------------------------------------
def inputs(code, structure: StructureData, **settings) -> dict:
    return {"structure": structure, "code": code, "settings": Dict({**SETTINGS, **settings})}


def test_an_element_without_a_basis_set_or_pseudopotential_is_refused_at_launch(cp2k_code):
    cerium = isolated(Atoms("CeO2", positions=[[0, 0, 0], [1.8, 0, 0], [-1.8, 0, 0]]))
    expected = "structure structure: BASIS_MOLOPT has no basis set DZVP-MOLOPT-SR-GTH for Ce"
    assert expected in validation_error(Cp2kLabelWorkChain, inputs(cp2k_code, cerium))
    platinum = isolated(Atoms("PtH", positions=[[0, 0, 0], [1.6, 0, 0]]))
    message = Cp2kLabelWorkChain.check_structures(SETTINGS, {"water": isolated(molecule("H2O")), "pt_h": platinum})
    assert message == "structure pt_h: GTH_POTENTIALS has no pseudopotential GTH-BLYP for Pt"
    assert Cp2kLabelWorkChain.check_structures(SETTINGS, {"water": isolated(molecule("H2O"))}) is None


def test_structures_that_do_not_fit_the_settings_are_refused(cp2k_code, tmp_path):
    water = isolated(molecule("H2O"))
    slab = molecule("H2O")
    slab.cell, slab.pbc = np.eye(3) * 5.0, [True, True, False]
    wide = Atoms("H2", positions=[[0, 0, 0], [6.0, 0, 0]])
    check = Cp2kLabelWorkChain.check_structures
    assert check({**SETTINGS, "multiplicity": 2}, {"w": water}) == (
        "structure w: 8 electrons (charge 0) cannot have multiplicity 2"
    )
    assert check({**SETTINGS, "multiplicity": 2, "charge": 1}, {"w": water}) is None  # H2O+: a doublet
    assert check(SETTINGS, {"slab": StructureData(ase=slab)}).startswith(
        "structure slab: periodic along [True, True, False]; the cp2k labeller takes"
    )
    assert check(SETTINGS, {"h2": isolated(wide)}) == (
        "structure h2: 6.00 Å across, more than its box (9.00 Å) less 2 × min_vacuum (2.5 Å)"
    )
    (tmp_path / "BASIS").write_text("# a basis made for a 4-electron oxygen\nO  MYBASIS MYBASIS-q4\n 1\n")
    (tmp_path / "POTENTIALS").write_text("H GTH-BLYP-q1 GTH-BLYP\n    1\nO GTH-BLYP-q6 GTH-BLYP\n    2    4\n")
    custom = {**SETTINGS, "data_dir": str(tmp_path), "basis_file": "BASIS", "potential_file": "POTENTIALS"}
    assert check({**custom, "basis_set": "mybasis"}, {"w": water}) == (
        "structure w: BASIS has no basis set mybasis for H"
    )
    oxygen = isolated(Atoms("O2", positions=[[0, 0, 0], [1.2, 0, 0]]))
    assert check({**custom, "basis_set": "MYBASIS", "multiplicity": 3}, {"o2": oxygen}) == (
        "structure o2: basis set MYBASIS of O is made for 4 valence electrons, pseudopotential GTH-BLYP has 6"
    )
    assert check({**custom, "data_dir": str(tmp_path / "none")}, {"w": water}).startswith(
        f"CP2K data file {tmp_path / 'none' / 'BASIS'} cannot be read"
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"cutof": 400.0}, "cutof: Extra inputs are not permitted"),
        ({"cutoff": -400.0}, "cutoff: Input should be greater than 0 (got -400.0)"),
        ({"functional": "B3LYP"}, "functional: Input should be 'PADE', 'LDA', 'BLYP'"),
        ({"dispersion": "D2"}, "dispersion: Input should be 'none', 'D3' or 'D3(BJ)' (got 'D2')"),
    ],
)
def test_bad_settings_are_refused_at_port_validation_by_field(cp2k_code, change, expected):
    message = validation_error(Cp2kLabelWorkChain, inputs(cp2k_code, isolated(molecule("H2O")), **change))
    assert message is not None and "cp2k settings: configuration: invalid Cp2kSettings: " in message
    assert expected in message


def test_settings_from_the_protocol_are_a_preset_with_the_entries_over_it():
    fast = Cp2kLabelWorkChain.settings_from_protocol({"preset": "fast", "cutoff": 350.0}, None, None)
    assert fast == Cp2kSettings.model_validate({**fast}).model_dump()  # complete and valid
    assert (fast["cutoff"], fast["rel_cutoff"], fast["eps_scf"]) == (350.0, PRESETS["fast"]["rel_cutoff"], 1e-5)
    assert (fast["functional"], fast["dispersion"], fast["basis_set"]) == ("BLYP", "D3", "DZVP-MOLOPT-SR-GTH")
    assert Cp2kLabelWorkChain.settings_from_protocol({}, None, None)["cutoff"] == 400.0  # balanced
    with pytest.raises(ValueError, match="cutoff\n  Input should be greater than 0"):
        Cp2kLabelWorkChain.protocol_model.model_validate({"cutoff": 0})
    with pytest.raises(ValueError, match="ecutwfc\n  Extra inputs are not permitted"):
        Cp2kLabelWorkChain.protocol_model.model_validate({"ecutwfc": 30})


def test_the_input_of_a_cluster_and_of_a_periodic_cell():
    settings = Cp2kSettings.model_validate({**SETTINGS, "multiplicity": 3})
    cluster = cp2k_parameters(settings, isolated(dimer()))["FORCE_EVAL"]
    assert cluster["DFT"]["POISSON"] == {"PERIODIC": "NONE", "POISSON_SOLVER": "WAVELET"}
    assert cluster["SUBSYS"]["TOPOLOGY"] == {"CENTER_COORDINATES": {"_": "ON"}}
    assert cluster["DFT"]["UKS"] is True and cluster["DFT"]["MULTIPLICITY"] == 3
    assert "STRESS_TENSOR" not in cluster
    assert [kind["_"] for kind in cluster["SUBSYS"]["KIND"]] == ["H", "O"]
    crystal = cp2k_parameters(settings, periodic_water())["FORCE_EVAL"]
    assert crystal["DFT"]["POISSON"] == {"PERIODIC": "XYZ"} and crystal["SUBSYS"]["CELL"] == {"PERIODIC": "XYZ"}
    assert crystal["STRESS_TENSOR"] == "ANALYTICAL" and crystal["PRINT"]["STRESS_TENSOR"] == {"_": "ON"}
    # a strained copy of the cell is labelled on the ideal cell's grid
    ideal = periodic_water()
    fixed = Cp2kLabelWorkChain.fixed_inputs(ideal, Dict(SETTINGS), "water")
    assert fixed == {"reference_cell": ideal}
    assert Cp2kLabelWorkChain.fixed_inputs(isolated(dimer()), Dict(SETTINGS), "dimer") == {}
    strained = periodic_water().get_ase()
    strained.set_cell(strained.cell * 1.02, scale_atoms=True)
    copy = cp2k_parameters(settings, StructureData(ase=strained), fixed["reference_cell"])["FORCE_EVAL"]
    assert copy["SUBSYS"]["CELL"]["CELL_REF"] == {
        "A": "4.5000000000 0.0000000000 0.0000000000",
        "B": "0.0000000000 4.5000000000 0.0000000000",
        "C": "0.0000000000 0.0000000000 4.5000000000",
    }


def test_unusable_outputs_are_refused_with_their_reasons():
    forces = " ATOMIC FORCES in [a.u.]\n\n # Atom Kind Element X Y Z\n      1      1      H   0.1   0.0   0.0\n"
    parameters = {"energy": -1.0, "energy_units": "a.u."}
    energy, read, stress = read_label(parameters, forces)
    assert energy == pytest.approx(-HARTREE_EV, rel=1e-7) and stress is None
    np.testing.assert_allclose(read, [[0.1 * HARTREE_EV / BOHR_ANGSTROM, 0.0, 0.0]], rtol=1e-7)
    with pytest.raises(ValueError, match=r"no ATOMIC FORCES block in the CP2K output \(&FORCE_EVAL &PRINT &FORCES"):
        read_label(parameters, "ENERGY| ...")
    with pytest.raises(ValueError, match=r"the SCF did not converge \(SCF run NOT converged\)"):
        read_label(parameters, "  *** SCF run NOT converged ***\n" + forces)
    with pytest.raises(ValueError, match=r"energy units 'eV', expected 'a\.u\.'"):
        read_label({"energy": -1.0, "energy_units": "eV"}, forces)
    with pytest.raises(ValueError, match="a STRESS block without its x, y and z rows"):
        read_stress(" STRESS| Analytical stress tensor [GPa]\n STRESS|   x   y   z\n")
