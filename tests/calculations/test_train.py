"""AnnTrainCalculation end to end: real ``annpot train`` runs on the local computer, and submit-time validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from aiida.engine import run_get_node
from aiida.orm import ArrayData, Dict, Int
from ase.build import bulk
from ase.calculators.emt import EMT

from aiida_annpot.calculations.train import AnnTrainCalculation
from aiida_annpot.common.config import TrainingConfig
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.dataset import dataset_hash, read_frames
from aiida_annpot.core.training import Trainer
from aiida_annpot.data import AnnPotential, AtomisticDataset

N_FRAMES = 10


@pytest.fixture(scope="module")
def dataset(emt_frames):
    """Ten labelled 4-atom Cu frames (one of them the seeded validation split)."""
    return AtomisticDataset.from_frames(emt_frames(n=N_FRAMES, seed=3)).store()


def train_builder(code, dataset, settings: dict, **inputs):
    builder = AnnTrainCalculation.get_builder()
    builder.code = code
    builder.dataset = dataset
    builder.config = Dict(settings)
    for name, value in inputs.items():
        setattr(builder, name, value)
    return builder


def probe(rattle_seed: int = 7):
    """A rattled Cu supercell the models have not seen."""
    atoms = bulk("Cu", "fcc", a=3.63, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=rattle_seed)
    return atoms


def energy_and_forces(calculator, atoms) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy(), atoms.get_forces()


@pytest.fixture(scope="module")
def trained(annpot_code, dataset, training_settings):
    """One finished quick training: (results, node)."""
    return run_get_node(train_builder(annpot_code, dataset, training_settings()))


# --- a finished run -------------------------------------------------------------------------------------------------


def test_finished_training_outputs(trained, training_settings, tmp_path):
    results, node = trained
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert set(results) == {"potential", "metrics", "learning_curve", "remote_folder", "retrieved"}

    potential = results["potential"]
    assert isinstance(potential, AnnPotential) and potential.is_stored
    assert potential.committee_size == 1 and potential.elements == ["Cu"]
    assert potential.base.attributes.get("network")["hidden"] == [8]
    assert potential.base.attributes.get("descriptor")["radial_order"] == 4

    metrics = results["metrics"].get_dict()
    validation = metrics["validation"]
    assert set(validation) >= {"energy_rmse", "energy_mae", "force_rmse", "force_mae", "stress_rmse"}
    assert all(np.isfinite(validation[key]) and validation[key] > 0 for key in ("energy_rmse", "force_rmse"))
    assert metrics["train"]["n_structures"] + validation["n_structures"] == N_FRAMES
    assert metrics["epochs"] == training_settings()["max_epochs"]
    # the member's metrics attribute is what the engine recorded in the model file
    member_metrics = potential.base.attributes.get("metrics")
    assert len(member_metrics) == 1
    assert member_metrics[0]["validation"]["force_rmse"] == pytest.approx(validation["force_rmse"])
    assert member_metrics[0]["epochs"] == metrics["epochs"]
    # the model records the hash of the data it was trained on: the dataset node's content hash
    written = read_frames(node.inputs.dataset.write_extxyz(tmp_path / "dataset.extxyz"))
    recorded = potential.base.attributes.get("dataset_hash")
    assert recorded == [dataset_hash(written)] == [node.inputs.dataset.content_hash]

    curve = results["learning_curve"]
    assert isinstance(curve, ArrayData)
    assert {"epoch", "learning_rate", "train_loss", "validation_loss", "validation_force_rmse"} <= set(
        curve.get_arraynames()
    )
    np.testing.assert_array_equal(curve.get_array("epoch"), np.arange(1, metrics["epochs"] + 1))
    for name in curve.get_arraynames():
        assert curve.get_array(name).shape == (metrics["epochs"],)
    # the reported validation errors are those of the best epoch of the curve
    best = int(np.argmin(curve.get_array("validation_loss")))
    assert curve.get_array("validation_force_rmse")[best] == pytest.approx(validation["force_rmse"])

    assert results["metrics"].uuid == node.outputs.metrics.uuid  # default output node
    assert {"annpot_status.json", "annpot.log", "model.safetensors"} <= set(
        node.outputs.retrieved.base.repository.list_object_names()
    )


def test_stored_potential_reproduces_the_retrieved_model(trained, tmp_path):
    results, node = trained
    model = tmp_path / "model.safetensors"
    model.write_bytes(node.outputs.retrieved.base.repository.get_object_content("model.safetensors", mode="rb"))
    assert results["potential"].member_bytes(0) == model.read_bytes()

    atoms = probe()
    energy, forces = energy_and_forces(results["potential"].calculator(), atoms)
    reference_energy, reference_forces = energy_and_forces(AnnCalculator(str(model)), atoms)
    assert np.isfinite(energy) and np.isfinite(forces).all()
    assert energy == pytest.approx(reference_energy, abs=1e-12)
    np.testing.assert_allclose(forces, reference_forces, atol=1e-12)
    # on the scale of the labels (reference energies fitted to EMT): within 2 eV of EMT for 8 Cu atoms
    assert abs(energy - energy_and_forces(EMT(), atoms)[0]) < 2.0


def test_warm_start_begins_from_the_parent_weights(annpot_code, dataset, trained, training_settings, tmp_path):
    """One epoch at a negligible learning rate leaves the parent's model (weights and standardisation) unchanged."""
    parent = trained[0]["potential"]
    settings = training_settings(max_epochs=1, learning_rate=1e-12, min_learning_rate=1e-12, seed=5)
    builder = train_builder(annpot_code, dataset, settings, parent_potential=parent, parent_member=Int(0))
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert results["metrics"]["epochs"] == 1

    atoms = probe()
    child_energy, child_forces = energy_and_forces(results["potential"].calculator(), atoms)
    parent_energy, parent_forces = energy_and_forces(parent.calculator(), atoms)
    assert child_energy == pytest.approx(parent_energy, abs=1e-6)
    np.testing.assert_allclose(child_forces, parent_forces, atol=1e-6)
    with node.base.repository.open("train.yaml") as handle:
        written = yaml.safe_load(handle)
    assert written["init_model"] == "init_model.safetensors"
    assert node.base.repository.get_object_content("init_model.safetensors", mode="rb") == parent.member_bytes(0)

    # the closeness is the warm start's doing: the same settings from scratch give an untrained model far from it
    config = TrainingConfig(**settings, dataset=str(dataset.write_extxyz(tmp_path / "dataset.extxyz")))
    assert Trainer(config, tmp_path / "fresh", log=lambda line: None).run().status == "finished"
    fresh_energy, _ = energy_and_forces(AnnCalculator(str(tmp_path / "fresh" / "model.safetensors")), atoms)
    assert abs(fresh_energy - parent_energy) > 1e-3


# --- submit-time validation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"learning_rat": 0.01}, r"learning_rat: Extra inputs are not permitted"),
        ({"network": {"hidden": [8], "activaton": "tanh"}}, r"network\.activaton: Extra inputs are not permitted"),
        ({"dataset": "elsewhere.extxyz"}, r"do not set dataset: the calculation writes these files"),
        ({"init_model": "m.safetensors"}, r"do not set init_model"),
        ({"learning_rate": 1e-4, "min_learning_rate": 1e-2}, r"min_learning_rate \(0\.01\) exceeds learning_rate"),
        ({"max_epochs": 0}, r"max_epochs: Input should be greater than or equal to 1"),
    ],
)
def test_invalid_config_is_rejected_at_submit(annpot_code, dataset, training_settings, overrides, problem):
    with pytest.raises(ValueError, match=problem):
        run_get_node(train_builder(annpot_code, dataset, training_settings(**overrides)))


@pytest.mark.parametrize("member", [1, -1])
def test_parent_member_out_of_range_is_rejected(annpot_code, dataset, trained, training_settings, member):
    builder = train_builder(
        annpot_code, dataset, training_settings(), parent_potential=trained[0]["potential"], parent_member=Int(member)
    )
    with pytest.raises(ValueError, match=rf"parent_member {member} is not a member of a committee of 1"):
        run_get_node(builder)


def test_parent_member_without_parent_potential_is_rejected(annpot_code, dataset, training_settings):
    builder = train_builder(annpot_code, dataset, training_settings(), parent_member=Int(0))
    with pytest.raises(ValueError, match=r"parent_member 0 is not a member of a committee of 0"):
        run_get_node(builder)


def test_dataset_elements_outside_config_elements_are_rejected(annpot_code, dataset, training_settings):
    builder = train_builder(annpot_code, dataset, training_settings(elements=["Au", "Ag"]))
    with pytest.raises(ValueError, match=r"dataset has element\(s\) Cu not in config elements \['Au', 'Ag'\]"):
        run_get_node(builder)


def test_submitted_configuration_names_the_written_files(annpot_code, dataset, training_settings, trained):
    """A dry run writes the YAML the engine reads: the given settings plus the calculation's own file names, and a
    wall-time budget of 85 % of the scheduler's limit."""
    builder = train_builder(
        annpot_code, dataset, training_settings(), validation_dataset=dataset, parent_potential=trained[0]["potential"]
    )
    builder.metadata.dry_run = True
    builder.metadata.options.max_wallclock_seconds = 1000
    _, node = run_get_node(builder)
    written = yaml.safe_load((Path(node.dry_run_info["folder"]) / "train.yaml").read_text())
    assert written == {
        **training_settings(),
        "dataset": "dataset.extxyz",
        "validation_dataset": "validation.extxyz",
        "init_model": "init_model.safetensors",
        "wall_time": 850.0,
    }


# --- failures the engine reports ------------------------------------------------------------------------------------


def test_engine_input_error_gives_exit_code_310(annpot_code, dataset, emt_frames, training_settings):
    """A validation set with an element the model does not cover passes the ports and is refused by the engine."""
    validation = AtomisticDataset.from_frames(emt_frames(n=2, seed=4, element="Au")).store()
    builder = train_builder(annpot_code, dataset, training_settings(), validation_dataset=validation)
    results, node = run_get_node(builder)
    assert node.exit_status == AnnTrainCalculation.exit_codes.ERROR_INPUT_REJECTED.status == 310
    assert "Au" in node.exit_message and "not covered by this model" in node.exit_message
    assert node.exit_message.startswith("annpot rejected its input:")
    assert "potential" not in results and "metrics" not in results


def test_wall_time_gives_exit_code_410_a_checkpoint_and_the_best_model_so_far(annpot_code, dataset, training_settings):
    builder = train_builder(annpot_code, dataset, training_settings(max_epochs=50, wall_time=0.01))
    results, node = run_get_node(builder)
    assert node.exit_status == AnnTrainCalculation.exit_codes.ERROR_WALL_TIME_REACHED.status == 410
    assert "checkpoint.pt" in node.outputs.remote_folder.listdir()
    log = node.outputs.retrieved.base.repository.get_object_content("annpot.log")
    assert "wall time: checkpoint and best model so far written at epoch 1" in log
    # usable as it is, beside the exit code that makes the restart wrapper resume
    assert results["metrics"]["stopped"] == "wall_time" and results["metrics"]["epochs"] == 1
    assert results["potential"].committee_size == 1
