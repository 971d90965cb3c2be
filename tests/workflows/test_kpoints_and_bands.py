"""Shifted k-point meshes and the bands per structure: the meshes of a cell and its supercells sample the same
points, the number of bands follows the valence electrons, bad values are refused at submit time, and pw.x gets
what the settings say (the ideal crystal then has the same energy per atom in the 8- and the 16-atom cell)."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from aiida.orm import Bool, Dict, Float, Int, List, Str, StructureData, load_group

from aiida_annpot.calcfunctions.kpoints import kpoints_mesh
from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
from aiida_annpot.workflows.reference import ReferenceWorkChain, bands_for

from ..small_campaign import NO_TEST_SET
from ..submission import validation_error



def half() -> List:
    """The Monkhorst–Pack shift (a node: made once a profile is loaded)."""
    return List([0.5, 0.5, 0.5])


def _fractional_points(kpoints) -> np.ndarray:
    mesh, offset = kpoints.get_kpoints_mesh()
    return np.array([[(i + s) / n for i, s, n in zip(index, offset, mesh)]
                     for index in itertools.product(*(range(n) for n in mesh))])  # fmt: skip


def _folded(points_cartesian: np.ndarray, cell: np.ndarray) -> set[tuple]:
    """Cartesian k-points (1/Å, without 2π) as fractional coordinates of ``cell``'s reciprocal lattice, mod 1."""
    fractional = points_cartesian @ cell.T  # k · a_i
    return {tuple(np.round(value, 6) % 1.0 % 1.0) for value in np.round(fractional, 6)}


def test_a_shifted_mesh_of_a_supercell_samples_exactly_the_cells_points(aiida_profile, si_cell):
    cell = si_cell()
    supercell = StructureData(ase=cell.get_ase().repeat((2, 1, 1)))
    small = kpoints_mesh(cell, Float(0.6), Bool(False), half(), "cell")
    large = kpoints_mesh(supercell, Float(0.6), Bool(False), half(), "supercell")
    assert small.get_kpoints_mesh() == ([2, 2, 2], [0.5, 0.5, 0.5])
    assert large.get_kpoints_mesh() == ([1, 2, 2], [0.5, 0.5, 0.5])  # the single point is shifted too

    small_cell, large_cell = np.array(cell.cell), np.array(supercell.cell)
    small_points = _fractional_points(small) @ np.linalg.inv(small_cell).T  # Cartesian, in units of 2π
    large_points = _fractional_points(large) @ np.linalg.inv(large_cell).T
    # folded into the supercell's Brillouin zone, the cell's 8 points are the supercell's 4
    assert _folded(small_points, large_cell) == _folded(large_points, large_cell)
    assert len(_folded(large_points, large_cell)) == 4
    # a Γ-centred mesh would not contain them: the shift matters
    unshifted = kpoints_mesh(supercell, Float(0.6), Bool(False), None, "gamma")
    unshifted_points = _fractional_points(unshifted) @ np.linalg.inv(large_cell).T
    assert not _folded(unshifted_points, large_cell) & _folded(large_points, large_cell)


def test_no_offset_keeps_aiida_quantumespresso_s_calcfunction(aiida_profile, si_cell):
    for offset in (None, List([0.0, 0.0, 0.0])):
        mesh = kpoints_mesh(si_cell(), Float(0.6), Bool(False), offset, "cell")
        assert mesh.creator.process_label == "create_kpoints_from_distance"
        assert mesh.get_kpoints_mesh() == ([2, 2, 2], [0.0, 0.0, 0.0])
    shifted = kpoints_mesh(si_cell(), Float(0.6), Bool(False), half(), "cell")
    assert shifted.creator.process_label == "shifted_kpoints_from_distance"
    assert shifted.creator.inputs.offset.get_list() == [0.5, 0.5, 0.5]


def test_bands_follow_the_valence_electrons(si_pseudo_family, si_cell):
    family = load_group(si_pseudo_family)
    for repeat, electrons in (((1, 1, 1), 32), ((2, 1, 1), 64)):
        structure = StructureData(ase=si_cell().get_ase().repeat(repeat))
        pseudos = family.get_pseudos(structure=structure)
        assert bands_for(structure, pseudos, 1.5) == 3 * electrons // 4
        assert bands_for(structure, pseudos, 1.0) == electrons // 2 + 4  # at least four empty bands


@pytest.fixture
def reference_inputs(pw_code, si_pseudo_family, si_cell):
    campaign = ActiveLearningWorkChain.get_builder_from_protocol(pw_code, pw_code, [si_cell()], si_pseudo_family,
                                                                 protocol="fast", overrides=NO_TEST_SET)  # fmt: skip
    return {"structures": {"a": si_cell()}, "pseudo_family": Str(si_pseudo_family), "max_concurrent": Int(2),
            "pw_base": campaign.reference.pw_base._inputs(prune=True)}  # fmt: skip


def test_the_fast_protocol_shifts_its_meshes_and_sets_bands(pw_code, si_pseudo_family, si_cell):
    builder = ActiveLearningWorkChain.get_builder_from_protocol(pw_code, pw_code, [si_cell()], si_pseudo_family,
                                                                protocol="fast")  # fmt: skip
    assert builder.reference.kpoints_offset.get_list() == [0.5, 0.5, 0.5]
    assert builder.reference.bands_factor.value == 1.5
    balanced = ActiveLearningWorkChain.get_builder_from_protocol(pw_code, pw_code, [si_cell()], si_pseudo_family,
                                                                 protocol="balanced")  # fmt: skip
    assert "kpoints_offset" not in balanced.reference and "bands_factor" not in balanced.reference
    shifted = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, pw_code, [si_cell()], si_pseudo_family, protocol="balanced",
        overrides={"reference": {"kpoints_offset": [0.5, 0.5, 0.0], "bands_factor": 2}},
    )  # fmt: skip
    assert shifted.reference.kpoints_offset.get_list() == [0.5, 0.5, 0.0]
    assert shifted.reference.bands_factor.value == 2.0
    with pytest.raises(ValueError, match="bands_factor"):
        ActiveLearningWorkChain.get_builder_from_protocol(pw_code, pw_code, [si_cell()], si_pseudo_family,
                                                          overrides={"reference": {"bands_factor": 0.5}})  # fmt: skip


@pytest.mark.parametrize(
    ("change", "port", "fragment"),
    [
        (("kpoints_offset", List, [0.5, 0.5]), "inputs.kpoints_offset", "expected three numbers"),
        (("kpoints_offset", List, [1.0, 0.0, 0.0]), "inputs.kpoints_offset", "must be in [0, 1)"),
        (("bands_factor", Float, 0.8), "inputs.bands_factor", "must be at least 1 (the occupied bands), got 0.8"),
    ],
)
def test_bad_offsets_and_band_factors_are_refused(reference_inputs, change, port, fragment):
    name, node_class, value = change  # nodes are made here, once the test profile is loaded
    message = validation_error(ReferenceWorkChain, {**reference_inputs, name: node_class(value)})
    assert message is not None and f"port '{port}'" in message and fragment in message, message


def test_nbnd_and_a_bands_factor_together_are_refused(reference_inputs):
    pw_base = copy.deepcopy(reference_inputs["pw_base"])
    parameters = pw_base["pw"]["parameters"].get_dict()
    pw_base["pw"]["parameters"] = Dict({**parameters, "SYSTEM": {**parameters["SYSTEM"], "nbnd": 40}})
    message = validation_error(ReferenceWorkChain, {**reference_inputs, "pw_base": pw_base,
                                                    "bands_factor": Float(1.5)})  # fmt: skip
    assert message is not None and "nbnd and bands_factor both set the bands" in message, message


@pytest.mark.slow
def test_pw_x_gets_the_shifted_meshes_and_bands_and_the_supercell_agrees(reference_inputs, si_cell):
    """Real pw.x (about 15 s): each structure's mesh from the distance, shifted, nbnd from the electrons; the ideal
    8- and 16-atom cells then give the same energy per atom (commensurate sampling), to the SCF threshold."""
    from aiida.common.links import LinkType
    from aiida.engine import run_get_node

    structures = {"cell": si_cell(), "supercell": StructureData(ase=si_cell().get_ase().repeat((2, 1, 1)))}
    inputs = {**reference_inputs, "structures": structures, "kpoints_offset": half(), "bands_factor": Float(1.5)}
    _, node = run_get_node(ReferenceWorkChain, **inputs)
    assert node.is_finished_ok, node.exit_message
    energies = {}
    for base in (child for child in node.called if child.process_label == "PwBaseWorkChain"):
        key = base.base.links.get_incoming(link_type=LinkType.CALL_WORK).one().link_label.removeprefix("label_")
        (calculation,) = [child for child in base.called if child.process_label == "PwCalculation"]
        n_atoms = len(calculation.inputs.structure.sites)
        assert calculation.inputs.kpoints.get_kpoints_mesh()[1] == [0.5, 0.5, 0.5]
        assert calculation.inputs.parameters["SYSTEM"]["nbnd"] == 3 * 4 * n_atoms // 4  # 1.5 × 4 electrons / 2
        energies[key] = calculation.outputs.output_parameters["energy"] / n_atoms
    assert energies["cell"] == pytest.approx(energies["supercell"], abs=1e-5)
