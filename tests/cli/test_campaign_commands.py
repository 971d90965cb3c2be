"""``status``, ``plot``, ``export`` and ``lineage`` on a real campaign: the session's ``fast_si_campaign`` (shared
with tests/workflows/test_active_learning.py, so the suite runs one campaign)."""

from __future__ import annotations

import json

import ase.io
import pytest
from aiida.orm import StructureData

pytestmark = pytest.mark.slow

PLOTS = (
    "errors.png",
    "learning_curves.png",
    "force_deviation.png",
    "parity.png",
    "test_equation_of_state.png",
    "parity_training.png",
)


def _second_reference(node):
    """The training set's second ReferenceWorkChain (the test set's, ``reference_test``, runs beside the first)."""
    return node.base.links.get_outgoing(link_label_filter="reference_02").one().node


def test_status_has_one_row_per_iteration_and_the_exit_message(run_cli, fast_si_campaign):
    _, node = fast_si_campaign
    result = run_cli("status", node.pk)
    assert result.exit_code == 0, result.output
    assert f"ActiveLearningWorkChain<{node.pk}>" in result.output and "finished" in result.output
    assert f"exit status {node.exit_status}" in result.output
    rows = node.outputs.iterations.get_list()
    lines = [line.split() for line in result.output.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [int(line[0]) for line in lines] == [row["iteration"] for row in rows]
    for line, row in zip(lines, rows, strict=True):
        assert int(line[1]) == row["labels_added"] and int(line[2]) == row["labels_failed"]
        assert float(line[4]) == pytest.approx(row["validation"]["energy_rmse"], abs=0.006)
        assert float(line[6]) == pytest.approx(row["test"]["energy_rmse"], abs=0.006)  # the independent test set
        assert float(line[7]) == pytest.approx(row["test"]["force_rmse"], abs=0.0006)
        assert float(line[8].rstrip("%")) == pytest.approx(100 * row["test"]["bulk_modulus_error"], abs=0.06)
        assert line[9] == "-", "the small campaign's test set has no vacancy"
        assert float(line[10]) == pytest.approx(row["last_stage_ratios"]["accurate"], abs=0.006)
    assert " ".join(lines[-1][14:]) == ("converged" if node.exit_status == 0 else "not converged")


def test_plot_writes_every_figure_as_png(run_cli, fast_si_campaign, tmp_path):
    _, node = fast_si_campaign
    result = run_cli("plot", node.pk, "-o", tmp_path / "plots")
    assert result.exit_code == 0, result.output
    for name in PLOTS:
        path = tmp_path / "plots" / name
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and path.stat().st_size > 10_000, name
        assert str(path) in result.output


def test_export_writes_the_member_files_dataset_and_summary(run_cli, fast_si_campaign, tmp_path):
    outputs, node = fast_si_campaign
    potential, dataset = outputs["potential"], outputs["dataset"]
    result = run_cli("export", node.pk, "-o", tmp_path)
    assert result.exit_code == 0, result.output
    for index in range(potential.committee_size):
        assert (tmp_path / "potential" / potential.member_name(index)).read_bytes() == potential.member_bytes(index)
    frames = ase.io.read(tmp_path / "dataset.extxyz", index=":")
    assert len(frames) == dataset.n_frames
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["campaign"]["exit_status"] == node.exit_status
    assert summary["potential"]["uuid"] == potential.uuid and summary["dataset"]["uuid"] == dataset.uuid
    assert summary["iterations"] == node.outputs.iterations.get_list()


def test_lineage_of_the_potential_lists_exactly_the_dataset_sources(run_cli, fast_si_campaign):
    outputs, _ = fast_si_campaign
    result = run_cli("lineage", outputs["potential"].pk)
    assert result.exit_code == 0, result.output
    sources = set(outputs["dataset"].sources)
    listed = {word for word in result.output.split() if len(word) == 36 and word.count("-") == 4}
    assert listed == sources
    assert f"learned from {len(sources)} reference calculation(s)" in result.output
    rows = [line.split() for line in result.output.splitlines() if any(uuid in line for uuid in sources)]
    assert len(rows) == len(sources) and all(row[1] == "PwCalculation" for row in rows), rows


def test_lineage_of_a_selected_structure_names_its_exploration_and_committee(run_cli, fast_si_campaign):
    _, node = fast_si_campaign
    labelled = _second_reference(node).base.links.get_incoming(
        node_class=StructureData, link_label_filter="structures__%"
    )  # not its cells
    structure = labelled.all()[0].node
    explore = [p for p in structure.creator.base.links.get_incoming().all() if p.link_label.startswith("frames")]
    explore_pks = {link.node.creator.pk for link in explore}
    first_committee = sorted(
        (c for c in node.called if c.process_label == "CommitteeTrainingWorkChain"), key=lambda c: c.ctime
    )[0].outputs.potential
    result = run_cli("lineage", structure.pk)
    assert result.exit_code == 0, result.output
    assert "select_candidates" in result.output
    assert any(f"AnnExploreCalculation<{pk}>" in result.output for pk in explore_pks)
    assert f"AnnPotential<{first_committee.pk}>" in result.output
    assert "labelled by 1 reference run(s)" in result.output
    (row,) = [line.split() for line in result.output.splitlines() if "QuantumEspressoLabelWorkChain" in line]
    assert row[3] == "0" and float(row[4]) < 0, row  # finished OK, with its label's energy (eV)


def test_lineage_of_a_generated_structure_names_its_parent(run_cli, fast_si_campaign):
    _, node = fast_si_campaign
    supercell = next(link.node for link in node.base.links.get_outgoing().all() if link.link_label == "supercell_si")
    result = run_cli("lineage", supercell.outputs.result.pk)
    assert result.exit_code == 0, result.output
    assert "supercell_structure" in result.output and node.inputs.structures["si"].uuid in result.output
