"""``aiida-annpot launch`` with ``model_selection``: the campaign trains with the configuration a finished model
selection chose; protocol overrides of single training keys apply on top; anything but a finished model selection is
refused, naming the field, before any process exists."""

from __future__ import annotations

import pytest
from aiida.orm import Dict, WorkChainNode
from plumpy import ProcessState

from aiida_annpot.cli.campaign_file import CampaignFileError, build_from_file
from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain
from aiida_annpot.workflows.model_selection import ModelSelectionWorkChain
from tests.submission import validation_error

#: Common training settings of the selection: a couple of epochs (the choice is not what this file tests).
TRAINING = {"max_epochs": 3, "batch_size": 4, "learning_rate": 0.03, "threads": 1, "seed": 1}
GRID = {
    "descriptors": [
        {"type": "chebyshev", "radial_order": 4, "angular_order": 2, "radial_cutoff": 4.0, "angular_cutoff": 3.0}
    ],
    "networks": [{"hidden": [6]}],
    "training_fractions": [0.5, 1.0],
}


# Port tests run no DFT: a fixture code and a generated pseudopotential family stand in for pw.x and Debian's UPF.
@pytest.fixture(scope="session")
def pw_code(fixture_pw_code):
    return fixture_pw_code


@pytest.fixture(scope="session")
def si_pseudo_family(generated_si_family):
    return generated_si_family


@pytest.fixture(scope="module")
def selection(annpot_code, emt_frames):
    """A finished model selection (one candidate, two fractions, on EMT frames: two short training jobs)."""
    from aiida.engine import run_get_node

    from aiida_annpot.data import AtomisticDataset

    inputs = {
        "dataset": AtomisticDataset.from_frames(emt_frames(n=6, seed=4)),
        "grid": Dict(GRID),
        "training": Dict(TRAINING),
        "train": {"train": {"code": annpot_code}},
    }
    _, node = run_get_node(ModelSelectionWorkChain, **inputs)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    return node


def hand_made_selection(state: ProcessState, exit_status: int | None = None) -> WorkChainNode:
    """A ModelSelectionWorkChain node in ``state`` (a running or failed selection), made by hand."""
    node = WorkChainNode()
    node.process_type = ModelSelectionWorkChain.build_process_type()
    node.set_process_label("ModelSelectionWorkChain")
    node.set_process_state(state)
    if exit_status is not None:
        node.set_exit_status(exit_status)
        node.set_exit_message("no candidate trained successfully on every fraction: ...")
    return node.store()


def test_chosen_config_becomes_the_committee_config(write_campaign, selection, count_processes):
    chosen = selection.outputs.config
    before = count_processes()
    for reference in (selection.pk, selection.uuid):
        builder = build_from_file(write_campaign(model_selection=reference))
        assert builder.committee.config.uuid == chosen.uuid, "the campaign's input is the selection's output node"
        assert validation_error(ActiveLearningWorkChain, builder) is None
        assert f"ModelSelectionWorkChain<{selection.pk}>" in builder.metadata.description
    assert count_processes() == before, "nothing was run"
    # the protocol's own training settings are replaced, not mixed in (fast sets validation_fraction: 0.2)
    assert "validation_fraction" not in builder.committee.config.get_dict()
    assert builder.committee.committee_size.value == 4, "the rest of the fast protocol is kept"


def test_overrides_apply_on_top_of_the_chosen_config(write_campaign, selection):
    """Order: protocol → model selection (whole committee.config) → overrides (key by key).

    ``min_learning_rate: 0.02`` is valid on top of the selection's learning rate (0.03) but not on top of the fast
    protocol's (0.01): the overrides meet the selection's configuration only.
    """
    chosen = selection.outputs.config.get_dict()
    changes = {"max_epochs": 7, "min_learning_rate": 0.02, "network": {"activation": "silu"}}
    overrides = {"committee": {"committee_size": 3, "config": changes}}
    builder = build_from_file(write_campaign(model_selection=selection.pk, overrides=overrides))
    config = builder.committee.config.get_dict()
    assert config["max_epochs"] == 7 and config["min_learning_rate"] == 0.02
    assert config["network"] == {**chosen["network"], "activation": "silu"}, "merged key by key"
    assert config["descriptor"] == chosen["descriptor"] and config["learning_rate"] == TRAINING["learning_rate"]
    assert {key: value for key, value in config.items() if key not in changes} == {
        key: value for key, value in chosen.items() if key not in changes
    }
    assert builder.committee.committee_size.value == 3
    assert "with overrides of max_epochs, min_learning_rate, network" in builder.metadata.description
    assert selection.outputs.config.get_dict() == chosen, "the selection's output is not modified"
    assert validation_error(ActiveLearningWorkChain, builder) is None


def test_an_invalid_override_on_top_of_the_chosen_config_is_named(write_campaign, selection):
    overrides = {"committee": {"config": {"learning_rate": -1.0}}}
    with pytest.raises(
        CampaignFileError,
        match=r"overrides\.committee\.config on top of model_selection.*"
        "learning_rate: Input should be greater than 0",
    ):
        build_from_file(write_campaign(model_selection=selection.pk, overrides=overrides))


@pytest.mark.parametrize(
    ("make", "fragments"),
    [
        (lambda s: 10**9, ("model_selection: no node 1000000000",)),
        (lambda s: s.outputs.table.pk, ("model_selection: node", "is a Dict, not an annpot.model_selection")),
        (lambda s: s.outputs.config.creator.uuid, ("is a rank_models, not an annpot.model_selection",)),
        (
            lambda s: hand_made_selection(ProcessState.WAITING).pk,
            ("model_selection: ModelSelectionWorkChain<", "has not finished successfully (waiting)"),
        ),
        (
            lambda s: hand_made_selection(ProcessState.FINISHED, exit_status=401).uuid,
            ("has not finished successfully (finished, exit status 401: no candidate trained",),
        ),
    ],
)
def test_anything_but_a_finished_model_selection_is_refused(
    run_cli, write_campaign, count_processes, selection, make, fragments
):
    path = write_campaign(model_selection=make(selection))
    before = count_processes()
    result = run_cli("launch", path)
    assert result.exit_code != 0 and "invalid campaign file" in result.output, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert "Traceback" not in result.output
    assert count_processes() == before, "nothing was run or submitted"


def test_model_selection_of_the_wrong_type_is_named(write_campaign):
    with pytest.raises(CampaignFileError, match="model_selection"):
        build_from_file(write_campaign(model_selection=[1, 2]))


def test_problems_are_reported_together(write_campaign):
    with pytest.raises(CampaignFileError) as info:
        build_from_file(write_campaign(model_selection=10**9, protocol="turbo"))
    assert "model_selection: no node" in str(info.value) and "protocol: unknown protocol" in str(info.value)


def test_launch_says_where_the_training_config_comes_from(
    run_cli, write_campaign, selection, fake_campaign, monkeypatch
):
    """``run_get_node`` is replaced, as in tests/cli/test_launch.py (a real campaign runs elsewhere)."""
    import aiida.engine

    node = fake_campaign()
    launched = []
    monkeypatch.setattr(aiida.engine, "run_get_node", lambda builder: (launched.append(builder), ({}, node))[1])
    result = run_cli("launch", write_campaign(model_selection=selection.pk))
    assert result.exit_code == 0, result.output
    assert f"committee training configuration chosen by ModelSelectionWorkChain<{selection.pk}>" in result.output
    assert launched[0].committee.config.uuid == selection.outputs.config.uuid
