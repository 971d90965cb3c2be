"""Restart work chains around real ``annpot`` runs: wall-time resumes (training and exploration) and divergence."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from aiida.engine import run_get_node
from aiida.orm import Dict, Int, Log, StructureData
from ase.build import bulk

from aiida_annpot.calculations.explore import AnnExploreCalculation
from aiida_annpot.calculations.train import AnnTrainCalculation
from aiida_annpot.common.config import ExplorationConfig
from aiida_annpot.core.exploration import run_exploration
from aiida_annpot.core.explored import read_explored_frames
from aiida_annpot.data import AnnPotential, AtomisticDataset
from aiida_annpot.workflows.explore_base import AnnExploreBaseWorkChain
from aiida_annpot.workflows.train_base import AnnTrainBaseWorkChain

#: A budget every run overspends after its first epoch or recorded frame: each run advances one unit, then stops.
TINY_WALL_TIME = 1e-6


@pytest.fixture(scope="module")
def dataset(emt_frames):
    return AtomisticDataset.from_frames(emt_frames(n=8, seed=11)).store()


def train_builder(code, dataset, settings: dict, max_iterations: int | None = None):
    builder = AnnTrainBaseWorkChain.get_builder()
    builder.train.code = code
    builder.train.dataset = dataset
    builder.train.config = Dict(settings)
    if max_iterations is not None:
        builder.max_iterations = Int(max_iterations)
    return builder


def calculations(node, process_class) -> list:
    """The work chain's calculations in the order they ran."""
    children = [child for child in node.called if child.process_class is process_class]
    return sorted(children, key=lambda child: child.ctime)


def test_training_resumes_from_its_checkpoint_after_the_wall_time(annpot_code, dataset, training_settings):
    settings = training_settings(max_epochs=2, wall_time=TINY_WALL_TIME)
    results, node = run_get_node(train_builder(annpot_code, dataset, settings))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    runs = calculations(node, AnnTrainCalculation)
    assert len(runs) == 2
    first, second = runs
    assert first.exit_status == AnnTrainCalculation.exit_codes.ERROR_WALL_TIME_REACHED.status
    assert "checkpoint.pt" in first.outputs.remote_folder.listdir()
    assert "parent_folder" not in first.inputs
    assert second.inputs.parent_folder.uuid == first.outputs.remote_folder.uuid
    assert second.is_finished_ok
    log = second.outputs.retrieved.base.repository.get_object_content("annpot.log")
    assert "resumed from checkpoint.pt at epoch 1" in log
    assert "epoch    1" not in log and "epoch    2" in log  # only the missing epoch was trained

    # the work chain passes on the resumed run's outputs; its curve holds both epochs
    assert results["potential"].uuid == second.outputs.potential.uuid
    assert results["metrics"]["epochs"] == 2
    np.testing.assert_array_equal(results["learning_curve"].get_array("epoch"), [1, 2])


@pytest.mark.slow
def test_divergence_lowers_the_learning_rate_on_every_restart(annpot_code, dataset, training_settings):
    """An absurd learning rate diverges every time: three runs, each at 0.3 times the previous rate, then the work
    chain gives up with ERROR_MAXIMUM_ITERATIONS_EXCEEDED."""
    settings = training_settings(learning_rate=1e6, max_epochs=3)
    results, node = run_get_node(train_builder(annpot_code, dataset, settings, max_iterations=3))
    assert node.exit_status == AnnTrainBaseWorkChain.exit_codes.ERROR_MAXIMUM_ITERATIONS_EXCEEDED.status
    assert "potential" not in results

    runs = calculations(node, AnnTrainCalculation)
    assert len(runs) == 3
    for run in runs:
        assert run.exit_status == AnnTrainCalculation.exit_codes.ERROR_TRAINING_DIVERGED.status
        assert "training diverged" in run.exit_message
    rates = [run.inputs.config["learning_rate"] for run in runs]
    assert rates == pytest.approx([1e6, 3e5, 9e4])
    assert all(later < earlier for earlier, later in itertools.pairwise(rates))
    for run, rate in zip(runs, rates, strict=True):
        assert run.inputs.config["min_learning_rate"] <= rate
        assert f"learning rate {rate:.3g}" in run.exit_message  # the engine ran at the lowered rate
    for previous, run in itertools.pairwise(runs):
        assert run.inputs.parent_folder.uuid == previous.outputs.remote_folder.uuid
    # every other setting is passed on unchanged
    unchanged = {key: value for key, value in settings.items() if key not in ("learning_rate", "min_learning_rate")}
    assert all({k: run.inputs.config[k] for k in unchanged} == unchanged for run in runs)


# --- exploration ----------------------------------------------------------------------------------------------------

STAGES = [{"temperature": 400.0, "steps": 10, "sample_interval": 5, "timestep": 1.0}]


def test_exploration_resumes_from_its_last_frame_after_the_wall_time(annpot_code, trained_model, tmp_path):
    potential = AnnPotential.from_files([trained_model, trained_model]).store()
    atoms = bulk("Cu", "fcc", a=3.62, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.03, seed=4)
    builder = AnnExploreBaseWorkChain.get_builder()
    builder.explore.code = annpot_code
    builder.explore.potential = potential
    builder.explore.structures = {"cu": StructureData(ase=atoms)}
    builder.explore.config = Dict({"stages": STAGES, "wall_time": TINY_WALL_TIME})
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)

    runs = calculations(node, AnnExploreCalculation)
    assert len(runs) == 2
    first, second = runs
    assert first.exit_status == AnnExploreCalculation.exit_codes.ERROR_WALL_TIME_REACHED.status
    assert {"frames.extxyz", "progress.json"} <= set(first.outputs.remote_folder.listdir())
    assert second.inputs.parent_folder.uuid == first.outputs.remote_folder.uuid
    assert second.is_finished_ok
    assert results["frames"].uuid == second.outputs.frames.uuid
    assert "reference_fingerprints" not in results

    resumed_path = tmp_path / "resumed.extxyz"
    resumed_path.write_bytes(results["frames"].get_content(mode="rb"))
    resumed, _ = read_explored_frames(resumed_path)

    # the same exploration without a budget, run by the engine directly
    atoms.write(tmp_path / "start.extxyz", format="extxyz")
    potential.export(tmp_path / "models")
    config = ExplorationConfig(
        models=[str(p) for p in sorted((tmp_path / "models").iterdir())],
        structures=str(tmp_path / "start.extxyz"),
        stages=STAGES,
    )
    summary = run_exploration(config, tmp_path / "uninterrupted", log=lambda line: None)
    assert summary["status"] == "finished"
    uninterrupted, _ = read_explored_frames(tmp_path / "uninterrupted" / "frames.extxyz")

    assert len(resumed) == len(uninterrupted) == 2
    assert [f.info["step"] for f in resumed] == [f.info["step"] for f in uninterrupted] == [5, 10]
    # the frame recorded before the stop is the uninterrupted run's (same seeded MD)
    np.testing.assert_allclose(resumed[0].positions, uninterrupted[0].positions, atol=1e-5)
    assert results["summary"]["frames"] == summary["frames"] == 2
    assert results["summary"]["trajectories"] == [{"structure": 0, "stage": 0, "reason": "completed", "steps": 10}]


@pytest.fixture
def annpot_killed_once(local_computer, tmp_path):
    """An ``annpot`` code whose first run is killed with SIGKILL (as a node failure or the OOM killer would) as soon as
    it has written a checkpoint: no status file is left. Later runs are the real ``annpot``."""
    from aiida.orm import InstalledCode

    from aiida_annpot.tools.local_setup import annpot_executable

    script = tmp_path / "annpot-killed-once"
    script.write_text(f"""#!/bin/bash
if [ ! -e {tmp_path}/killed ]; then
    touch {tmp_path}/killed
    {annpot_executable()} "$@" &
    for attempt in $(seq 1 1200); do [ -e checkpoint.pt ] && break; sleep 0.05; done
    kill -9 $!
    exit 137
fi
exec {annpot_executable()} "$@"
""")
    script.chmod(0o755)
    code = InstalledCode(
        computer=local_computer,
        filepath_executable=str(script),
        label=f"killed-{tmp_path.name}",
        default_calc_job_plugin="annpot.train",
    )
    return code.store()


def test_a_killed_training_is_rerun_from_its_checkpoint(annpot_killed_once, dataset, training_settings):
    settings = training_settings(max_epochs=40, checkpoint_interval=1, early_stopping_patience=1000)
    results, node = run_get_node(train_builder(annpot_killed_once, dataset, settings))
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    first, second = calculations(node, AnnTrainCalculation)
    assert first.exit_status == AnnTrainCalculation.exit_codes.ERROR_MISSING_STATUS.status
    assert second.inputs.parent_folder.uuid == first.outputs.remote_folder.uuid
    log = second.outputs.retrieved.base.repository.get_object_content("annpot.log")
    assert "resumed from checkpoint.pt at epoch" in log
    assert results["metrics"]["epochs"] == 40
    reports = [entry.message for entry in Log.collection.get_logs_for(node)]
    assert any("exit status 300" in message and "resuming from the state it saved" in message for message in reports)


def test_a_training_stopped_at_its_wall_time_leaves_its_best_model(annpot_code, dataset, training_settings):
    from aiida.engine import run_get_node as run_calculation

    settings = training_settings(max_epochs=3, wall_time=TINY_WALL_TIME)
    results, node = run_calculation(AnnTrainCalculation, code=annpot_code, dataset=dataset, config=Dict(settings))
    assert node.exit_status == AnnTrainCalculation.exit_codes.ERROR_WALL_TIME_REACHED.status
    assert results["metrics"]["stopped"] == "wall_time" and results["metrics"]["epochs"] == 1
    calculator = results["potential"].calculator()
    frame = dataset.to_frames()[0]
    frame.calc = calculator
    assert np.isfinite(frame.get_potential_energy())
