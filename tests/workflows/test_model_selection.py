"""``annpot.model_selection``: bad input refused at submit time, and a real selection on the fast campaign's Si DFT
data (2 descriptors x 2 networks x 3 fractions = 12 training jobs): one shared validation split, the table, the
ranking rule, the chosen configuration, provenance, and a campaign that starts from it.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from aiida.cmdline.utils.common import get_workchain_report
from aiida.engine import run, run_get_node
from aiida.orm import CalcFunctionNode, CalcJobNode, Dict, Int, ProcessNode, QueryBuilder

from aiida_annpot.calcfunctions.dataset import structure_key
from aiida_annpot.calcfunctions.model_selection import split_sizes, training_frames
from aiida_annpot.common.config import TrainingConfig, load_config
from aiida_annpot.data import AnnPotential, AtomisticDataset
from aiida_annpot.workflows.model_selection import ModelSelectionWorkChain
from aiida_annpot.workflows.train_base import AnnTrainBaseWorkChain
from tests.submission import validation_error

#: Common training settings: short, single-threaded (a couple of minutes for all 12 jobs on a loaded 2-core machine).
TRAINING = {
    "max_epochs": 40,
    "early_stopping_patience": 40,
    "batch_size": 4,
    "learning_rate": 0.01,
    "seed": 0,
    "threads": 1,
    "dtype": "float64",
}
CHEBYSHEV = {"type": "chebyshev", "radial_order": 6, "angular_order": 2, "radial_cutoff": 4.5, "angular_cutoff": 3.5}
BEHLER = {
    "type": "behler_parrinello",
    "cutoff": 4.5,
    "g2": [{"eta": eta} for eta in (0.05, 0.2, 0.5, 1.0, 2.0)],
    "g4": [{"eta": 0.05, "zeta": 1.0, "lambda": lam} for lam in (-1, 1)],
}
GRID = {
    "descriptors": [CHEBYSHEV, BEHLER],
    "networks": [{"hidden": [8]}, {"hidden": [16, 16]}],
    "training_fractions": [0.25, 0.5, 1.0],
    "validation_fraction": 0.2,
    "split_seed": 3,
    "tie_tolerance": 0.05,
}
JOB_LABELS = {f"candidate_{c}_{f}" for c in range(4) for f in ("f025", "f050", "f100")}


def selection_inputs(code, dataset, grid=GRID, training=TRAINING) -> dict:
    return {"dataset": dataset, "grid": Dict(grid), "training": Dict(training), "train": {"train": {"code": code}}}


def process_count() -> int:
    return QueryBuilder().append(ProcessNode).count()


# --- bad input: refused at submit time, before any node is stored ----------------------------------------------------


@pytest.fixture
def cu_dataset(emt_frames):
    """15 labelled EMT Cu frames, not stored."""
    return AtomisticDataset.from_frames(emt_frames(n=15, seed=5))


@pytest.mark.parametrize(
    ("grid", "training", "port", "fragments"),
    [
        ({**GRID, "descriptors": []}, TRAINING, "inputs.grid", ("the model grid is empty", "descriptors")),
        ({**GRID, "networks": [], "descriptors": []}, TRAINING, "inputs.grid", ("descriptors and networks",)),
        (
            {**GRID, "descriptors": [{**CHEBYSHEV, "radial_ordr": 4}]},
            TRAINING,
            "inputs.grid",
            ("descriptors.0.chebyshev.radial_ordr", "Extra inputs are not permitted"),
        ),
        ({**GRID, "descriptors": [{"type": "soap"}]}, TRAINING, "inputs.grid", ("descriptors.0", "soap")),
        ({**GRID, "training_fractions": [0.25, 0.5]}, TRAINING, "inputs.grid", ("must lie in (0, 1] and include 1.0",)),
        ({**GRID, "training_fractions": [0.333, 0.334, 1.0]}, TRAINING, "inputs.grid", ("differ by at least 1%",)),
        (GRID, {**TRAINING, "descriptor": CHEBYSHEV}, "inputs.training", ("training must not set descriptor",)),
        (
            GRID,
            {**TRAINING, "training_fraction": 0.5, "network": {"hidden": [4]}},
            "inputs.training",
            ("training must not set network, training_fraction",),
        ),
        (
            GRID,
            {**TRAINING, "learning_rat": 0.01},
            "inputs.training",
            ("learning_rat", "Extra inputs are not permitted"),
        ),
        (GRID, {**TRAINING, "dataset": "mine.extxyz"}, "inputs.training", ("do not set dataset",)),
        (GRID, {**TRAINING, "elements": ["Au"]}, "inputs", ("dataset has element(s) Cu not in training elements",)),
    ],
)
def test_bad_grid_or_training_is_refused(annpot_code, cu_dataset, grid, training, port, fragments):
    message = validation_error(ModelSelectionWorkChain, selection_inputs(annpot_code, cu_dataset, grid, training))
    assert message is not None, "the inputs were accepted"
    assert f"port '{port}'" in message, message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("n_frames", "grid", "fragment"),
    [
        (1, GRID, "the dataset has 1 frame(s): a train/validation split needs at least 2"),
        (3, GRID, "2 training frame(s) after 1 for validation, and the smallest training fraction 0.25"),
        (4, {**GRID, "training_fractions": [0.5, 0.6, 1.0]}, "{0.5: 2, 0.6: 2, 1.0: 3}"),
    ],
)
def test_too_small_dataset_is_refused(annpot_code, emt_frames, n_frames, grid, fragment):
    dataset = AtomisticDataset.from_frames(emt_frames(n=n_frames, seed=5))
    message = validation_error(ModelSelectionWorkChain, selection_inputs(annpot_code, dataset, grid))
    assert message is not None and "port 'inputs'" in message and fragment in message, message


def test_refused_before_any_node_is_stored(annpot_code, cu_dataset):
    """Running bad inputs raises at once: no process, and the dataset is still unstored."""
    valid = selection_inputs(annpot_code, cu_dataset)
    assert validation_error(ModelSelectionWorkChain, valid) is None, "the valid inputs pass"
    before = process_count()
    for grid, training in (({**GRID, "descriptors": []}, TRAINING), (GRID, {**TRAINING, "descriptor": CHEBYSHEV})):
        with pytest.raises(ValueError, match=r"the model grid is empty|training must not set descriptor"):
            run(ModelSelectionWorkChain, **selection_inputs(annpot_code, cu_dataset, grid, training))
    assert process_count() == before and not cu_dataset.is_stored


# --- a real selection on the fast campaign's Si DFT data --------------------------------------------------------------


@pytest.fixture(scope="module")
def selection(fast_si_campaign, annpot_code):
    """(outputs, node) of the model selection on the campaign's DFT dataset; read-only."""
    outputs, _ = fast_si_campaign
    return run_get_node(ModelSelectionWorkChain, **selection_inputs(annpot_code, outputs["dataset"]))


def jobs(node) -> dict[str, ProcessNode]:
    return {
        link.link_label: link.node
        for link in node.base.links.get_outgoing(node_class=ProcessNode).all()
        if link.node.process_class is AnnTrainBaseWorkChain
    }


def table(node) -> dict:
    return node.outputs.table.get_dict()


@pytest.mark.slow
def test_selection_finishes_with_twelve_jobs_on_one_shared_validation_split(selection, fast_si_campaign):
    _, node = selection
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    children = jobs(node)
    assert set(children) == JOB_LABELS
    training, validation = node.outputs.training_dataset, node.outputs.validation_dataset
    for label, child in children.items():
        assert child.is_finished_ok, label
        assert child.inputs.train.validation_dataset.uuid == validation.uuid, "one validation split for all"
        assert child.inputs.train.dataset.uuid == training.uuid
        config = child.inputs.train.config.get_dict()
        assert config["training_fraction"] == {"f025": 0.25, "f050": 0.5, "f100": 1.0}[label[-4:]]
        candidate = int(label.split("_")[1])
        assert config["descriptor"]["type"] == GRID["descriptors"][candidate // 2]["type"]
        assert config["network"]["hidden"] == GRID["networks"][candidate % 2]["hidden"]
        assert child.outputs.metrics["validation"]["n_structures"] == validation.n_frames
    # the split partitions the campaign's dataset, with the frames' DFT sources kept
    dataset = fast_si_campaign[0]["dataset"]
    assert training.creator.process_label == "split_dataset" and validation.creator.uuid == training.creator.uuid
    assert (training.n_frames, validation.n_frames) == split_sizes(dataset.n_frames, GRID["validation_fraction"])
    keys = {structure_key(f): s for f, s in zip(dataset.to_frames(), dataset.sources, strict=True)}
    split = [
        (structure_key(f), s) for d in (training, validation) for f, s in zip(d.to_frames(), d.sources, strict=True)
    ]
    assert dict(split) == keys and len(split) == len(keys), "every frame once, with its source"


@pytest.mark.slow
def test_table_has_every_candidate_with_errors_at_every_fraction(selection):
    _, node = selection
    rows, n_training = table(node)["rows"], node.outputs.training_dataset.n_frames
    assert [row["candidate"] for row in rows] == [f"candidate_{i}" for i in range(4)]
    for row in rows:
        assert row["eligible"] and row["rank"] in (1, 2, 3, 4)
        assert [p["fraction"] for p in row["fractions"]] == [0.25, 0.5, 1.0]
        counts = [p["n_train"] for p in row["fractions"]]
        assert counts == [training_frames(n_training, f) for f in (0.25, 0.5, 1.0)] and counts[-1] == n_training
        assert counts == sorted(set(counts)), "training frames grow with the fraction"
        for point in row["fractions"]:
            for key in ("train_energy_rmse", "train_force_rmse", "validation_energy_rmse", "validation_force_rmse"):
                assert math.isfinite(point[key]) and point[key] > 0, (row["candidate"], point)
        assert set(row["diagnosis"]) >= {"generalisation_gap", "more_data_would_help", "underfitting", "summary"}
    assert sorted(row["rank"] for row in rows) == [1, 2, 3, 4]


@pytest.mark.slow
def test_network_sizes_are_read_from_the_trained_weights(selection):
    """Features equal the engine's descriptor size; parameters follow from the layer widths (one element: Si)."""
    from aiida_annpot.common.config import BehlerParrinelloConfig, ChebyshevConfig
    from aiida_annpot.core.descriptors import make_descriptor

    _, node = selection
    for row in table(node)["rows"]:
        config = (ChebyshevConfig if row["descriptor"]["type"] == "chebyshev" else BehlerParrinelloConfig)(
            **row["descriptor"]
        )
        assert row["n_features"] == make_descriptor(["Si"], config).n_features
        widths = [row["n_features"], *row["network"]["hidden"], 1]
        assert row["n_parameters"] == sum(a * b + b for a, b in itertools.pairwise(widths))


@pytest.mark.slow
def test_chosen_config_is_the_row_the_ranking_rule_picks(selection):
    """Recomputed from the table: score = E/best E + F/best F at 100 %, ties within 5 % go to fewer parameters."""
    outputs, node = selection
    data = table(node)
    full = {row["index"]: row["fractions"][-1] for row in data["rows"]}
    best_e = min(p["validation_energy_rmse"] for p in full.values())
    best_f = min(p["validation_force_rmse"] for p in full.values())
    scores = {i: p["validation_energy_rmse"] / best_e + p["validation_force_rmse"] / best_f for i, p in full.items()}
    tied = [i for i, s in scores.items() if s <= min(scores.values()) * (1 + GRID["tie_tolerance"])]
    expected = min(tied, key=lambda i: (data["rows"][i]["n_parameters"], scores[i], i))
    assert data["chosen"] == expected
    assert {row["index"]: row["score"] for row in data["rows"]} == pytest.approx(scores)
    chosen = data["rows"][expected]
    assert chosen["rank"] == 1 and data["chosen_candidate"] == f"candidate_{expected}"

    config = outputs["config"].get_dict()
    assert config == {**TRAINING, "descriptor": chosen["descriptor"], "network": chosen["network"]}
    validated = load_config({**config, "dataset": "frames.extxyz"}, TrainingConfig)
    assert validated.descriptor.type == GRID["descriptors"][expected // 2]["type"]
    assert validated.network.hidden == GRID["networks"][expected % 2]["hidden"]
    assert validated.training_fraction == 1.0
    # the potential output is the chosen candidate trained on the full split, with the chosen architecture
    potential = outputs["potential"]
    assert isinstance(potential, AnnPotential)
    assert potential.uuid == jobs(node)[f"candidate_{expected}_f100"].outputs.potential.uuid
    assert potential.base.attributes.get("descriptor") == chosen["descriptor"]
    assert potential.base.attributes.get("network") == chosen["network"]


@pytest.mark.slow
def test_config_leads_back_to_the_metrics_it_was_chosen_by(selection):
    outputs, node = selection
    ranking = outputs["config"].creator
    assert ranking.process_label == "rank_models" and outputs["table"].creator.uuid == ranking.uuid
    inputs = {link.link_label: link.node for link in ranking.base.links.get_incoming().all()}
    expected = {job.outputs.metrics.uuid for job in jobs(node).values()}
    assert {n.uuid for label, n in inputs.items() if label.startswith("metrics_")} == expected
    assert inputs["grid"].uuid == node.inputs.grid.uuid and inputs["training"].uuid == node.inputs.training.uuid
    # config ← rank_models ← metrics ← the AnnTrainCalculation of every job
    query = QueryBuilder().append(Dict, filters={"id": outputs["config"].pk}, tag="config")
    query.append(CalcFunctionNode, with_outgoing="config", tag="rank")
    query.append(Dict, with_outgoing="rank", tag="metrics")
    query.append(CalcJobNode, with_outgoing="metrics", project=["uuid"])
    trained = {job.outputs.metrics.creator.uuid for job in jobs(node).values()}
    assert set(query.all(flat=True)) == trained and len(trained) == len(JOB_LABELS)
    for job in jobs(node).values():
        assert job.outputs.metrics.creator.process_label == "AnnTrainCalculation"


@pytest.mark.slow
def test_learning_curves_and_report(selection):
    outputs, node = selection
    rows = table(node)["rows"]
    curves = outputs["learning_curves"]
    assert sorted(curves) == [row["candidate"] for row in rows]
    for row in rows:
        curve = curves[row["candidate"]]
        np.testing.assert_array_equal(curve.get_array("fraction"), [0.25, 0.5, 1.0])
        np.testing.assert_allclose(
            curve.get_array("validation_force_rmse"), [p["validation_force_rmse"] for p in row["fractions"]]
        )
    report = get_workchain_report(node, "REPORT")
    chosen = rows[table(node)["chosen"]]
    for phrase in (
        "split",
        "12 job(s)",
        "12 of 12 job(s) finished; 4 of 4 candidate(s) eligible",
        f"chose {chosen['candidate']}",
    ):
        assert phrase in report, report


@pytest.mark.slow
def test_campaign_and_committee_builders_accept_the_chosen_config(
    selection, pw_code, annpot_code, si_pseudo_family, si_cell
):
    """The campaign can start from the selection: its output is a valid ``committee.config``."""
    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
    from aiida_annpot.workflows.committee import CommitteeTrainingWorkChain

    outputs, _ = selection
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, {"si": si_cell()}, si_pseudo_family, protocol="fast"
    )
    builder.committee.config = outputs["config"]
    assert validation_error(ActiveLearningWorkChain, builder) is None
    assert builder.committee.config.uuid == outputs["config"].uuid, "the campaign links to the chosen config"

    committee = CommitteeTrainingWorkChain.get_builder()
    committee.dataset = outputs["training_dataset"]
    committee.config = outputs["config"]
    committee.train.train.code = annpot_code
    assert validation_error(CommitteeTrainingWorkChain, committee) is None


# --- failed training jobs ---------------------------------------------------------------------------------------------

#: A descriptor the engine refuses for Cu frames at run time (its type weights do not cover Cu): every job of its
#: candidates fails, deterministically.
BROKEN = {**CHEBYSHEV, "radial_order": 4, "type_weights": {"Au": 1.0}}
SMALL_GRID = {
    "descriptors": [{**CHEBYSHEV, "radial_order": 4}, BROKEN],
    "networks": [{"hidden": [6]}],
    "training_fractions": [0.5, 1.0],
}


@pytest.mark.slow
def test_a_failed_job_makes_only_its_candidate_ineligible(annpot_code, cu_dataset):
    inputs = selection_inputs(annpot_code, cu_dataset, SMALL_GRID, {**TRAINING, "max_epochs": 5})
    inputs["train"]["max_iterations"] = Int(1)  # no restart of the doomed jobs (they fail with exit status 402)
    outputs, node = run_get_node(ModelSelectionWorkChain, **inputs)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    good, broken = table(node)["rows"]
    assert table(node)["chosen"] == 0 and good["rank"] == 1
    assert not broken["eligible"] and broken["rank"] is None and broken["score"] is None
    status = AnnTrainBaseWorkChain.exit_codes.ERROR_UNHANDLED_FAILURE.status
    assert "f050: AnnTrainBaseWorkChain<" in broken["ineligible_reason"]
    assert f"exit status {status}" in broken["ineligible_reason"]
    assert [p["status"] for p in broken["fractions"]] == ["failed", "failed"]
    assert broken["n_parameters"] is None and good["n_parameters"] > 0
    assert outputs["config"]["descriptor"]["radial_order"] == 4 and "type_weights" in outputs["config"]["descriptor"]
    assert outputs["config"]["descriptor"]["type_weights"] is None


@pytest.mark.slow
def test_no_eligible_candidate_is_an_exit_code_naming_the_failures(annpot_code, cu_dataset):
    inputs = selection_inputs(
        annpot_code, cu_dataset, {**SMALL_GRID, "descriptors": [BROKEN]}, {**TRAINING, "max_epochs": 5}
    )
    inputs["train"]["max_iterations"] = Int(1)
    outputs, node = run_get_node(ModelSelectionWorkChain, **inputs)
    assert node.exit_status == ModelSelectionWorkChain.exit_codes.ERROR_NO_ELIGIBLE_CANDIDATE.status
    message = node.exit_message
    assert message.startswith("no candidate can be chosen: candidate_0: f050: AnnTrainBaseWorkChain<"), message
    assert "; f100: AnnTrainBaseWorkChain<" in message and "exit status 402" in message
    assert "config" not in outputs and "potential" not in outputs
    assert table(node)["chosen"] is None and not table(node)["rows"][0]["eligible"], "the table says why"
