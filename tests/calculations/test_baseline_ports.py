"""Delta-learning baselines through AiiDA: a bad baseline is refused at submit time by the ``config`` ports of
``annpot.train`` and the committee work chain, before any node is stored; a good one trains end to end."""

from __future__ import annotations

import re

import numpy as np
import pytest
from aiida.engine import run, run_get_node
from aiida.orm import Dict, Int, Node, ProcessNode, QueryBuilder
from ase.build import bulk

from aiida_annpot.calculations.train import AnnTrainCalculation
from aiida_annpot.core.baselines import make_baseline
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.modelfile import load_potential, read_metadata
from aiida_annpot.data import AtomisticDataset
from aiida_annpot.workflows.committee import CommitteeTrainingWorkChain
from tests.submission import copy_dicts, validation_error

ZBL = {"name": "zbl", "parameters": {"inner": 1.0, "outer": 3.0}}
BAD_BASELINES = [
    (
        {"name": "nonexistent"},
        ("unknown baseline 'nonexistent'", "zbl, lj, morse, emt", "package.module.ClassName", "invalid TrainingConfig"),
    ),
    (
        {"name": "zbl", "parameters": {"outr": 2.0}},
        ("baseline 'zbl' does not take parameter(s) outr", "invalid TrainingConfig"),
    ),
    # an import path would be imported by the daemon and on the cluster, where no one trusted it
    (
        {"name": "ase.calculators.gulp.GULP", "parameters": {"command": "touch marker"}},
        (
            "baseline.name 'ase.calculators.gulp.GULP' is an import path",
            "registered baselines only",
            "aiida_annpot.baselines",
        ),
    ),
]


@pytest.fixture(scope="module")
def dataset(aiida_profile, emt_frames):
    return AtomisticDataset.from_frames(emt_frames(n=6, seed=7)).store()


@pytest.fixture
def train_inputs(annpot_code, dataset, training_settings):
    return {"code": annpot_code, "dataset": dataset, "config": Dict(training_settings(baseline=ZBL))}


@pytest.fixture
def committee_inputs(annpot_code, dataset, training_settings):
    return {
        "dataset": dataset,
        "config": Dict(training_settings(baseline=ZBL)),
        "committee_size": Int(2),
        "train": {"train": {"code": annpot_code}},
    }


def counts() -> tuple[int, int]:
    return QueryBuilder().append(ProcessNode).count(), QueryBuilder().append(Node).count()


@pytest.mark.parametrize("process_class", [AnnTrainCalculation, CommitteeTrainingWorkChain])
def test_valid_baselines_pass(process_class, train_inputs, committee_inputs, training_settings):
    inputs = train_inputs if process_class is AnnTrainCalculation else committee_inputs
    for baseline in (
        ZBL,
        {"name": "lj", "parameters": {"sigma": 2.3}},
        {"name": "ase.calculators.emt.EMT"},
    ):  # built-ins
        assert validation_error(process_class, {**inputs, "config": Dict(training_settings(baseline=baseline))}) is None


@pytest.mark.parametrize(("baseline", "fragments"), BAD_BASELINES)
@pytest.mark.parametrize("process_class", [AnnTrainCalculation, CommitteeTrainingWorkChain])
def test_a_bad_baseline_is_refused_at_submit_time(
    process_class, baseline, fragments, train_inputs, committee_inputs, training_settings
):
    inputs = train_inputs if process_class is AnnTrainCalculation else committee_inputs
    config = Dict(training_settings(baseline=baseline))
    message = validation_error(process_class, {**inputs, "config": config})
    assert message is not None and "port 'inputs.config'" in message, message
    for fragment in ("baseline", *fragments):
        assert fragment in message, message
    builder = process_class.get_builder()
    with pytest.raises(ValueError, match=re.escape(fragments[0])):
        builder.config = config  # the builder refuses it on assignment already
    before = counts()
    with pytest.raises(ValueError, match="baseline"):
        run(process_class, **copy_dicts({**inputs, "config": config}))
    assert counts() == before and not config.is_stored  # no process, no node at all


def test_delta_training_through_aiida(annpot_code, dataset, training_settings, tmp_path):
    """``annpot train`` with a ZBL baseline on the local computer: the potential node's calculator adds it back."""
    config = training_settings(baseline=ZBL)
    results, node = run_get_node(AnnTrainCalculation, code=annpot_code, dataset=dataset, config=Dict(config))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    (path,) = results["potential"].export(tmp_path)
    assert read_metadata(path)["baseline"] == ZBL
    assert results["potential"].base.attributes.get("baseline") == ZBL  # queryable: delta models can be found
    atoms = bulk("Cu", "fcc", a=3.58, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=2)
    network_only = load_potential(path)
    network_only.baseline_config = None
    totals, parts = atoms.copy(), [atoms.copy(), atoms.copy()]
    totals.calc = results["potential"].calculator()
    parts[0].calc, parts[1].calc = AnnCalculator(network_only), make_baseline(ZBL)
    assert abs(parts[1].get_potential_energy()) > 0.5  # the baseline matters for this structure
    assert totals.get_potential_energy() == pytest.approx(sum(p.get_potential_energy() for p in parts), abs=1e-9)
    np.testing.assert_allclose(totals.get_forces(), parts[0].get_forces() + parts[1].get_forces(), atol=1e-9)
    np.testing.assert_allclose(totals.get_stress(), parts[0].get_stress() + parts[1].get_stress(), atol=1e-9)
    assert results["metrics"]["validation"]["energy_rmse"] == pytest.approx(
        read_metadata(path)["metrics"]["validation"]["energy_rmse"]
    )
