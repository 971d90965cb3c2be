"""Training: accuracy on held-out EMT copper, exact resume after wall-time stops, determinism, warm starts,
divergence and the nested train/validation split. Data are EMT-labelled copper frames generated here."""

from __future__ import annotations

import csv
import json

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from safetensors.torch import load_file

from aiida_annpot.common.config import TrainingConfig
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.errors import InputDataError, ModelFileError, TrainingDivergedError
from aiida_annpot.core.modelfile import load_potential, read_metadata, save_model
from aiida_annpot.core.training import CHECKPOINT, CURVE, METRICS, MODEL, Trainer, split_indices

#: Architecture of the accuracy test: EMT's Cu cutoff is 5.38 Å, so the descriptor reaches 5.5 Å.
ACCURATE = {
    "descriptor": {
        "type": "chebyshev",
        "radial_order": 12,
        "angular_order": 6,
        "radial_cutoff": 5.5,
        "angular_cutoff": 4.0,
    },
    "network": {"hidden": [32, 32], "activation": "silu"},
    "loss": {"energy_weight": 10.0, "force_weight": 1.0},
    "learning_rate": 1e-2,
    "lr_patience": 5,
    "batch_size": 4,
    "max_epochs": 100,
    "early_stopping_patience": 200,
    "dtype": "float32",
    "seed": 0,
    "threads": 1,
}
#: A small, fast float64 set-up for the bookkeeping tests (resume, determinism, splits).
SMALL = {
    "descriptor": {
        "type": "chebyshev",
        "radial_order": 6,
        "angular_order": 3,
        "radial_cutoff": 4.5,
        "angular_cutoff": 3.5,
    },
    "network": {"hidden": [8, 8]},
    "learning_rate": 1e-2,
    "lr_patience": 1,
    "batch_size": 4,
    "max_epochs": 12,
    "early_stopping_patience": 50,
    "checkpoint_interval": 1,
    "dtype": "float64",
    "seed": 3,
    "threads": 1,
}


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """The configurations set one torch thread (fast for these tiny tensors); restore the default afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def emt_frames(n: int, seed: int, n_special: int = 0) -> list:
    """EMT-labelled Cu: 2x2x2 conventional fcc cells (32 atoms) under random ±3 % strain and rattled by 0.02-0.15 Å;
    the first ``n_special`` frames alternate 3x3x3 primitive cells (27 atoms) and 31-atom vacancy cells."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        if k < n_special and k % 2 == 0:
            atoms = bulk("Cu", "fcc", a=3.61 * rng.uniform(0.97, 1.03)).repeat((3, 3, 3))
        elif k < n_special:
            atoms = bulk("Cu", "fcc", a=3.61 * rng.uniform(0.97, 1.03), cubic=True).repeat((2, 2, 2))
            del atoms[int(rng.integers(len(atoms)))]
        else:
            atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
            strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
            atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        atoms.rattle(stdev=rng.uniform(0.02, 0.15), seed=int(rng.integers(2**31)))
        atoms.calc = EMT()
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    return frames


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Paths of the training set (72 frames), a small set (16 frames) and the held-out frames (12, unseen seed)."""
    folder = tmp_path_factory.mktemp("data")
    paths = {"train": folder / "train.extxyz", "small": folder / "small.extxyz"}
    ase.io.write(paths["train"], emt_frames(72, seed=0, n_special=8))
    ase.io.write(paths["small"], emt_frames(16, seed=5, n_special=2))
    return paths | {"held_out": emt_frames(12, seed=1, n_special=2)}


def config(dataset, base=SMALL, **changes) -> TrainingConfig:
    return TrainingConfig(dataset=str(dataset), **(base | changes))


def quiet(line: str) -> None:
    pass


def held_out_errors(model_path, frames) -> tuple[float, float]:
    """Force RMSE (eV/Å, per component) and energy RMSE (meV/atom) of a model file against the EMT labels,
    evaluated through the ASE calculator."""
    calculator = AnnCalculator(str(model_path))
    force_errors, energy_errors = [], []
    for frame in frames:
        atoms = frame.copy()
        atoms.calc = calculator
        force_errors.append((atoms.get_forces() - frame.get_forces()).ravel())
        energy_errors.append((atoms.get_potential_energy() - frame.get_potential_energy()) / len(frame))
    return float(np.sqrt(np.mean(np.concatenate(force_errors) ** 2))), 1000 * float(
        np.sqrt(np.mean(np.square(energy_errors)))
    )


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """The accuracy run: 100 epochs on 72 frames (~15-25 s on 2 cores), and the untrained (initialised) model."""
    workdir = tmp_path_factory.mktemp("trained")
    trainer = Trainer(config(data["train"], ACCURATE), workdir, log=quiet)
    untrained = save_model(trainer.potential, workdir / "untrained.safetensors")
    outcome = trainer.run()
    return {"workdir": workdir, "outcome": outcome, "trainer": trainer, "untrained": untrained}


def curve_without_time(workdir) -> list[dict]:
    with (workdir / CURVE).open() as handle:
        return [{k: v for k, v in row.items() if k != "elapsed"} for row in csv.DictReader(handle)]


def metrics_without_time(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "wall_time"}


# ------------------------------------------------------------------------------------------------ accuracy


def test_training_reaches_held_out_accuracy(trained, data):
    """Held-out (unseen seed) errors through the ASE calculator against EMT. Measured when written (seed 0, torch
    2.13 CPU, ~12 s): forces 0.052 eV/Å, energy 2.9 meV/atom; untrained (initialised) model: 1.05 eV/Å and
    75 meV/atom. Thresholds: forces < 0.08 eV/Å, energy < 8 meV/atom, >10x (forces) / >5x (energy) better than
    untrained."""
    assert trained["outcome"].status == "finished"
    assert trained["outcome"].epochs == 100
    force_rmse, energy_rmse = held_out_errors(trained["workdir"] / MODEL, data["held_out"])
    untrained_force, untrained_energy = held_out_errors(trained["untrained"], data["held_out"])
    print(
        f"held-out: forces {force_rmse:.4f} eV/Å, energy {energy_rmse:.2f} meV/atom; "
        f"untrained: {untrained_force:.3f} eV/Å, {untrained_energy:.1f} meV/atom"
    )
    assert force_rmse < 0.08
    assert energy_rmse < 8.0
    assert untrained_force > 10 * force_rmse
    assert untrained_energy > 5 * energy_rmse


def test_training_outputs(trained, data):
    workdir, outcome = trained["workdir"], trained["outcome"]
    metrics = json.loads((workdir / METRICS).read_text())
    assert metrics_without_time(metrics) == metrics_without_time(outcome.metrics)
    assert metrics["validation"]["n_structures"] == 7 and metrics["train"]["n_structures"] == 65
    assert metrics["validation"]["force_rmse"] < 0.08
    rows = curve_without_time(workdir)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 101))
    first, best = float(rows[0]["validation_force_rmse"]), min(float(r["validation_force_rmse"]) for r in rows)
    assert best < 0.3 * first
    metadata = read_metadata(workdir / MODEL)
    assert metadata["elements"] == ["Cu"]
    assert metadata["metrics"]["validation"]["force_rmse"] == pytest.approx(metrics["validation"]["force_rmse"])
    assert metadata["training"]["network"] == ACCURATE["network"]
    assert len(metadata["dataset_hash"]) == 64
    assert (workdir / CHECKPOINT).is_file()


# ------------------------------------------------------------------------------------------------ resume


def test_resume_after_wall_time_is_exact(data, tmp_path):
    """Run A: 12 epochs uninterrupted. Run B: a wall time so short that every call trains one epoch, checkpoints
    and returns 'wall_time'; new Trainer objects resume until 'finished'. Same weights, curve and metrics."""
    reference = config(data["small"])
    outcome_a = Trainer(reference, tmp_path / "A", log=quiet).run()
    assert outcome_a.status == "finished" and outcome_a.epochs == 12

    interrupted = reference.model_copy(update={"wall_time": 1e-9})
    statuses = []
    for _ in range(20):
        outcome = Trainer(interrupted, tmp_path / "B", log=quiet).run(resume=True)
        statuses.append((outcome.status, outcome.epochs))
        if outcome.status == "finished":
            break
        assert outcome.metrics["stopped"] == "wall_time" and outcome.metrics["epochs"] == outcome.epochs
        assert (tmp_path / "B" / MODEL).is_file()  # the best model so far, beside the checkpoint
        assert (tmp_path / "B" / CHECKPOINT).is_file()
    assert statuses == [("wall_time", epoch) for epoch in range(1, 12)] + [("finished", 12)]

    weights_a, weights_b = load_file(tmp_path / "A" / MODEL), load_file(tmp_path / "B" / MODEL)
    assert weights_a.keys() == weights_b.keys()
    for name in weights_a:
        torch.testing.assert_close(weights_b[name], weights_a[name], rtol=0, atol=1e-10)
    curve_a, curve_b = curve_without_time(tmp_path / "A"), curve_without_time(tmp_path / "B")
    assert curve_b == curve_a
    assert len({row["learning_rate"] for row in curve_a}) > 1  # the plateau schedule acted: its state was resumed
    assert metrics_without_time(outcome.metrics) == metrics_without_time(outcome_a.metrics)


def test_resume_refuses_a_different_dataset(data, tmp_path):
    Trainer(config(data["small"], wall_time=1e-9), tmp_path, log=quiet).run()
    assert (tmp_path / CHECKPOINT).is_file()
    frames = ase.io.read(data["small"], ":")
    frames[4].positions[0] += 0.01
    ase.io.write(tmp_path / "other.extxyz", frames)
    with pytest.raises(InputDataError, match="different dataset"):
        Trainer(config(tmp_path / "other.extxyz", wall_time=1e-9), tmp_path, log=quiet).run(resume=True)


# ------------------------------------------------------------------------------------------------ determinism


def test_same_seed_same_result_different_seed_different_result(data, tmp_path):
    short = {"max_epochs": 3}
    outcomes = {
        name: Trainer(config(data["small"], **short, seed=seed), tmp_path / name, log=quiet).run()
        for name, seed in (("a", 3), ("b", 3), ("c", 4))
    }
    assert metrics_without_time(outcomes["a"].metrics) == metrics_without_time(outcomes["b"].metrics)
    assert curve_without_time(tmp_path / "a") == curve_without_time(tmp_path / "b")
    weights = {name: load_file(tmp_path / name / MODEL) for name in outcomes}
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert metrics_without_time(outcomes["a"].metrics) != metrics_without_time(outcomes["c"].metrics)
    assert not torch.equal(weights["a"]["networks.weight.0"], weights["c"]["networks.weight.0"])
    split_a, split_c = (split_indices(16, config(data["small"], seed=s)) for s in (3, 4))
    assert not np.array_equal(split_a[1], split_c[1])


# ------------------------------------------------------------------------------------------------ kept weights


def test_kept_weights_are_the_best_validation_epoch_or_the_last_one(data, tmp_path):
    """Same run twice, 12 epochs at a learning rate (0.1) that makes the validation loss jump: ``best_validation`` keeps
    the epoch with the lowest validation loss, ``last_epoch`` the final weights, and the metrics are those of the
    kept weights."""
    rows, metrics = {}, {}
    for keep in ("best_validation", "last_epoch"):
        outcome = Trainer(
            config(data["small"], keep_weights=keep, lr_schedule="constant", learning_rate=1e-1),
            tmp_path / keep,
            log=quiet,
        ).run()
        rows[keep] = [float(row["validation_energy_rmse"]) for row in curve_without_time(tmp_path / keep)]
        metrics[keep] = outcome.metrics["validation"]["energy_rmse"]
    assert rows["best_validation"] == rows["last_epoch"]  # the same training
    curve = rows["last_epoch"]
    best = int(np.argmin([float(row["validation_loss"]) for row in curve_without_time(tmp_path / "last_epoch")]))
    assert best != len(curve) - 1, "the test needs a run whose last epoch is not its best"
    assert metrics["best_validation"] == pytest.approx(curve[best], rel=1e-9)
    assert metrics["last_epoch"] == pytest.approx(curve[-1], rel=1e-9)
    last = load_file(tmp_path / "last_epoch" / MODEL)
    best_weights = load_file(tmp_path / "best_validation" / MODEL)
    assert not torch.equal(last["networks.weight.0"], best_weights["networks.weight.0"])


# ------------------------------------------------------------------------------------------------ warm start


def test_warm_start_beats_cold_start(trained, data, tmp_path):
    """One epoch on the small set from the trained model vs from scratch (same architecture; a fine-tuning
    learning rate, since Adam's first steps move every weight by about the learning rate)."""
    parent = trained["workdir"] / MODEL
    settings = {"max_epochs": 1, "learning_rate": 1e-3}
    cold = Trainer(config(data["small"], ACCURATE, **settings), tmp_path / "cold", log=quiet)
    warm = Trainer(config(data["small"], ACCURATE, **settings, init_model=str(parent)), tmp_path / "warm", log=quiet)
    loaded = load_potential(parent, dtype=torch.float32)
    for name, value in loaded.state_dict().items():  # the warm start begins exactly at the parent model,
        if name in ("feature_min", "feature_max"):  # except the feature ranges, which describe the new data
            continue
        assert torch.equal(warm.potential.state_dict()[name], value), name
    cold.run()
    warm.run()
    cold_error, warm_error = cold.curve[0]["validation_force_rmse"], warm.curve[0]["validation_force_rmse"]
    print(f"first-epoch validation force RMSE: warm {warm_error:.4f}, cold {cold_error:.4f} eV/Å")
    assert warm_error < 0.2 * cold_error, (warm_error, cold_error)
    assert warm.curve[0]["validation_energy_rmse"] < 0.2 * cold.curve[0]["validation_energy_rmse"]


@pytest.mark.parametrize(
    "change",
    [
        {"network": {"hidden": [16, 16], "activation": "silu"}},
        {"network": {"hidden": [32, 32]}},
        {"descriptor": ACCURATE["descriptor"] | {"radial_order": 10}},
    ],
    ids=["hidden", "activation", "descriptor"],
)
def test_warm_start_with_other_architecture_fails(trained, data, tmp_path, change):
    parent = str(trained["workdir"] / MODEL)
    with pytest.raises(ModelFileError, match="different architecture"):
        Trainer(config(data["small"], ACCURATE | change, init_model=parent), tmp_path, log=quiet)


def test_warm_start_from_missing_file_fails(data, tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        Trainer(config(data["small"], init_model=str(tmp_path / "none.safetensors")), tmp_path, log=quiet)


# ------------------------------------------------------------------------------------------------ divergence


def test_huge_learning_rate_diverges(data, tmp_path):
    """float32 with an unbounded activation: the loss overflows within the first epoch."""
    settings = config(
        data["small"], learning_rate=1e6, dtype="float32", network={"hidden": [8, 8], "activation": "silu"}
    )
    with pytest.raises(TrainingDivergedError, match="loss became"):
        Trainer(settings, tmp_path, log=quiet).run()
    assert not (tmp_path / MODEL).exists()
    assert not (tmp_path / METRICS).exists()


def test_huge_learning_rate_float64_is_reported_as_diverged(data, tmp_path):
    """In float64 nothing overflows: the loss stays finite but absurd, and must still count as divergence."""
    settings = config(data["small"], learning_rate=1e6, max_epochs=3, network={"hidden": [8, 8], "activation": "silu"})
    with pytest.raises(TrainingDivergedError, match="times the starting model"):
        Trainer(settings, tmp_path, log=quiet).run()
    assert not (tmp_path / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------ split


def test_split_nested_and_disjoint():
    n = 50
    splits = {f: split_indices(n, TrainingConfig(dataset="x", seed=7, training_fraction=f)) for f in (0.25, 0.5, 1)}
    train = {f: set(s[0].tolist()) for f, s in splits.items()}
    validation = {f: set(s[1].tolist()) for f, s in splits.items()}
    assert train[0.25] < train[0.5] < train[1]
    assert (len(train[0.25]), len(train[0.5]), len(train[1])) == (12, 23, 45)
    assert validation[0.25] == validation[0.5] == validation[1] and len(validation[1]) == 5
    assert not validation[1] & train[1]
    assert validation[1] | train[1] == set(range(n))
    for train_index, validation_index in splits.values():
        assert np.all(np.diff(train_index) > 0) and np.all(np.diff(validation_index) > 0)
    other = split_indices(n, TrainingConfig(dataset="x", seed=8))
    assert set(other[1].tolist()) != validation[1]
    assert split_indices(n, TrainingConfig(dataset="x", seed=7))[1].tolist() == splits[1][1].tolist()


def test_trainer_uses_the_split(data, tmp_path):
    frames = ase.io.read(data["small"], ":")
    settings = config(data["small"], training_fraction=0.5, validation_fraction=0.25)
    train_index, validation_index = split_indices(len(frames), settings)
    trainer = Trainer(settings, tmp_path, log=quiet)
    assert len(trainer.train_set) == len(train_index) == 6 and len(trainer.validation_set) == len(validation_index) == 4
    for frame, index in zip(trainer.train_frames, train_index, strict=True):
        np.testing.assert_array_equal(frame.positions, frames[index].positions)
    validation_energies = [item.energy for item in trainer.validation_set.items]
    assert validation_energies == [frames[i].get_potential_energy() for i in validation_index]
