"""DFT labels that fail: excluded with their reason, the campaign goes on; no usable label at all stops it clearly.

The failing label is real: a Si cell expanded to 1.6 times the lattice constant is nearly metallic and needs about
24 SCF iterations with these settings, so ``electron_maxstep: 16`` makes pw.x stop unconverged, while the ideal
and slightly rattled (0.03 Å) cells converge in about 10.
"""

from __future__ import annotations

import pytest
from aiida.engine import run_get_node
from aiida.orm import Int

from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

from ..small_campaign import NO_TEST_SET

pytestmark = pytest.mark.slow

#: pw.x settings under which the expanded cell cannot converge; one attempt (no restart by PwBaseWorkChain).
HARSH_DFT = {"reference": {"pw_parameters": {"ELECTRONS": {"electron_maxstep": 16}}}}


def _builder(pw_code, annpot_code, family, structures, generation):
    overrides = {**HARSH_DFT, **NO_TEST_SET, "max_iterations": 1, "generation": generation}
    builder = ActiveLearningWorkChain.get_builder_from_protocol(pw_code, annpot_code, structures, family,
                                                                protocol="fast", overrides=overrides)  # fmt: skip
    builder.reference.pw_base.max_iterations = Int(1)
    return builder


def _no_copies(**changes) -> dict:
    return {"volumes": 0, "isotropic_strains": 0, "anisotropic_strains": 0, "rattles": 0, "rattle_amplitudes": [0.03],
            "vacancies": 0, **changes}  # fmt: skip


def test_failed_labels_are_excluded_with_their_reason_and_the_campaign_goes_on(
    pw_code, annpot_code, si_pseudo_family, si_cell
):
    structures = {"si": si_cell(), "wide": si_cell(scale=1.6)}
    builder = _builder(pw_code, annpot_code, si_pseudo_family, structures, _no_copies(rattles=2))
    outputs, node = run_get_node(builder)

    row = node.outputs.iterations.get_list()[0]
    assert row["labels_submitted"] == 6 and row["labels_added"] == 3 and row["labels_failed"] == 3
    assert set(row["failures"]) == {"wide_ideal", "wide_rattle030_000", "wide_rattle030_001"}
    for reason in row["failures"].values():
        assert "PwBaseWorkChain" in reason and "exit status" in reason
    reference = next(c for c in node.called if c.process_label == "ReferenceWorkChain")
    failed = reference.outputs.failed.get_dict()
    assert {entry["structure"] for entry in failed.values()} == {
        reference.inputs.structures[key].uuid for key in ("wide_ideal", "wide_rattle030_000", "wide_rattle030_001")
    }
    # the campaign went on: a committee was trained on the three good labels and explored
    assert outputs["dataset"].n_frames == 3
    assert outputs["potential"].committee_size == 4  # the fast protocol
    assert node.exit_status in (0, ActiveLearningWorkChain.exit_codes.WARNING_NOT_CONVERGED.status)
    assert any(c.process_label == "ExplorationWorkChain" for c in node.called)


def test_no_usable_label_stops_the_campaign_with_a_clear_error(pw_code, annpot_code, si_pseudo_family, si_cell):
    builder = _builder(pw_code, annpot_code, si_pseudo_family, {"wide": si_cell(scale=1.6)}, _no_copies(rattles=1))
    _, node = run_get_node(builder)

    assert node.exit_status == ActiveLearningWorkChain.exit_codes.ERROR_NO_USABLE_LABELS.status
    assert "no usable DFT label in iteration 1" in node.exit_message
    assert "none of the 2 structures" in node.exit_message
    assert not any(c.process_label == "CommitteeTrainingWorkChain" for c in node.called), "nothing trained on nothing"
    row = node.outputs.iterations.get_list()[0]
    assert row["labels_failed"] == 2 and "failed" in row
