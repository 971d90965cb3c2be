"""The CLI's provenance walks at scale: ``status`` and ``lineage`` ask the database a fixed number of queries however
many labels a campaign has (one per level of the graph), and give what the node-by-node walks gave."""

from __future__ import annotations

import contextlib

import pytest
from aiida.common.links import LinkType
from aiida.orm import CalcJobNode, WorkChainNode
from plumpy import ProcessState

from aiida_annpot.cli.provenance import called_processes, in_chunks, upstream
from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
from aiida_annpot.workflows.published import CAMPAIGN_PROCESS_TYPE, VALIDATION_PROCESS_TYPE
from aiida_annpot.workflows.validation import ValidationWorkChain


@contextlib.contextmanager
def counted_queries():
    """A list that receives every SQL statement the profile's storage runs inside the block."""
    from aiida.manage import get_manager
    from sqlalchemy import event

    engine = get_manager().get_profile_storage().get_session().get_bind()
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _process(caller, cls, label: str, state=ProcessState.FINISHED, paused: bool = False):
    node = cls(process_type="aiida.calculations:annpot.ase_label") if cls is CalcJobNode else cls()
    node.set_process_label("AseLabelCalculation" if cls is CalcJobNode else "AseLabelWorkChain")
    node.set_process_state(state)
    link = LinkType.CALL_CALC if cls is CalcJobNode else LinkType.CALL_WORK
    node.base.links.add_incoming(caller, link, label)
    node.store()
    if paused:
        node.pause()
    return node


def campaign_tree(labels: int) -> tuple:
    """A campaign → reference → ``labels`` label work chains → one CalcJob each; the first label is paused, the
    last CalcJob was killed. Returns (campaign, paused label, killed CalcJob)."""
    campaign = WorkChainNode(process_type=CAMPAIGN_PROCESS_TYPE)
    campaign.set_process_label("ActiveLearningWorkChain")
    campaign.set_process_state(ProcessState.WAITING)
    campaign.store()
    reference = _process(campaign, WorkChainNode, "reference_01", ProcessState.WAITING)
    nodes = []
    for index in range(labels):
        state = ProcessState.WAITING if index == 0 else ProcessState.FINISHED
        label = _process(reference, WorkChainNode, f"label_{index}", state, paused=index == 0)
        killed = index == labels - 1
        nodes.append((label, _process(label, CalcJobNode, "calculation", ProcessState.KILLED if killed else state)))
    return campaign, nodes[0][0], nodes[-1][1]


def test_the_published_names_are_the_work_chains_entry_points():
    assert ActiveLearningWorkChain.build_process_type() == CAMPAIGN_PROCESS_TYPE
    assert ValidationWorkChain.build_process_type() == VALIDATION_PROCESS_TYPE


def test_called_processes_walks_level_by_level(aiida_profile):
    campaign, paused, killed = campaign_tree(3)
    rows = called_processes(campaign.pk, ("attributes.paused",))
    depths = {pk: depth for depth, pk, _ in rows}
    assert sorted(depths.values()) == [1, 2, 2, 2, 3, 3, 3]
    assert depths[paused.pk] == 2 and depths[killed.pk] == 3
    assert [pk for _, pk, held in rows if held] == [paused.pk]
    assert [list(chunk) for chunk in in_chunks(range(3))] == [[0, 1, 2]]


@pytest.mark.parametrize("command", ["status", "kill"])
def test_status_and_kill_ask_the_same_number_of_queries_for_3_or_30_labels(run_cli, monkeypatch, command):
    from aiida.engine.processes import control

    monkeypatch.setattr(control, "kill_processes", lambda processes, **_: None)
    counts, outputs = [], []
    for labels in (3, 30):
        campaign, paused, killed = campaign_tree(labels)
        with counted_queries() as statements:
            result = run_cli(command, campaign.pk)
        assert result.exit_code == 0, result.output
        counts.append(len(statements))
        outputs.append((result.output, campaign, paused, killed))
    assert counts[0] == counts[1], counts
    output, campaign, paused, killed = outputs[1]
    if command == "status":
        assert f"paused: AseLabelWorkChain<{paused.pk}>" in output
        assert f"killed: AseLabelCalculation<{killed.pk}>" in output
    else:  # the campaign, its reference, the paused label and its CalcJob (all still waiting): callers first
        assert output.splitlines() == [
            f"killed ActiveLearningWorkChain<{campaign.pk}>",
            f"killed AseLabelWorkChain<{paused.caller.pk}>",
            f"killed AseLabelWorkChain<{paused.pk}>",
            f"killed AseLabelCalculation<{paused.called[0].pk}>",
        ]


def test_upstream_follows_creator_inputs_of_one_class_in_one_query_at_any_depth(aiida_profile, emt_frames):
    from aiida.engine import calcfunction

    from aiida_annpot.data import AtomisticDataset

    @calcfunction
    def grow(dataset):
        return AtomisticDataset.from_frames(dataset.to_frames() + emt_frames(n=1, seed=dataset.pk))

    chain = [AtomisticDataset.from_frames(emt_frames(n=1, seed=1)).store()]
    for _ in range(5):
        chain.append(grow(chain[-1]))
    counts = []
    for last in (chain[2], chain[5]):
        with counted_queries() as statements:
            found = upstream([last.pk], AtomisticDataset)
        counts.append(len(statements))
        assert found == {node.pk for node in chain[: chain.index(last)]}
    assert counts[0] == counts[1], counts  # a warm-start chain of 40 iterations costs what one of 2 does
    assert upstream([chain[0].pk], AtomisticDataset) == set()


def potential_trained_on(labels: int, trained_model):
    """An AnnPotential ← training CalcJob ← dataset ← merge_dataset ← ``labels`` labels of hand-made PwCalculations;
    returns (potential, the calculations oldest first)."""
    from aiida_annpot.calcfunctions import merge_dataset
    from aiida_annpot.data import AnnPotential
    from aiida_annpot.workflows.labelling.quantumespresso import quantumespresso_label

    from ..workflows.test_labelling_quantumespresso import pw_outputs, si_structure

    outputs = [pw_outputs(si_structure(seed), energy=-850.0 - seed) for seed in range(labels)]
    inputs = {}
    for index, made in enumerate(outputs):
        inputs[f"structure_{index}"] = made["structure"]
        inputs[f"label_{index}"] = quantumespresso_label(made["parameters"], made["trajectory"])
    dataset = merge_dataset(**inputs)["dataset"]
    train = CalcJobNode(process_type="aiida.calculations:annpot.train")
    train.base.links.add_incoming(dataset, LinkType.INPUT_CALC, "dataset")
    train.store()
    potential = AnnPotential.from_files([trained_model])
    potential.base.links.add_incoming(train, LinkType.CREATE, "potential")
    return potential.store(), [made["calc"] for made in outputs]


def test_reference_calculations_ask_the_same_number_of_queries_for_2_or_8_labels(aiida_profile, trained_model):
    from aiida_annpot.cli.lineage import learned_from, reference_calculations

    counts = []
    for labels in (2, 8):
        potential, calculations = potential_trained_on(labels, trained_model)
        with counted_queries() as statements:
            rows = reference_calculations(potential)
        counts.append(len(statements))
    assert counts[0] == counts[1], counts
    assert [row.uuid for row in rows] == [calc.uuid for calc in calculations]
    assert {(row.process_label, row.formula) for row in rows} == {("PwCalculation", "Si8")}
    assert [row.energy for row in rows] == [-850.0 - seed for seed in range(8)]
    assert [row.pk for row in rows] == [calc.pk for calc in calculations]
    nodes = learned_from(potential)
    assert [calc.uuid for calc, _ in nodes] == [row.uuid for row in rows]
    assert all(
        label.calculation_uuid == calc.uuid and label.energy == calc.outputs.output_parameters["energy"]
        for calc, label in nodes
    )
