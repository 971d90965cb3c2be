"""``status``, ``plot``, ``export``, ``lineage`` and ``resume`` without running a campaign: on campaign-like nodes made
by hand (process type, state, the live ``annpot_iterations`` extra) and on nodes that are not campaigns."""

from __future__ import annotations

import json

import pytest
from aiida.common.links import LinkType
from aiida.orm import Int, WorkChainNode
from plumpy import ProcessState

from aiida_annpot.core.dataset import read_frames
from aiida_annpot.workflows.active_learning import ITERATIONS_EXTRA


@pytest.mark.parametrize("command", ["status", "plot", "export", "resume"])
def test_a_node_that_is_not_a_campaign_is_refused(run_cli, command, tmp_path):
    node = Int(5).store()
    args = (command, node.pk) if command in ("status", "resume") else (command, node.pk, "-o", tmp_path / "out")
    result = run_cli(*args)
    assert result.exit_code != 0
    assert f"node {node.pk} is an Int, not an active-learning campaign" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["status", "plot", "export", "resume", "lineage"])
def test_a_node_that_does_not_exist_is_refused(run_cli, command, tmp_path):
    args = (command, 987654) if command in ("status", "resume", "lineage") else (command, 987654, "-o", tmp_path)
    result = run_cli(*args)
    assert result.exit_code != 0
    assert "no Node found with ID<987654>" in result.output


def test_other_work_chains_are_named_in_the_error(run_cli, fake_campaign):
    child = fake_campaign(paused=["reference_01"]).called[0]
    result = run_cli("status", child.pk)
    assert result.exit_code != 0
    assert "is a WorkChainNode (ReferenceWorkChain), not an active-learning campaign" in result.output


def test_lineage_refuses_other_node_types(run_cli):
    node = Int(5).store()
    result = run_cli("lineage", node.pk)
    assert result.exit_code != 0
    assert "is an Int; lineage knows AnnPotential and StructureData" in result.output


def test_status_of_a_running_campaign_reads_the_live_extra(run_cli, fake_campaign):
    node = fake_campaign()
    result = run_cli("status", node.pk)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"ActiveLearningWorkChain<{node.pk}> 'fake': waiting"
    first = next(line for line in lines if line.split()[:1] == ["1"])
    # labels, validation errors, test-set errors (E, F, B0 relative, vacancy eV), last-stage accurate share, ratios
    assert first.split() == [
        "1",
        "4",
        "0",
        "(+1",
        "test)",
        "4",
        "12.50",
        "0.210",
        "8.25",
        "0.123",
        "-5.2%",
        "0.41",
        "0.55",
        "0.30",
        "0.10",
        "3",
        "not",
        "converged",
    ]
    second = next(line for line in lines if line.split()[:1] == ["2"])
    assert second.split()[-1] == "running" and "-" in second.split()


def test_status_without_argument_lists_campaigns(run_cli, fake_campaign):
    node = fake_campaign(label="listed")
    result = run_cli("status")
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.split()[:1] == [str(node.pk)])
    assert "listed" in row and "waiting" in row and row.split()[-1] == "2"


def test_export_of_a_campaign_without_outputs_writes_the_summary(run_cli, fake_campaign, tmp_path):
    node = fake_campaign()
    result = run_cli("export", node.pk, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "no potential yet" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["campaign"]["uuid"] == node.uuid and summary["iterations"] == node.base.extras.get(ITERATIONS_EXTRA)
    assert "potential" not in summary


def test_an_excepted_campaign_shows_its_state_and_exports_what_it_computed(
    run_cli, fake_campaign, tmp_path, emt_frames
):
    """The daemon excepted in iteration 2: its row says so (not "running"), and export writes the labels of the
    finished reference steps: the later training labels, not the test set's."""
    from aiida_annpot.data import AtomisticDataset

    node = fake_campaign()
    frames = emt_frames(n=5, seed=3)
    for label, count in (("reference_01", 2), ("reference_test", 1), ("reference_02", 4)):
        child = WorkChainNode()
        child.set_process_state(ProcessState.FINISHED)
        child.set_exit_status(0)
        child.base.links.add_incoming(node, LinkType.CALL_WORK, label)
        child.store()
        dataset = AtomisticDataset.from_frames(frames[:count]).store()
        dataset.base.links.add_incoming(child, LinkType.RETURN, "dataset")
    node.set_process_state(ProcessState.EXCEPTED)
    status = run_cli("status", node.pk)
    second = next(line for line in status.output.splitlines() if line.split()[:1] == ["2"])
    assert second.split()[-1] == "excepted", status.output
    result = run_cli("export", node.pk, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert len(read_frames(tmp_path / "out" / "dataset.extxyz")) == 4
    assert len(read_frames(tmp_path / "out" / "test_set.extxyz")) == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["dataset"]["n_frames"] == 4 and summary["dataset"]["output"] is False
    assert summary["iterations"][-1]["stopped"] == "excepted" and "running" not in summary["iterations"][-1]


def test_plot_of_a_running_campaign_draws_what_exists(run_cli, fake_campaign, tmp_path):
    result = run_cli("plot", fake_campaign().pk, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "errors.png").read_bytes().startswith(b"\x89PNG")
    assert str(tmp_path / "errors.png") in result.output
    assert not (tmp_path / "parity.png").exists()


def test_resume_with_nothing_paused_says_so(run_cli, fake_campaign):
    node = fake_campaign()
    result = run_cli("resume", node.pk)
    assert result.exit_code == 0, result.output
    assert f"nothing paused in campaign {node.pk}" in result.output


def test_resume_plays_every_paused_process_of_the_campaign(run_cli, fake_campaign, monkeypatch):
    """The process controller needs a broker, which the test profile has not: ``play_processes`` is replaced by a
    recorder, so this checks which processes are chosen and what is printed, not the broker round trip."""
    from aiida.engine.processes import control

    played = []
    monkeypatch.setattr(control, "play_processes", lambda processes, **_: played.extend(processes))
    node = fake_campaign(paused=["reference_01", "reference_02"])
    node.pause()
    result = run_cli("resume", node.pk)
    assert result.exit_code == 0, result.output
    assert {p.pk for p in played} == {node.pk, *(c.pk for c in node.called)}
    for process in played:
        assert f"played {process.process_label}<{process.pk}>" in result.output


def test_resume_reports_a_failure_to_play(run_cli, fake_campaign):
    """Without a broker the engine cannot reach the processes: a clear error, no traceback."""
    node = fake_campaign(paused=["reference_01"])
    result = run_cli("resume", node.pk)
    assert result.exit_code != 0
    assert "could not play the paused processes" in result.output


@pytest.mark.parametrize(
    ("command", "function", "past"), [("pause", "pause_processes", "paused"), ("kill", "kill_processes", "killed")]
)
def test_pause_and_kill_act_on_the_campaign_and_every_active_child(
    run_cli, fake_campaign, monkeypatch, command, function, past
):
    """As for resume, the broker round trip is replaced by a recorder (tests/integration runs it for real): the
    campaign comes first, then every active descendant; a paused child is not paused again, and pause leaves running
    calculations alone (they finish; nothing new is created)."""
    from aiida.engine.processes import control
    from aiida.orm import CalcJobNode

    acted = []
    monkeypatch.setattr(control, function, lambda processes, **_: acted.extend(processes))
    node = fake_campaign(paused=["reference_01"] if command == "pause" else [])
    for label in ("reference_02", "committee_02"):
        child = WorkChainNode()
        child.set_process_state(ProcessState.WAITING)
        child.base.links.add_incoming(node, LinkType.CALL_WORK, label)
        child.store()
    job = CalcJobNode(process_type="aiida.calculations:quantumespresso.pw")
    job.set_process_state(ProcessState.WAITING)
    job.base.links.add_incoming(child, LinkType.CALL_CALC, "iteration_01")
    job.store()
    result = run_cli(command, node.pk)
    assert result.exit_code == 0, result.output
    expected = [c.pk for c in node.called if not c.paused] + ([job.pk] if command == "kill" else [])
    assert acted[0].pk == node.pk and sorted(p.pk for p in acted[1:]) == sorted(expected)
    assert f"{past} ActiveLearningWorkChain<{node.pk}>" in result.output


def test_status_names_paused_children(run_cli, fake_campaign):
    node = fake_campaign(paused=["reference_01"])
    result = run_cli("status", node.pk)
    child = node.called[0]
    assert f"paused: ReferenceWorkChain<{child.pk}>" in result.output, result.output


def test_verdi_draws_a_campaigns_provenance_graph(fake_campaign, emt_frames, tmp_path):
    """Graphviz comes with the setup (scripts/setup.sh): ``verdi node graph generate`` renders a campaign's graph."""
    from aiida.cmdline.commands.cmd_node import verdi_node
    from click.testing import CliRunner

    from aiida_annpot.data import AtomisticDataset

    node = fake_campaign()
    dataset = AtomisticDataset.from_frames(emt_frames(n=2, seed=5)).store()
    dataset.base.links.add_incoming(node, LinkType.RETURN, "dataset")
    output = tmp_path / "campaign.png"
    result = CliRunner().invoke(
        verdi_node,
        ["graph", "generate", str(node.pk), "--output-format", "png", "--output-file", str(output)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert output.read_bytes().startswith(b"\x89PNG") and output.stat().st_size > 1000


# --- lineage on a hand-made graph: potential ← training ← dataset ← merge_dataset ← label ← PwCalculation ----------


def _labelling_run(structure, label=None, exit_status: int = 0) -> WorkChainNode:
    """A finished QuantumEspressoLabelWorkChain node on ``structure`` returning ``label`` (None: it failed)."""
    from aiida.orm import WorkflowNode

    node = WorkChainNode()
    node.process_type = "aiida.workflows:annpot.labelling.quantumespresso"
    node.set_process_label("QuantumEspressoLabelWorkChain")
    node.base.links.add_incoming(structure, LinkType.INPUT_WORK, "structure")
    node.store()
    if label is not None:
        label.base.links.add_incoming(node, LinkType.RETURN, "label")
    node.set_process_state(ProcessState.FINISHED)
    node.set_exit_status(exit_status)
    node.seal()
    assert isinstance(node, WorkflowNode)
    return node


@pytest.fixture
def learned_graph(aiida_profile, trained_model):
    """Two labelled structures, the second a duplicate the merge rejects, a failed labelling run of the first, and a
    potential trained on the merged dataset."""
    from aiida.orm import CalcJobNode

    from aiida_annpot.calcfunctions import merge_dataset
    from aiida_annpot.data import AnnPotential
    from aiida_annpot.workflows.labelling.quantumespresso import quantumespresso_label

    from ..workflows.test_labelling_quantumespresso import pw_outputs, si_structure

    kept, twin = pw_outputs(si_structure(1), energy=-850.25), pw_outputs(si_structure(1), energy=-700.0)
    labels = {
        key: quantumespresso_label(outputs["parameters"], outputs["trajectory"])
        for key, outputs in (("a", kept), ("b", twin))
    }
    failed = _labelling_run(kept["structure"], exit_status=310)
    run = _labelling_run(kept["structure"], labels["a"])
    _labelling_run(twin["structure"], labels["b"])
    merged = merge_dataset(
        structure_a=kept["structure"], label_a=labels["a"], structure_b=twin["structure"], label_b=labels["b"]
    )
    assert list(merged["rejected"].get_dict()) == ["b"]
    train = CalcJobNode(process_type="aiida.calculations:annpot.train")
    train.base.links.add_incoming(merged["dataset"], LinkType.INPUT_CALC, "dataset")
    train.store()
    potential = AnnPotential.from_files([trained_model])
    potential.base.links.add_incoming(train, LinkType.CREATE, "potential")
    potential.store()
    return {"potential": potential, "kept": kept, "twin": twin, "run": run, "failed": failed}


def test_lineage_of_a_potential_lists_the_calculations_of_its_kept_labels(run_cli, learned_graph):
    from aiida_annpot.cli.lineage import learned_from

    kept = learned_graph["kept"]
    ((calculation, label),) = learned_from(learned_graph["potential"])
    assert calculation.uuid == kept["calc"].uuid and label.calculation_uuid == kept["calc"].uuid
    result = run_cli("lineage", learned_graph["potential"].pk)
    assert result.exit_code == 0, result.output
    assert "learned from 1 reference calculation(s)" in result.output
    header = next(line for line in result.output.splitlines() if line.startswith("PK"))
    assert header.split() == ["PK", "process", "UUID", "formula", "energy", "(eV)"]
    (row,) = [line.split() for line in result.output.splitlines() if kept["calc"].uuid in line]
    assert row == [str(kept["calc"].pk), "PwCalculation", kept["calc"].uuid, "Si8", "-850.250000"]
    assert learned_graph["twin"]["calc"].uuid not in result.output, "a rejected label is not learned from"


def test_lineage_of_a_structure_lists_its_labelling_runs(run_cli, learned_graph):
    structure, run, failed = learned_graph["kept"]["structure"], learned_graph["run"], learned_graph["failed"]
    result = run_cli("lineage", structure.pk)
    assert result.exit_code == 0, result.output
    assert "an input structure, not made by a calculation" in result.output
    assert "labelled by 2 reference run(s)" in result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines() if line.split()[:1] != ["PK"]}
    assert rows[str(run.pk)] == [str(run.pk), "QuantumEspressoLabelWorkChain", run.uuid, "0", "-850.250000"]
    assert rows[str(failed.pk)] == [str(failed.pk), "QuantumEspressoLabelWorkChain", failed.uuid, "310", "-"]
