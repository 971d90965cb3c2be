"""Shifted k-point meshes and the bands per structure: the meshes of a cell and its supercells sample the same
points, the number of bands follows the valence electrons, bad values are refused at submit time, and pw.x gets
what the settings say (the ideal crystal then has the same energy per atom in the 8- and the 16-atom cell)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from aiida.orm import Dict, Int, StructureData, load_group
from ase import Atoms

from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
from aiida_annpot.workflows.labelling.quantumespresso import (
    QuantumEspressoLabelWorkChain,
    QuantumEspressoSettings,
    bands_for,
    kpoints_mesh,
)
from aiida_annpot.workflows.reference import ReferenceWorkChain

from ..small_campaign import NO_TEST_SET
from ..submission import validation_error

HALF = [0.5, 0.5, 0.5]  # the Monkhorst–Pack shift


def mesh_settings(offset: list[float] | None = None, distance: float = 0.6) -> QuantumEspressoSettings:
    """Settings that fix only the mesh (``offset`` None: the default, Γ-centred)."""
    shift = {} if offset is None else {"kpoints_offset": offset}
    return QuantumEspressoSettings(pseudo_family="any", parameters={}, kpoints_distance=distance, **shift)


def _fractional_points(kpoints) -> np.ndarray:
    mesh, offset = kpoints.get_kpoints_mesh()
    return np.array(
        [
            [(i + s) / n for i, s, n in zip(index, offset, mesh, strict=True)]
            for index in itertools.product(*(range(n) for n in mesh))
        ]
    )


def _folded(points_cartesian: np.ndarray, cell: np.ndarray) -> set[tuple]:
    """Cartesian k-points (1/Å, without 2π) as fractional coordinates of ``cell``'s reciprocal lattice, mod 1."""
    fractional = points_cartesian @ cell.T  # k · a_i
    return {tuple(np.round(value, 6) % 1.0 % 1.0) for value in np.round(fractional, 6)}


def test_a_shifted_mesh_of_a_supercell_samples_exactly_the_cells_points(aiida_profile, si_cell):
    cell = si_cell()
    supercell = StructureData(ase=cell.get_ase().repeat((2, 1, 1)))
    small = kpoints_mesh(cell, mesh_settings(HALF), "cell")
    large = kpoints_mesh(supercell, mesh_settings(HALF), "supercell")
    assert small.get_kpoints_mesh() == ([2, 2, 2], [0.5, 0.5, 0.5])
    assert large.get_kpoints_mesh() == ([1, 2, 2], [0.5, 0.5, 0.5])  # the single point is shifted too

    small_cell, large_cell = np.array(cell.cell), np.array(supercell.cell)
    small_points = _fractional_points(small) @ np.linalg.inv(small_cell).T  # Cartesian, in units of 2π
    large_points = _fractional_points(large) @ np.linalg.inv(large_cell).T
    # folded into the supercell's Brillouin zone, the cell's 8 points are the supercell's 4
    assert _folded(small_points, large_cell) == _folded(large_points, large_cell)
    assert len(_folded(large_points, large_cell)) == 4
    # a Γ-centred mesh would not contain them: the shift matters
    unshifted = kpoints_mesh(supercell, mesh_settings(), "gamma")
    unshifted_points = _fractional_points(unshifted) @ np.linalg.inv(large_cell).T
    assert not _folded(unshifted_points, large_cell) & _folded(large_points, large_cell)


def test_no_offset_keeps_aiida_quantumespresso_s_calcfunction(aiida_profile, si_cell):
    for offset in (None, [0.0, 0.0, 0.0]):
        mesh = kpoints_mesh(si_cell(), mesh_settings(offset), "cell")
        assert mesh.creator.process_label == "create_kpoints_from_distance"
        assert mesh.get_kpoints_mesh() == ([2, 2, 2], [0.0, 0.0, 0.0])
    shifted = kpoints_mesh(si_cell(), mesh_settings(HALF), "cell")
    assert shifted.creator.process_label == "shifted_kpoints_from_distance"
    assert shifted.creator.inputs.offset.get_list() == [0.5, 0.5, 0.5]


def test_no_shift_along_a_direction_without_periodicity(aiida_profile):
    """A slab (no periodicity along z) keeps a single Γ point along z: a shift there would put every k-point on
    the zone boundary of a direction that has none."""
    slab = Atoms("Si2", positions=[[0, 0, 5], [1.36, 1.36, 6.36]], cell=[3.84, 3.84, 15.0], pbc=[True, True, False])
    mesh = kpoints_mesh(StructureData(ase=slab), mesh_settings(HALF), "slab")
    sizes, offset = mesh.get_kpoints_mesh()
    assert sizes[2] == 1 and offset == [0.5, 0.5, 0.0]


def test_bands_follow_the_valence_electrons(si_pseudo_family, si_cell):
    family = load_group(si_pseudo_family)
    for repeat, electrons in (((1, 1, 1), 32), ((2, 1, 1), 64)):
        structure = StructureData(ase=si_cell().get_ase().repeat(repeat))
        pseudos = family.get_pseudos(structure=structure)
        assert bands_for(structure, pseudos, 1.5) == 3 * electrons // 4
        assert bands_for(structure, pseudos, 1.0) == electrons // 2 + 4  # at least four empty bands


@pytest.fixture
def reference_inputs(pw_code, si_pseudo_family, si_cell):
    """The fast protocol's reference inputs (shifted meshes, 1.5 × the bands) for one 8-atom cell."""
    campaign = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, pw_code, [si_cell()], si_pseudo_family, protocol="fast", overrides=NO_TEST_SET
    )
    return {
        "structures": {"a": si_cell()},
        "code": pw_code,
        "settings": campaign.reference.settings,
        "options": campaign.reference.options,
        "max_concurrent": Int(2),
    }


def with_settings(inputs: dict, **changes) -> dict:
    """``inputs`` with ``changes`` to the settings (None removes a key)."""
    settings = {**inputs["settings"].get_dict(), **changes}
    return {**inputs, "settings": Dict({key: value for key, value in settings.items() if value is not None})}


def test_the_fast_protocol_shifts_its_meshes_and_sets_bands(pw_code, si_pseudo_family, si_cell):
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, pw_code, [si_cell()], si_pseudo_family, protocol="fast"
    )
    assert builder.reference.settings["kpoints_offset"] == [0.5, 0.5, 0.5]
    assert builder.reference.settings["bands_factor"] == 1.5
    balanced = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, pw_code, [si_cell()], si_pseudo_family, protocol="balanced"
    )
    assert balanced.reference.settings["kpoints_offset"] == [0.0, 0.0, 0.0]  # Γ-centred
    assert balanced.reference.settings["bands_factor"] is None  # pw.x's choice
    shifted = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code,
        pw_code,
        [si_cell()],
        si_pseudo_family,
        protocol="balanced",
        overrides={"reference": {"quantumespresso": {"kpoints_offset": [0.5, 0.5, 0.0], "bands_factor": 2}}},
    )
    assert shifted.reference.settings["kpoints_offset"] == [0.5, 0.5, 0.0]
    assert shifted.reference.settings["bands_factor"] == 2.0
    with pytest.raises(ValueError, match="bands_factor"):
        ActiveLearningWorkChain.get_builder_from_protocol(
            pw_code,
            pw_code,
            [si_cell()],
            si_pseudo_family,
            overrides={"reference": {"quantumespresso": {"bands_factor": 0.5}}},
        )


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"kpoints_offset": [0.5, 0.5]}, ("kpoints_offset", "expected three shifts in [0, 1) of a mesh step")),
        ({"kpoints_offset": [1.0, 0.0, 0.0]}, ("kpoints_offset", "expected three shifts in [0, 1)", "got [1.0, 0.0")),
        ({"bands_factor": 0.8}, ("bands_factor: Input should be greater than or equal to 1", "(got 0.8)")),
    ],
)
def test_bad_offsets_and_band_factors_are_refused(reference_inputs, changes, fragments):
    """By the reference work chain (at its inputs, before any label runs) and by the label work chain's own port."""
    bad = with_settings(reference_inputs, **changes)
    for process_class, inputs, port in (
        (ReferenceWorkChain, bad, "inputs"),
        (
            QuantumEspressoLabelWorkChain,
            {"structure": bad["structures"]["a"], "code": bad["code"], "settings": bad["settings"]},
            "inputs.settings",
        ),
    ):
        message = validation_error(process_class, inputs)
        assert message is not None and f"port '{port}'" in message and "quantumespresso settings" in message, message
        for fragment in fragments:
            assert fragment in message, message


def test_nbnd_and_a_bands_factor_together_are_refused(reference_inputs):
    parameters = reference_inputs["settings"]["parameters"]
    both = with_settings(
        reference_inputs, parameters={**parameters, "SYSTEM": {**parameters["SYSTEM"], "nbnd": 40}}, bands_factor=1.5
    )
    message = validation_error(ReferenceWorkChain, both)
    assert message is not None and "nbnd and bands_factor both set the bands" in message, message
    assert validation_error(ReferenceWorkChain, with_settings(both, bands_factor=None)) is None  # nbnd alone


@pytest.mark.slow
def test_pw_x_gets_the_shifted_meshes_and_bands_and_the_supercell_agrees(reference_inputs, si_cell):
    """Real pw.x (about 15 s): each structure's mesh from the distance, shifted, nbnd from the electrons; the ideal
    8- and 16-atom cells then give the same energy per atom (commensurate sampling), to the SCF threshold."""
    from aiida.common.links import LinkType
    from aiida.engine import run_get_node

    structures = {"cell": si_cell(), "supercell": StructureData(ase=si_cell().get_ase().repeat((2, 1, 1)))}
    inputs = {**with_settings(reference_inputs, kpoints_offset=HALF, bands_factor=1.5), "structures": structures}
    _, node = run_get_node(ReferenceWorkChain, **inputs)
    assert node.is_finished_ok, node.exit_message
    energies = {}
    for run in (child for child in node.called if child.process_label == "QuantumEspressoLabelWorkChain"):
        key = run.base.links.get_incoming(link_type=LinkType.CALL_WORK).one().link_label.removeprefix("label_")
        (base,) = [child for child in run.called if child.process_label == "PwBaseWorkChain"]
        (calculation,) = [child for child in base.called if child.process_label == "PwCalculation"]
        n_atoms = len(calculation.inputs.structure.sites)
        assert calculation.inputs.kpoints.get_kpoints_mesh()[1] == [0.5, 0.5, 0.5]
        assert calculation.inputs.parameters["SYSTEM"]["nbnd"] == 3 * 4 * n_atoms // 4  # 1.5 × 4 electrons / 2
        energies[key] = calculation.outputs.output_parameters["energy"] / n_atoms
        assert node.outputs.labels[key].energy / n_atoms == energies[key]  # the label is the calculation's
    assert set(energies) == {"cell", "supercell"}
    assert energies["cell"] == pytest.approx(energies["supercell"], abs=1e-5)
