"""A water campaign labelled by the real CP2K: the second labeller through the same campaign, with the same
provenance answers as the Quantum ESPRESSO one (tests/workflows/test_active_learning.py).

One small campaign (module fixture ``water_campaign``: a water monomer and dimer, not periodic, in a 9 Å box, CP2K's
``fast`` preset with BLYP-D3, a committee of two, two iterations; about four minutes on 2 cores) serves every test.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiida.engine import run_get_node
from aiida.orm import CalcFunctionNode, CalcJobNode, FolderData, QueryBuilder, StructureData, WorkflowNode, load_node
from ase.build import molecule
from ase.collections import s22

from aiida_annpot.calculations.explore import AnnExploreCalculation
from aiida_annpot.data.label import LabelData
from aiida_annpot.data.potential import AnnPotential
from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

pytestmark = [pytest.mark.cp2k, pytest.mark.slow]

#: The fast protocol made small for two water clusters: rattled copies only (molecules have no equation of state
#: or vacancy), a test set of rattled copies with its own seed, short Langevin MD, and a selection wide enough that
#: the first committee always proposes frames for the second iteration.
WATER_CAMPAIGN = {
    "max_iterations": 2,
    "reference": {"labeller": "cp2k", "max_concurrent": 2, "cp2k": {"preset": "fast", "box": 9.0, "min_vacuum": 2.0}},
    "generation": {
        "include_ideal": True,
        "volumes": 0,
        "isotropic_strains": 0,
        "anisotropic_strains": 0,
        "rattles": 2,
        "rattle_amplitudes": [0.04],
        "vacancies": 0,
    },
    "test_set": {
        "generation": {
            "include_ideal": False,
            "volumes": 0,
            "isotropic_strains": 0,
            "anisotropic_strains": 0,
            "rattles": 1,
            "rattle_amplitudes": [0.05],
            "vacancies": 0,
            "seed": 1000,
        },
        "md_frames": 0,
    },
    "test_targets": {"bulk_modulus_error": None, "vacancy_error": None},
    "committee": {
        "committee_size": 2,
        "config": {"max_epochs": 200, "loss": {"energy_weight": 1.0, "force_weight": 1.0}},
    },
    "exploration": {
        "start_supercells": [[1, 1, 1]],
        "start_vacancies": False,
        "config": {
            "min_distance": 0.6,
            "break_deviation": 5.0,
            "selection": {
                "trust_lo": 0.0,
                "trust_hi": 5.0,
                "min_distance": 0.5,
                "min_candidates": 2,
                "max_candidates": 2,
            },
        },
        "stage_schedule": [[{"temperature": 200, "steps": 100, "timestep": 0.5, "sample_interval": 10}]],
    },
}


def cluster(atoms) -> StructureData:
    atoms = atoms.copy()
    atoms.cell, atoms.pbc = np.eye(3) * 9.0, False
    atoms.center()
    return StructureData(ase=atoms)


@pytest.fixture(scope="module")
def water_campaign(cp2k_code, annpot_code):
    """(outputs, node) of the water campaign, run once for this module. Read-only."""
    structures = {"monomer": cluster(molecule("H2O")), "dimer": cluster(s22["Water_dimer"])}
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        cp2k_code, annpot_code, structures, protocol="fast", overrides=WATER_CAMPAIGN
    )
    return run_get_node(builder)


def _training_references(node) -> list[WorkflowNode]:
    links = node.base.links.get_outgoing(node_class=WorkflowNode).all()
    return [
        link.node
        for link in sorted(links, key=lambda link: link.link_label)
        if link.link_label.startswith("reference_") and link.link_label != "reference_test"
    ]


def _labelled_structures(reference) -> list[StructureData]:
    links = reference.base.links.get_incoming(node_class=StructureData, link_label_filter="structures__%").all()
    return [link.node for link in links]


def test_the_campaign_runs_two_iterations_with_cp2k_labels(water_campaign):
    outputs, node = water_campaign
    assert node.exit_status in (0, ActiveLearningWorkChain.exit_codes.WARNING_NOT_CONVERGED.status), node.exit_message
    rows = node.outputs.iterations.get_list()
    assert [row["iteration"] for row in rows] == [1, 2]
    assert rows[1]["labels_submitted"] == rows[0]["selected"] == 2
    # a frame of the first, poorly trained committee's MD may be one CP2K's SCF cannot converge: it is listed, with
    # the reason, and the campaign goes on with the other labels
    second = rows[1]
    assert second["labels_added"] + second["labels_failed"] == 2 and second["labels_added"] >= 1
    assert all("Cp2kBaseWorkChain" in reason for reason in second["failures"].values()), second["failures"]
    assert outputs["dataset"].n_frames == 6 + second["labels_added"], "three frames of each cluster, then new ones"
    test_reference = node.base.links.get_outgoing(link_label_filter="reference_test").one().node
    first = _training_references(node)[0]
    for reference in [*_training_references(node), test_reference]:
        assert reference.inputs.labeller.value == "cp2k"
    assert not first.outputs.failed.get_dict() and not test_reference.outputs.failed.get_dict()


def test_second_iteration_labels_frames_that_exploration_sampled_and_selection_picked(water_campaign):
    _, node = water_campaign
    second = _training_references(node)[1]
    structures = _labelled_structures(second)
    assert len(structures) == 2
    for structure in structures:
        assert structure.creator.process_label == "select_candidates"
        assert len(structure.sites) in (3, 6) and not any(structure.pbc)
        explorations = (
            QueryBuilder()
            .append(StructureData, filters={"id": structure.pk}, tag="structure")
            .append(
                CalcJobNode,
                with_descendants="structure",
                filters={"process_type": AnnExploreCalculation.build_process_type()},
                project=["id"],
            )
            .all(flat=True)
        )
        assert explorations, "a selected frame leads back to the MD run that sampled it"


def test_the_potential_leads_back_to_every_cp2k_calculation_it_learned_from(water_campaign):
    """Potential ← merge_dataset ← labels ← cp2k_label ← retrieved files ← Cp2kCalculation: exactly the dataset's
    frame sources, and the calculations the labels name; the same query as for pw.x with the labeller's names."""
    outputs, _ = water_campaign
    potential, dataset = outputs["potential"], outputs["dataset"]
    query = QueryBuilder()
    query.append(AnnPotential, filters={"id": potential.pk}, tag="potential")
    query.append(
        CalcFunctionNode,
        with_descendants="potential",
        tag="merge",
        filters={"attributes.process_label": "merge_dataset"},
    )
    query.append(LabelData, with_outgoing="merge", tag="label", project=["attributes.calculation_uuid"])
    query.append(
        CalcFunctionNode, with_outgoing="label", tag="made", filters={"attributes.process_label": "cp2k_label"}
    )
    query.append(FolderData, with_outgoing="made", tag="retrieved")
    query.append(CalcJobNode, with_outgoing="retrieved", project=["uuid"])
    named = {tuple(row) for row in query.all()}
    assert all(named_uuid == uuid for named_uuid, uuid in named), "each label names the calculation behind it"
    learned_from = {uuid for _, uuid in named}
    assert learned_from == set(dataset.sources) and len(learned_from) == dataset.n_frames
    for uuid in learned_from:
        calculation = load_node(uuid)
        assert calculation.is_finished_ok and calculation.process_label == "Cp2kCalculation"


def test_every_iteration_scores_its_committee_on_the_cp2k_test_set(water_campaign):
    """The test set is labelled by CP2K with the campaign's settings, never trained on, and scored every iteration."""
    outputs, node = water_campaign
    test_set, dataset = outputs["test_dataset"], outputs["dataset"]
    assert test_set.n_frames == 2
    assert set(test_set.sources).isdisjoint(dataset.sources), "never trained on"
    assert all(load_node(uuid).process_label == "Cp2kCalculation" for uuid in test_set.sources)
    score = outputs["test_score"].get_dict()
    assert score["overall"]["frames"] == 2
    headline = score["headline"]
    assert headline["energy_rmse"] > 0 and headline["force_rmse"] > 0, headline
    rows = node.outputs.iterations.get_list()
    assert all(row["test"]["frames"] == 2 for row in rows)
    assert rows[-1]["test"]["energy_rmse"] == pytest.approx(headline["energy_rmse"])


def test_lineage_lists_the_cp2k_calculations_of_the_potential(water_campaign):
    from click.testing import CliRunner

    from aiida_annpot.cli import cmd_root

    from ..cli.conftest import _restore_process_logging

    outputs, _ = water_campaign
    try:
        result = CliRunner().invoke(cmd_root, ["lineage", str(outputs["potential"].pk)], catch_exceptions=False)
    finally:
        _restore_process_logging()  # else processes run later in this session store no report messages
    assert result.exit_code == 0, result.output
    sources = set(outputs["dataset"].sources)
    rows = [line.split() for line in result.output.splitlines() if any(uuid in line for uuid in sources)]
    assert len(rows) == len(sources) and all(row[1] == "Cp2kCalculation" for row in rows), rows
    assert f"learned from {len(sources)} reference calculation(s)" in result.output
