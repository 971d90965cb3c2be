"""The quick start's campaign exactly as ``make campaign`` runs it (the fast protocol, no overrides, the 8-atom Si
cell, real pw.x) must converge and give a potential that meets the targets on its own independent test set.

About 15 minutes on 2 cores: marked ``quickstart`` (and ``slow``) and left out of the default run; ``make
test-quickstart`` runs it.
"""

from __future__ import annotations

import pytest
from aiida.engine import run_get_node

from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

pytestmark = [pytest.mark.slow, pytest.mark.quickstart]


@pytest.fixture(scope="module")
def quick_start(pw_code, annpot_code, si_pseudo_family, si_cell):
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        pw_code, annpot_code, {"si": si_cell()}, si_pseudo_family, protocol="fast"
    )
    return run_get_node(builder)


def test_quick_start_converges(quick_start):
    _, node = quick_start
    assert node.exit_status == 0, node.exit_message
    rows = node.outputs.iterations.get_list()
    assert rows[-1]["converged"] and not rows[-1]["unmet"]
    assert len(rows) >= len(node.inputs.stage_schedule.get_list())


def test_quick_start_potential_meets_the_targets_on_its_test_set(quick_start):
    """Energy and force RMSE, bulk modulus and vacancy formation energy against pw.x on frames never trained on."""
    outputs, _ = quick_start
    score = outputs["test_score"].get_dict()
    figures = score["headline"]
    assert figures["energy_rmse"] <= 5.0  # meV/atom
    assert figures["force_rmse"] <= 0.15  # eV/Å
    assert abs(figures["bulk_modulus_error"]) <= 0.10  # relative to the DFT B0 of the same series
    assert abs(figures["vacancy_error"]) <= 0.3  # eV, unrelaxed, in a larger cell than any vacancy trained on
    properties = score["properties"]["si"]
    assert properties["equation_of_state"]["points"] == 8
    assert properties["vacancy"]["atoms_perfect_cell"] == 64, "the isolated vacancy, in a cell never trained on"
    assert score["excluded_trained"] == 0, "the test set shares no structure with the training set"
    assert {"volume", "anisotropic", "vacancy"} <= set(score["kinds"])
