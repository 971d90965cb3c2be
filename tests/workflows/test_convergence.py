"""The campaign's stopping rule and every exit code of ActiveLearningWorkChain, each from a real (tiny) campaign.

Every campaign here is the fast protocol on the 8-atom Si cell shrunk to seconds of work: the ideal cell and one
rattled copy to label with pw.x (plus one rattled test structure where a test set matters), a committee of two
members trained for 30 epochs and one short MD stage. The trust window decides what the committee's disagreement
means: 5–10 eV/Å calls every frame accurate, 1–2 µeV/Å every frame failed. Faults are real where that is cheap
(``/bin/false`` as the training, exploration or pw.x code) and injected with monkeypatch where it is not (a DFT
labelling that raises). AiiDA's caching lets the campaigns share identical pw.x, training and MD runs.
"""

from __future__ import annotations

import pytest
from aiida.engine import run_get_node
from aiida.manage.caching import enable_caching
from aiida.orm import Log

from aiida_annpot.tools.local_setup import ensure_code
from aiida_annpot.workflows.active_learning import ITERATIONS_EXTRA, ActiveLearningWorkChain
from aiida_annpot.workflows.protocols import merge
from aiida_annpot.workflows.reference import ReferenceWorkChain

from ..small_campaign import NO_TEST_SET

pytestmark = pytest.mark.slow

EXIT = ActiveLearningWorkChain.exit_codes

#: One short NVT stage: 20 steps at 300 K, a frame every 5.
STAGE = [{"temperature": 300, "steps": 20, "timestep": 1.0, "sample_interval": 5}]

#: What every campaign here shares: the ideal cell and one rattled copy to label, one rattled test structure and
#: energy and force targets any committee meets on it (the others need an E–V series or a vacancy), a committee of
#: two trained for 30 epochs, one start cell, a one-entry stage schedule, no validation targets.
SMALL = {
    "max_iterations": 2,
    "validation_targets": {},
    "generation": {"volumes": 0, "anisotropic_strains": 0, "rattles": 1, "rattle_amplitudes": [0.05], "vacancies": 0},
    "test_set": {
        "generation": {
            "include_ideal": False,
            "volumes": 0,
            "anisotropic_strains": 0,
            "rattles": 1,
            "rattle_amplitudes": [0.07],
            "vacancies": 0,
        },
        "md_frames": 0,
    },
    "test_targets": {
        "energy_rmse": 1e6,
        "force_rmse": 1e6,
        "volume_error": None,
        "bulk_modulus_error": None,
        "vacancy_error": None,
    },
    "committee": {"committee_size": 2, "config": {"max_epochs": 30}},
    "exploration": {"start_supercells": [[1, 1, 1]], "start_vacancies": False, "stage_schedule": [STAGE]},
}

#: Every frame accurate: two members do not disagree by 5 eV/Å on a 300 K frame.
WIDE_WINDOW = {"exploration": {"config": {"selection": {"trust_lo": 5.0, "trust_hi": 10.0}}}}
#: Every frame failed: no two members agree to 1 µeV/Å.
NARROW_WINDOW = {"exploration": {"config": {"selection": {"trust_lo": 1e-6, "trust_hi": 2e-6}}}}
#: A schedule of two entries: iteration 2 is the first to explore under the last entry.
TWO_ENTRIES = {"exploration": {"stage_schedule": [STAGE, STAGE]}}
#: One frame of the final committee's MD joins the test set at the end.
MD_TEST_FRAME = {"test_set": {"md_frames": 1}}
#: An energy target no committee meets.
STRICT_ENERGY = {"test_targets": {"energy_rmse": 1e-6}}
#: Labels of the generated training structures.
TRAINING_LABELS = {"si_ideal", "si_rattle050_000"}


def small_overrides(*changes: dict) -> dict:
    """:data:`SMALL` with each of ``changes`` merged in, later ones last."""
    overrides = SMALL
    for change in changes:
        overrides = merge(overrides, change)
    return overrides


@pytest.fixture(scope="module", autouse=True)
def _reuse_identical_calculations():
    """A calculation with the inputs of a finished one (same structure and pw.x settings, same dataset and training
    config, same potential and MD) reuses its outputs: the campaigns here share most of their work."""
    with enable_caching():
        yield


@pytest.fixture(scope="module")
def campaign(pw_code, annpot_code, si_pseudo_family, si_cell):
    """Factory ``campaign(*changes, pw=None) -> builder``: the fast protocol with :func:`small_overrides` on the
    8-atom Si cell (``pw``: another pw.x code)."""

    def build(*changes: dict, pw=None):
        return ActiveLearningWorkChain.get_builder_from_protocol(
            pw or pw_code,
            annpot_code,
            {"si": si_cell()},
            si_pseudo_family,
            protocol="fast",
            overrides=small_overrides(*changes),
        )

    return build


@pytest.fixture(scope="module")
def false_code(local_computer):
    """Factory ``false_code(plugin) -> InstalledCode``: ``/bin/false`` (exits 1, writes nothing) as ``plugin``."""
    return lambda plugin: ensure_code(f"false-{plugin}", local_computer, "/bin/false", plugin)


def rows_of(node) -> list[dict]:
    """The iteration rows of a finished campaign, numbered from 1; the live extra ends equal to the output."""
    rows = node.outputs.iterations.get_list()
    assert node.base.extras.get(ITERATIONS_EXTRA) == rows
    assert [row["iteration"] for row in rows] == list(range(1, len(rows) + 1))
    return rows


def called(node, link_label: str):
    """The process ``node`` called under ``link_label``."""
    return node.base.links.get_outgoing(link_label_filter=link_label).one().node


def inject_reference_fault(monkeypatch, test_set: bool) -> None:
    """The ReferenceWorkChain that labels the test set (``test_set``) or the training structures raises before any
    DFT runs. Patched where its first step looks up the labeller: a step method itself cannot be patched, since the
    spec's outline holds the functions it was built with."""
    original = ReferenceWorkChain._labeller

    def labeller(self):
        if all(key.startswith("test_") for key in self.inputs.structures) == test_set:
            raise RuntimeError("injected DFT fault")
        return original(self)

    monkeypatch.setattr(ReferenceWorkChain, "_labeller", labeller)


# --- the stopping rule ----------------------------------------------------------------------------------------------


def test_converges_when_every_criterion_is_met(campaign):
    """The final committee's MD frame joins the test set at the end; the loose targets hold on it too."""
    outputs, node = run_get_node(campaign(WIDE_WINDOW, MD_TEST_FRAME))
    assert node.exit_status == 0, node.exit_message
    assert node.exit_message is None
    (row,) = rows_of(node)
    assert row["converged"] is True and row["unmet"] == []
    assert row["last_stage_ratios"]["accurate"] == 1.0 and row["selected"] == 0
    assert {"potential", "dataset", "test_dataset", "test_score", "test_predictions"} <= set(outputs)
    assert outputs["dataset"].n_frames == row["dataset_frames"] == 2
    assert outputs["test_dataset"].n_frames == row["test"]["frames"] == 2
    assert row["test"]["kinds"]["md"]["frames"] == row["test"]["kinds"]["rattle070"]["frames"] == 1
    assert row["test"]["energy_rmse"] == outputs["test_score"]["headline"]["energy_rmse"]
    assert called(node, "test_final").outputs.score.uuid == outputs["test_score"].uuid


def test_md_test_frames_missing_a_target_revoke_convergence(campaign, monkeypatch):
    """The campaign converges on its generated test set, then misses a target once the final committee's MD frame
    is in (simulated: the final check holds the test set to an energy target no committee meets): exit 410."""
    from aiida_annpot.workflows import campaign_test_set

    final_check = campaign_test_set.targets_unmet
    monkeypatch.setattr(
        campaign_test_set, "targets_unmet", lambda figures, _: final_check(figures, {"energy_rmse": 1e-6})
    )
    outputs, node = run_get_node(campaign(WIDE_WINDOW, MD_TEST_FRAME))
    assert node.exit_status == EXIT.WARNING_NOT_CONVERGED.status
    (row,) = rows_of(node)
    energy = outputs["test_score"]["headline"]["energy_rmse"]
    assert row["converged"] is False
    assert row["unmet"] == [f"with the MD test frames: test energy_rmse {energy:.4g} > 1e-06"]
    assert node.exit_message == f"not converged after 1 iteration(s): {row['unmet'][0]}; outputs are the last ones"
    assert row["test"]["kinds"]["md"]["frames"] == 1 and row["test"]["energy_rmse"] == energy
    assert {"potential", "dataset", "test_dataset", "test_score", "test_predictions"} <= set(outputs)


@pytest.fixture(scope="module")
def blocked(campaign):
    """The converging campaign with a two-entry schedule and an energy target no committee meets, stopped after
    iteration 1: (outputs, node)."""
    return run_get_node(campaign(WIDE_WINDOW, TWO_ENTRIES, STRICT_ENERGY, {"max_iterations": 1}))


def test_not_converged_after_max_iterations(blocked):
    outputs, node = blocked
    assert node.exit_status == EXIT.WARNING_NOT_CONVERGED.status
    (row,) = rows_of(node)
    assert node.exit_message == (
        f"not converged after 1 iteration(s): {'; '.join(row['unmet'])}; outputs are the last ones"
    )
    assert row["converged"] is False and len(row["unmet"]) == 2
    assert row["last_stage_ratios"]["accurate"] == 1.0  # the committee agrees: the other criteria block
    assert {"potential", "dataset", "test_dataset", "test_score", "test_predictions"} <= set(outputs)


def test_schedule_not_complete_blocks_convergence(blocked):
    """Iteration 1 of a two-entry schedule has not explored under the last entry's conditions yet."""
    _, node = blocked
    (row,) = rows_of(node)
    assert row["unmet"][0] == "stage schedule not complete (iteration 1 of 2)"
    assert "stage schedule not complete (iteration 1 of 2)" in node.exit_message


def test_unmet_test_target_blocks_convergence(blocked):
    outputs, node = blocked
    (row,) = rows_of(node)
    energy = outputs["test_score"]["headline"]["energy_rmse"]
    assert row["test"]["energy_rmse"] == energy > 1e-6
    assert row["unmet"][1:] == [f"test energy_rmse {energy:.4g} > 1e-06"]
    assert f"test energy_rmse {energy:.4g}" in node.exit_message


def test_runs_to_the_end_of_the_stage_schedule_although_everything_is_accurate_early(campaign):
    """Iteration 1 selects nothing but has not explored the last schedule entry: iteration 2 explores it with the
    same committee (no DFT, no training) and converges."""
    outputs, node = run_get_node(campaign(WIDE_WINDOW, TWO_ENTRIES, NO_TEST_SET, {"max_iterations": 3}))
    rows = rows_of(node)
    assert rows[0]["unmet"] == ["stage schedule not complete (iteration 1 of 2)"] and rows[0]["selected"] == 0
    assert rows[1]["labels_added"] == 0 and rows[1]["validation"] == rows[0]["validation"]
    steps = {link.link_label for link in node.base.links.get_outgoing().all()}
    assert {"reference_01", "committee_01", "exploration_01", "exploration_02"} <= steps
    assert not steps & {"reference_02", "committee_02"}
    assert node.exit_status == 0, node.exit_message
    assert len(rows) == 2 and rows[1]["converged"] is True and rows[1]["unmet"] == []
    assert {"potential", "dataset"} <= set(outputs)


def test_nothing_to_label_stops_before_max_iterations(campaign):
    """Every frame failed, so nothing is selected: iteration 1 is the last although two are allowed."""
    outputs, node = run_get_node(campaign(NARROW_WINDOW, NO_TEST_SET))
    assert node.exit_status == EXIT.WARNING_NOTHING_TO_LABEL.status
    assert node.exit_message.startswith(
        "iteration 1 selected no new structure but is not converged (last stage accurate 0.000 < 0.9)"
    )
    (row,) = rows_of(node)
    assert row["selected"] == 0 and row["last_stage_ratios"]["failed"] == 1.0
    assert row["converged"] is False and row["unmet"] == ["last stage accurate 0.000 < 0.9"]
    assert {"potential", "dataset"} <= set(outputs)


# --- failures: each exit code, and the outputs that survive it -----------------------------------------------------


def test_committee_failure_keeps_the_labels(campaign, false_code):
    builder = campaign(NO_TEST_SET)
    builder.committee.train.train.code = false_code("annpot.train")
    outputs, node = run_get_node(builder)
    assert node.exit_status == EXIT.ERROR_COMMITTEE_FAILED.status
    committee = called(node, "committee_01")
    assert node.exit_message.startswith(f"committee training failed: CommitteeTrainingWorkChain<{committee.pk}>")
    assert "2 of 2 committee members failed to train" in node.exit_message
    (row,) = rows_of(node)
    assert row["failed"] == node.exit_message and row["labels_added"] == 2
    assert outputs["dataset"].n_frames == 2  # the DFT labels are not lost
    assert "potential" not in outputs


def test_exploration_failure_keeps_the_potential(campaign, false_code):
    builder = campaign(NO_TEST_SET)
    builder.exploration.explore.explore.code = false_code("annpot.explore")
    outputs, node = run_get_node(builder)
    assert node.exit_status == EXIT.ERROR_EXPLORATION_FAILED.status
    exploration = called(node, "exploration_01")
    assert node.exit_message.startswith(f"exploration failed: ExplorationWorkChain<{exploration.pk}>")
    assert "1 exploration job(s) failed" in node.exit_message
    (row,) = rows_of(node)
    assert row["failed"] == node.exit_message and "validation" in row
    assert outputs["potential"].uuid == called(node, "committee_01").outputs.potential.uuid
    assert outputs["dataset"].n_frames == 2


def test_failed_labelling_fails_the_campaign(campaign, monkeypatch):
    inject_reference_fault(monkeypatch, test_set=False)
    outputs, node = run_get_node(campaign(NO_TEST_SET))
    assert node.exit_status == EXIT.ERROR_REFERENCE_FAILED.status
    reference = called(node, "reference_01")
    assert reference.is_excepted and "injected DFT fault" in reference.exception
    assert node.exit_message == (
        f"the DFT labelling failed: ReferenceWorkChain<{reference.pk}> excepted: RuntimeError: injected DFT fault"
    )
    (row,) = rows_of(node)
    assert row["failed"] == node.exit_message
    assert set(outputs) == {"iterations"}
    assert not any(c.process_label == "PwCalculation" for c in node.called_descendants)


def test_a_campaign_whose_training_labels_fail_first_keeps_its_test_labels(campaign, monkeypatch):
    """The test set is labelled in the background and awaited only before the first committee is scored. When the
    training labels fail first, the campaign waits for the test labels, keeps them, then stops with the training
    labels' failure: nothing is left running under a terminated campaign."""
    inject_reference_fault(monkeypatch, test_set=False)
    outputs, node = run_get_node(campaign())
    assert node.exit_status == EXIT.ERROR_REFERENCE_FAILED.status
    assert "injected DFT fault" in node.exit_message
    test_reference = called(node, "reference_test")
    assert test_reference.is_finished_ok
    assert outputs["test_dataset"].uuid == test_reference.outputs.dataset.uuid
    assert not any(c.process_label == "CommitteeTrainingWorkChain" for c in node.called)
    assert any("waiting for the test-set labels" in log.message for log in Log.collection.get_logs_for(node))


def test_failed_test_set_labelling_fails_the_campaign(campaign, monkeypatch):
    inject_reference_fault(monkeypatch, test_set=True)
    outputs, node = run_get_node(campaign())
    assert node.exit_status == EXIT.ERROR_TEST_SET_FAILED.status
    test_reference = called(node, "reference_test")
    assert test_reference.is_excepted and "injected DFT fault" in test_reference.exception
    assert called(node, "reference_01").is_finished_ok
    assert node.exit_message.startswith(f"no usable test-set label: ReferenceWorkChain<{test_reference.pk}>")
    (row,) = rows_of(node)
    assert row["failed"] == node.exit_message
    assert "test_dataset" not in outputs and "potential" not in outputs
    assert outputs["dataset"].uuid == called(node, "reference_01").outputs.dataset.uuid, "training labels kept"


def test_no_usable_label_fails_the_campaign(campaign, false_code):
    outputs, node = run_get_node(campaign(NO_TEST_SET, pw=false_code("quantumespresso.pw")))
    assert node.exit_status == EXIT.ERROR_NO_USABLE_LABELS.status
    assert node.exit_message.startswith("no usable DFT label in iteration 1: none of the 2 structures")
    (row,) = rows_of(node)
    assert row["failed"] == node.exit_message
    assert row["labels_failed"] == 2 and set(row["failures"]) == TRAINING_LABELS
    assert set(outputs) == {"iterations"}
