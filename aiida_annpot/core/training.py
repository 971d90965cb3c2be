"""Training one committee member: seeded split, loss on energies per atom, forces and stress, Adam with a schedule,
early stopping, checkpoints, ``--resume`` and a wall-time budget.

Everything a run depends on (weights, optimiser and schedule state, the shuffling generator, the early-stopping
counters and the learning curve so far) is in the checkpoint, so an interrupted run that is resumed ends exactly
where an uninterrupted one does. Checkpoints are written at epoch boundaries; a wall-time or SIGTERM stop writes
one and the process exits with :data:`~aiida_annpot.core.errors.EXIT_WALL_TIME`.

Descriptors and pair Jacobians are computed once, before the first epoch, and kept in memory while their estimated
size fits the memory budget, else in files in the working directory that each batch reads (:mod:`.feature_store`);
both give the same batches. A resumed run computes them again.

The model, the descriptor calls and the optimisation run on the configured ``device``; the stored features stay in
host memory and each batch moves to the device. Initial weights and the batch order are drawn on the CPU, so a GPU
run starts where a CPU run does, and checkpoints load on either.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase.data import atomic_numbers

from ..common.config import TrainingConfig
from ..common.contract import CHECKPOINT_FILE, CURVE_FILE, METRICS_FILE, MODEL_FILE
from . import jsonio
from .baselines import baseline_record, delta_labels, describe_baseline
from .dataset import Batch, dataset_hash, elements_of, read_frames, validate_labelled
from .device import describe_device, device_record, resolve_device
from .errors import InputDataError, ModelFileError, TrainingDivergedError, UnknownElementError
from .feature_statistics import FeatureStatistics
from .feature_store import SCRATCH_FOLDER, open_feature_set, plan_feature_store
from .interrupt import StopRequest
from .metrics import EV_PER_A3_TO_GPA, parity
from .model import Potential
from .modelfile import load_potential, save_model

CHECKPOINT, MODEL, METRICS, CURVE = CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE, CURVE_FILE
#: A validation loss this many times that of the starting model means the optimisation blew up (a finite loss can
#: still be absurd in float64, where nothing overflows).
DIVERGENCE_FACTOR = 1e4
CURVE_FIELDS = [
    "epoch",
    "learning_rate",
    "train_loss",
    "train_energy_rmse",
    "train_force_rmse",
    "validation_loss",
    "validation_energy_rmse",
    "validation_force_rmse",
    "elapsed",
]


@dataclass
class TrainingOutcome:
    """How a call to :func:`train` ended: ``finished``, or ``wall_time`` (checkpoint written, resume later; the best
    model so far and its metrics are written too)."""

    status: str
    epochs: int
    metrics: dict = field(default_factory=dict)


def describe_dataset(value: str | list[str] | None) -> str:
    """A dataset setting for messages: the path, or a list of files (frame k of a list of XSF files is file k)."""
    if not isinstance(value, list):
        return str(value)
    shown = value if len(value) <= 3 else [value[0], value[1], "...", value[-1]]
    return f"the {len(value)} files [{', '.join(shown)}]"


def split_indices(n_frames: int, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split; ``training_fraction`` takes a prefix, so smaller subsets nest."""
    if n_frames < 2:
        raise InputDataError(f"need at least 2 labelled frames for a train/validation split, got {n_frames}")
    order = np.random.default_rng(config.seed).permutation(n_frames)
    n_validation = min(n_frames - 1, max(1, round(config.validation_fraction * n_frames)))
    train = order[n_validation:]
    train = train[: max(1, math.ceil(config.training_fraction * len(train)))]
    return np.sort(train), np.sort(order[:n_validation])


def fit_reference_energies(frames, elements: list[str]) -> tuple[np.ndarray, float]:
    """Least-squares ε_Z with E ≈ Σ_Z n_Z ε_Z, and the RMS per-atom residual (the networks' energy scale)."""
    counts = np.array(
        [[np.count_nonzero(f.numbers == atomic_numbers[e]) for e in elements] for f in frames], dtype=float
    )
    energies = np.array([f.get_potential_energy() for f in frames])
    reference, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    residual = (energies - counts @ reference) / counts.sum(axis=1)
    with np.errstate(over="ignore"):  # absurd labels overflow here; the loss then reports the divergence
        return reference, max(float(np.sqrt(np.mean(residual**2))), 0.01)


def initialise(potential: Potential, statistics: FeatureStatistics, frames, seed: int) -> None:
    """Standardisation from the training features' statistics, reference energies, and seeded initial weights."""
    for element in range(len(potential.elements)):
        if statistics.count[element] == 0:
            raise InputDataError(f"no atoms of {potential.elements[element]} in the training split")
    std = statistics.std
    potential.feature_mean[0] = statistics.mean
    potential.feature_std[0] = torch.where(std > 1e-6, std, torch.ones_like(std))
    reference, scale = fit_reference_energies(frames, potential.elements)
    potential.reference_energy[0] = torch.as_tensor(reference, device=potential.device)
    potential.energy_scale[0] = scale
    potential.networks.reset_parameters(torch.Generator().manual_seed(seed))


def set_feature_ranges(potential: Potential, statistics: FeatureStatistics) -> None:
    """Member 0's per-element feature minima and maxima over the training features (extrapolation grades).

    An element without atoms in the training features keeps an infinite range (nothing known, never flagged).
    """
    absent = statistics.count == 0
    potential.feature_min[0] = statistics.minimum.masked_fill(absent[:, None], -torch.inf)
    potential.feature_max[0] = statistics.maximum.masked_fill(absent[:, None], torch.inf)


def batch_loss(potential: Potential, batch: Batch, config: TrainingConfig) -> tuple[torch.Tensor, dict]:
    """Weighted squared errors of one batch; returns the loss and the batch's mean squared errors."""
    weights = config.loss
    use_stress = weights.stress_weight > 0 and batch.stress is not None
    prediction = potential.predict_from_features(
        batch.features,
        batch.jacobian if weights.force_weight > 0 or use_stress else None,
        batch.species,
        batch.pairs,
        batch.structure_index,
        batch.n_structures,
        batch.volumes if use_stress else None,
        create_graph=True,
    )
    n_atoms = batch.n_atoms.to(batch.energy.dtype)
    energy_mse = (((prediction.energy[0] - batch.energy) / n_atoms) ** 2).mean()
    loss = weights.energy_weight * energy_mse
    errors = {"energy": energy_mse.item()}
    if prediction.forces is not None:
        finite = torch.isfinite(batch.forces)
        force_mse = ((prediction.forces[0] - batch.forces)[finite] ** 2).mean()
        loss = loss + weights.force_weight * force_mse
        errors["forces"] = force_mse.item()
    if use_stress:
        stress_mse = (((prediction.stress[0] - batch.stress) * EV_PER_A3_TO_GPA) ** 2).mean()
        loss = loss + weights.stress_weight * stress_mse
    return loss, errors


def _make_scheduler(optimizer, config: TrainingConfig):
    if config.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_decay, patience=config.lr_patience, min_lr=config.min_learning_rate
        )
    floor = config.min_learning_rate / config.learning_rate
    decay = config.lr_decay if config.lr_schedule == "exponential" else 1.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: max(decay**epoch, floor))


class Trainer:
    """Trains one model of ``config`` in ``workdir`` (outputs and checkpoint go there).

    :param log: called with one human-readable line per epoch (and one saying where the features are kept).
    :param trusted_baselines: import-path baselines the caller trusts (the configuration cannot trust its own).
    """

    def __init__(self, config: TrainingConfig, workdir: str | Path, log=print, trusted_baselines: Iterable[str] = ()):
        self.config, self.workdir, self.log = config, Path(workdir), log
        self.trusted_baselines = tuple(trusted_baselines)  # import-path baselines the caller trusts, never the file
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dtype = getattr(torch, config.dtype)
        self.device = resolve_device(config.device)  # first: a missing GPU fails before any work
        if config.threads:
            torch.set_num_threads(config.threads)
        # energy-only data (e.g. aenet XSF files without forces) trains when the loss has no force term
        needs_forces = config.loss.force_weight > 0
        source, validation_source = describe_dataset(config.dataset), describe_dataset(config.validation_dataset)
        frames = read_frames(config.dataset)
        validate_labelled(frames, source=source, require_forces=needs_forces)
        self.dataset_hash = dataset_hash(frames)
        frames = delta_labels(frames, config.baseline, source, self.trusted_baselines)  # hash: of DFT labels
        elements = config.elements or elements_of(frames)
        missing = sorted(set(elements_of(frames)) - set(elements))
        if missing:
            raise UnknownElementError(f"dataset has element(s) {', '.join(missing)} not in elements {elements}")
        if config.validation_dataset:
            validation_frames = read_frames(config.validation_dataset)
            validate_labelled(validation_frames, source=validation_source, require_forces=needs_forces)
            validation_frames = delta_labels(
                validation_frames, config.baseline, validation_source, self.trusted_baselines
            )
            train_index = np.arange(len(frames))
            train_index = train_index[: max(1, math.ceil(config.training_fraction * len(frames)))]
        else:
            train_index, validation_index = split_indices(len(frames), config)
            validation_frames = [frames[i] for i in validation_index]
        self.train_frames = [frames[i] for i in train_index]
        self.potential = self._build_potential(elements).to(self.device)
        self.feature_plan = plan_feature_store(
            config, self.train_frames + validation_frames, self.potential, self.dtype, self.workdir
        )
        scratch = self.workdir / SCRATCH_FOLDER
        where = "in memory" if self.feature_plan.kind == "memory" else f"on disk ({scratch})"
        self.log(f"features and Jacobians {where}: {self.feature_plan.reason}")
        self.log(f"device: {describe_device(self.device)}")
        self.train_set = open_feature_set(
            self.feature_plan.kind, self.train_frames, self.potential, self.dtype, scratch / "train"
        )
        self.validation_set = open_feature_set(
            self.feature_plan.kind, validation_frames, self.potential, self.dtype, scratch / "validation"
        )
        statistics = FeatureStatistics.of(
            self.train_set.feature_chunks(),
            len(self.potential.elements),
            self.potential.descriptor.n_features,
            self.dtype,
        )
        if not config.init_model:
            initialise(self.potential, statistics, self.train_frames, config.seed)
        set_feature_ranges(self.potential, statistics)  # also on a warm start: ranges of this training set
        self.optimizer = torch.optim.Adam(self.potential.networks.parameters(), lr=config.learning_rate)
        self.scheduler = _make_scheduler(self.optimizer, config)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epoch, self.best_loss, self.stale_epochs, self.elapsed = 0, math.inf, 0, 0.0
        self.best_state = None
        self.initial_loss: float | None = None
        self.curve: list[dict] = []

    def _build_potential(self, elements: list[str]) -> Potential:
        potential = Potential(elements, self.config.descriptor, self.config.network).to(self.dtype)
        potential.baseline_config = self.config.baseline
        if self.config.init_model:
            parent = load_potential(self.config.init_model, dtype=self.dtype)
            if (parent.elements, parent.descriptor_config, parent.network_config) != (
                potential.elements,
                potential.descriptor_config,
                potential.network_config,
            ):
                raise ModelFileError(
                    f"init_model {self.config.init_model} has a different architecture (elements, descriptor or "
                    "network) than this training configuration"
                )
            if baseline_record(parent.baseline_config) != baseline_record(self.config.baseline):
                raise ModelFileError(
                    f"init_model {self.config.init_model} was trained with baseline "
                    f"{describe_baseline(parent.baseline_config)}, this configuration has "
                    f"{describe_baseline(self.config.baseline)}: a warm start needs the same baseline"
                )
            potential.load_state_dict(parent.state_dict())
        return potential

    def run(self, resume: bool = False) -> TrainingOutcome:
        """Train until early stopping or ``max_epochs``; returns ``wall_time`` after a budget or SIGTERM stop.

        The feature sets are closed when it returns (a disk store's files are deleted): a Trainer runs once.
        """
        try:
            return self._train(resume)
        finally:
            self.train_set.close()
            self.validation_set.close()

    def _train(self, resume: bool) -> TrainingOutcome:
        if resume and (self.workdir / CHECKPOINT).is_file():
            self._load_checkpoint()
            self.log(f"resumed from {CHECKPOINT} at epoch {self.epoch}")
        if self.initial_loss is None:
            self.initial_loss = self._validation_loss()[0]
        started = time.perf_counter()
        with StopRequest(self.config.wall_time) as stop:
            while self.epoch < self.config.max_epochs and self.stale_epochs < self.config.early_stopping_patience:
                epoch_started = time.perf_counter()
                self._epoch()
                if self.epoch >= self.config.max_epochs or self.stale_epochs >= self.config.early_stopping_patience:
                    break  # finished: no checkpoint-and-exit even if the budget is nearly spent
                now = time.perf_counter()
                if stop.due(margin=1.5 * (now - epoch_started)):  # the next epoch would not fit, or SIGTERM
                    self.elapsed += now - started
                    self._save_checkpoint()
                    metrics = self._finish(stopped="wall_time")  # the best model so far is usable as it is
                    self.log(f"wall time: checkpoint and best model so far written at epoch {self.epoch}")
                    return TrainingOutcome("wall_time", self.epoch, metrics)
                if self.epoch % self.config.checkpoint_interval == 0:
                    self._save_checkpoint(elapsed=self.elapsed + now - started)
        self.elapsed += time.perf_counter() - started
        return TrainingOutcome("finished", self.epoch, self._finish())

    def _epoch(self) -> None:
        self.potential.train()
        order = torch.randperm(len(self.train_set), generator=self.generator, device="cpu")  # the generator's
        totals = {"loss": 0.0, "energy": 0.0, "forces": 0.0}
        groups = (
            order[start : start + self.config.batch_size] for start in range(0, len(order), self.config.batch_size)
        )
        for batch in self.train_set.batches(groups):
            loss, errors = batch_loss(self.potential, batch, self.config)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"loss became {loss.item()} at epoch {self.epoch + 1} (learning rate "
                    f"{self.optimizer.param_groups[0]['lr']:.3g}); resume from the last checkpoint with a lower one"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            weight = batch.n_structures / len(order)
            totals["loss"] += loss.item() * weight
            totals["energy"] += errors["energy"] * weight
            totals["forces"] += errors.get("forces", float("nan")) * weight
        self.epoch += 1
        self._validate(totals)

    def _validation_loss(self) -> tuple[float, dict]:
        metrics = parity(self.potential, self.validation_set).metrics()
        weights = self.config.loss
        loss = weights.energy_weight * (metrics["energy_rmse"] / 1000.0) ** 2
        if weights.force_weight > 0 and math.isfinite(metrics["force_rmse"]):
            loss += weights.force_weight * metrics["force_rmse"] ** 2
        if weights.stress_weight > 0 and math.isfinite(metrics["stress_rmse"]):
            loss += weights.stress_weight * metrics["stress_rmse"] ** 2
        return loss, metrics

    def _validate(self, totals: dict) -> None:
        loss, metrics = self._validation_loss()
        lr = self.optimizer.param_groups[0]["lr"]
        if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * self.initial_loss:
            raise TrainingDivergedError(
                f"validation loss {loss:.3g} at epoch {self.epoch} is over {DIVERGENCE_FACTOR:g} times the starting "
                f"model's ({self.initial_loss:.3g}) at learning rate {lr:.3g}; resume from the last checkpoint with a "
                "lower one"
            )
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(loss)
        else:
            self.scheduler.step()
        if loss < self.best_loss:
            self.best_loss, self.stale_epochs = loss, 0
            self.best_state = {k: v.detach().clone() for k, v in self.potential.state_dict().items()}
        else:
            self.stale_epochs += 1
        row = {
            "epoch": self.epoch,
            "learning_rate": lr,
            "train_loss": totals["loss"],
            "train_energy_rmse": 1000.0 * math.sqrt(totals["energy"]),
            "train_force_rmse": math.sqrt(totals["forces"]) if math.isfinite(totals["forces"]) else float("nan"),
            "validation_loss": loss,
            "validation_energy_rmse": metrics["energy_rmse"],
            "validation_force_rmse": metrics["force_rmse"],
            "elapsed": self.elapsed,
        }
        self.curve.append(row)
        self.log(
            f"epoch {self.epoch:4d}  lr {lr:.2e}  validation: energy {metrics['energy_rmse']:.3f} meV/atom, "
            f"forces {metrics['force_rmse']:.4f} eV/Å"
        )

    def _save_checkpoint(self, elapsed: float | None = None) -> None:
        state = {
            "model": self.potential.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "best_loss": self.best_loss,
            "stale_epochs": self.stale_epochs,
            "best_state": self.best_state,
            "elapsed": self.elapsed if elapsed is None else elapsed,
            "curve": json.dumps(self.curve),
            "dataset_hash": self.dataset_hash,
            "learning_rate": self.config.learning_rate,
            "initial_loss": self.initial_loss,
            "baseline": json.dumps(baseline_record(self.config.baseline)),
        }
        temporary = self.workdir / (CHECKPOINT + ".tmp")
        torch.save(state, temporary)
        temporary.replace(self.workdir / CHECKPOINT)  # atomic: a kill mid-write leaves the previous checkpoint

    def _load_checkpoint(self) -> None:
        path = self.workdir / CHECKPOINT
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")  # written on any device
        except Exception as exc:  # torch raises several types for truncated or foreign files
            raise InputDataError(f"cannot resume: {path} is not a readable checkpoint ({exc})") from exc
        if state.get("dataset_hash") != self.dataset_hash:
            raise InputDataError(f"{CHECKPOINT} was written for a different dataset; cannot resume on this one")
        if state.get("baseline", "null") != json.dumps(baseline_record(self.config.baseline)):
            raise InputDataError(f"{CHECKPOINT} was written for a different baseline; cannot resume with this one")
        try:
            self.potential.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise InputDataError(
                f"cannot resume: {path} was written for a different model architecture or optimiser ({exc})"
            ) from exc
        self.generator.set_state(state["generator"])
        self.epoch, self.best_loss, self.stale_epochs = state["epoch"], state["best_loss"], state["stale_epochs"]
        self.best_state, self.elapsed, self.curve = state["best_state"], state["elapsed"], json.loads(state["curve"])
        self.initial_loss = state["initial_loss"]
        if state["learning_rate"] != self.config.learning_rate:  # a restart after divergence lowers the rate
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.learning_rate
            self.log(f"learning rate reset to {self.config.learning_rate:g} (was {state['learning_rate']:g})")

    def _finish(self, stopped: str | None = None) -> dict:
        """Write the best model, its metrics and the learning curve. ``stopped``: why training stopped early
        (``wall_time``: the checkpoint was written first, since the best weights replace the current ones here)."""
        if self.best_state is not None and self.config.keep_weights == "best_validation":
            self.potential.load_state_dict(self.best_state)
        metrics = {
            "train": parity(self.potential, self.train_set).metrics(),
            "validation": parity(self.potential, self.validation_set).metrics(),
            "epochs": self.epoch,
            "best_validation_loss": self.best_loss,
            "wall_time": self.elapsed,
            "feature_store": self.feature_plan.record(),
            "device": device_record(self.device),
            **({"stopped": stopped} if stopped else {}),
        }
        save_model(
            self.potential,
            self.workdir / MODEL,
            dataset_hash=self.dataset_hash,
            metrics=metrics,
            training=self.config.model_dump(mode="json", by_alias=True),
        )
        (self.workdir / METRICS).write_text(jsonio.dumps(metrics, indent=2))
        with (self.workdir / CURVE).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
            writer.writeheader()
            writer.writerows(self.curve)
        return metrics
