"""``annpot.model_selection``: choose descriptor and network by validation error and learning curves (Miksch et al.
2021, step 2).

The dataset is split once (``split_dataset``); every candidate of the grid (each descriptor × each network) trains
through :class:`AnnTrainBaseWorkChain` on each training fraction of the one training split and is validated on the
one validation split; ``rank_models`` scores the candidates at the full training set, diagnoses their learning
curves and picks one by the rule of :class:`~aiida_annpot.common.config.ModelSelectionConfig` (see
:mod:`aiida_annpot.core.model_ranking`). A failed training job makes its candidate ineligible (the table records
why), not the selection. The ``config`` output is a complete training configuration without paths, usable as
``committee.config`` of ``annpot.committee`` and ``annpot.active_learning`` (and the ``model_selection`` key of an
``aiida-annpot launch`` campaign file).
"""

from __future__ import annotations

from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain
from aiida.orm import ArrayData, Dict, Float, Int

from ..calcfunctions import model_selection as steps
from ..calcfunctions.model_selection import split_sizes, training_frames
from ..calculations.train import DATASET, VALIDATION_DATASET, validate_training_config
from ..common.config import ConfigError, ModelSelectionConfig, TrainingConfig, load_config
from ..core.model_ranking import candidate_label, fraction_label
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .train_base import AnnTrainBaseWorkChain

__all__ = ["GRID_KEYS", "ModelSelectionWorkChain"]

#: TrainingConfig keys the grid and the split set for each job: the ``training`` input must not contain them.
GRID_KEYS = ("descriptor", "network", "training_fraction", "validation_fraction")


def validate_grid(value: Dict, _) -> str | None:
    """A valid ModelSelectionConfig whose fractions have distinct job labels (whole percentages)."""
    try:
        config = load_config(value.get_dict(), ModelSelectionConfig)
    except ConfigError as exc:
        return str(exc)
    labels = [fraction_label(f) for f in config.training_fractions]
    if len(set(labels)) != len(labels):
        return f"training_fractions {config.training_fractions} must differ by at least 1% (job labels {labels})"
    return None


def validate_training(value: Dict, _) -> str | None:
    """Common TrainingConfig settings without paths and without what the grid decides."""
    given = [key for key in GRID_KEYS if key in value.get_dict()]
    if given:
        return (
            f"training must not set {', '.join(given)}: descriptor and network come from the grid, the "
            "fractions from the grid's training_fractions and validation_fraction"
        )
    return validate_training_config(value, None)


def validate_inputs(inputs: dict, _) -> str | None:
    """Every job's merged configuration is a valid TrainingConfig, and the dataset can be split for every fraction."""
    if not {"grid", "training", "dataset"} <= set(inputs):
        return None
    config = load_config(inputs["grid"].get_dict(), ModelSelectionConfig)
    training = inputs["training"].get_dict()
    for settings in _job_settings(config, training).values():
        try:
            load_config({**settings, "dataset": DATASET, "validation_dataset": VALIDATION_DATASET}, TrainingConfig)
        except ConfigError as exc:
            return f"training merged with the grid: {exc}"
    dataset = inputs["dataset"]
    missing = sorted(set(dataset.elements) - set(training.get("elements") or dataset.elements))
    if missing:
        return f"dataset has element(s) {', '.join(missing)} not in training elements {training['elements']}"
    return _split_problem(dataset.n_frames, config)


def _split_problem(n_frames: int, config: ModelSelectionConfig) -> str | None:
    """Why ``n_frames`` cannot give a validation split and a learning curve over the fractions (None: they can)."""
    if n_frames < 2:
        return f"the dataset has {n_frames} frame(s): a train/validation split needs at least 2"
    n_training, n_validation = split_sizes(n_frames, config.validation_fraction)
    smallest = min(config.training_fractions)
    if smallest * n_training < 1:
        return (
            f"the dataset is too small: {n_frames} frames leave {n_training} training frame(s) after "
            f"{n_validation} for validation, and the smallest training fraction {smallest} of them is less "
            "than one frame"
        )
    counts = {f: training_frames(n_training, f) for f in sorted(config.training_fractions)}
    if len(set(counts.values())) != len(counts):
        return (
            f"the dataset is too small for these training fractions: {n_training} training frames give "
            f"{counts} frames per fraction, so the learning curve repeats points"
        )
    return None


def _job_settings(config: ModelSelectionConfig, training: dict) -> dict[str, dict]:
    """Job label (``candidate_<i>_f<percent>``) → its TrainingConfig settings, descriptor-major order."""
    jobs = {}
    for d_index, descriptor in enumerate(config.descriptors):
        for n_index, network in enumerate(config.networks):
            label = candidate_label(d_index * len(config.networks) + n_index)
            for fraction in sorted(config.training_fractions):
                jobs[f"{label}_{fraction_label(fraction)}"] = {
                    **training,
                    "descriptor": descriptor.model_dump(mode="json", by_alias=True),
                    "network": network.model_dump(mode="json"),
                    "training_fraction": fraction,
                }
    return jobs


class ModelSelectionWorkChain(WorkChain):
    """Train every candidate of a descriptor × network grid on growing shares of one training split; pick one."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input(
            "dataset",
            valid_type=AtomisticDataset,
            help="Labelled frames, split once into training and validation frames shared by every candidate.",
        )
        spec.input(
            "grid",
            valid_type=Dict,
            validator=validate_grid,
            help="ModelSelectionConfig: descriptors, networks, training_fractions, validation_fraction, "
            "split_seed, tie_tolerance.",
        )
        spec.input(
            "training",
            valid_type=Dict,
            validator=validate_training,
            default=lambda: Dict({}),
            help="Common TrainingConfig settings (loss, epochs, learning rate, seed, ...) without file paths "
            "and without descriptor, network, training_fraction, validation_fraction.",
        )
        spec.expose_inputs(
            AnnTrainBaseWorkChain,
            namespace="train",
            exclude=(
                "train.dataset",
                "train.validation_dataset",
                "train.config",
                "train.parent_potential",
                "train.parent_member",
                "train.parent_folder",
            ),
            namespace_options={"help": "The annpot code, scheduler options and restart settings of every job."},
        )
        spec.inputs.validator = validate_inputs
        spec.outline(cls.split_dataset, cls.run_training, cls.inspect_training, cls.rank_models, cls.results)
        spec.output(
            "config",
            valid_type=Dict,
            help="The chosen TrainingConfig settings without paths: training + "
            "the chosen descriptor and network (usable as committee.config).",
        )
        spec.output(
            "table",
            valid_type=Dict,
            help="One row per candidate: settings, features, parameters, errors "
            "and training frames per fraction, diagnosis, score, rank; and the chosen index.",
        )
        spec.output("potential", valid_type=AnnPotential, help="The chosen candidate trained on the full split.")
        spec.output("training_dataset", valid_type=AtomisticDataset, help="The training split (shuffled).")
        spec.output("validation_dataset", valid_type=AtomisticDataset, help="The validation split of every job.")
        spec.output_namespace(
            "learning_curves",
            valid_type=ArrayData,
            dynamic=True,
            help="Per candidate: fraction, n_train and the four errors per fraction.",
        )
        spec.exit_code(401, "ERROR_NO_ELIGIBLE_CANDIDATE", message="no candidate can be chosen: {failures}")

    def split_dataset(self):
        config = load_config(self.inputs.grid.get_dict(), ModelSelectionConfig)
        split = steps.split_dataset(
            self.inputs.dataset,
            Float(config.validation_fraction),
            Int(config.split_seed),
            metadata={"call_link_label": "split_dataset"},
        )
        self.ctx.training, self.ctx.validation = split["training"], split["validation"]
        self.report(
            f"split {self.inputs.dataset.n_frames} frames into {self.ctx.training.n_frames} training and "
            f"{self.ctx.validation.n_frames} validation frames (seed {config.split_seed})"
        )

    def run_training(self):
        config = load_config(self.inputs.grid.get_dict(), ModelSelectionConfig)
        jobs = _job_settings(config, self.inputs.training.get_dict())
        futures = {}
        for label, settings in jobs.items():
            inputs = AttributeDict(self.exposed_inputs(AnnTrainBaseWorkChain, namespace="train"))
            inputs.train = AttributeDict(inputs.train)
            inputs.train.dataset = self.ctx.training
            inputs.train.validation_dataset = self.ctx.validation
            inputs.train.config = Dict(settings)
            inputs.metadata = {"call_link_label": label}
            futures[f"jobs.{label}"] = self.submit(AnnTrainBaseWorkChain, **inputs)
        self.report(
            f"training {len(config.descriptors)} descriptor(s) x {len(config.networks)} network(s) on "
            f"fractions {sorted(config.training_fractions)}: {len(jobs)} job(s)"
        )
        return ToContext(**futures)

    def inspect_training(self):
        """Record each failed job; its candidate becomes ineligible (the ranking says why), not the selection."""
        failed = {label: node for label, node in sorted(self.ctx.jobs.items()) if not node.is_finished_ok}
        self.ctx.failures = {
            label: f"{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}"
            for label, node in failed.items()
        }
        candidates = {label.rsplit("_", 1)[0] for label in self.ctx.jobs}
        eligible = candidates - {label.rsplit("_", 1)[0] for label in failed}
        self.report(
            f"{len(self.ctx.jobs) - len(failed)} of {len(self.ctx.jobs)} job(s) finished; "
            f"{len(eligible)} of {len(candidates)} candidate(s) eligible"
        )

    def rank_models(self):
        """Table, learning curves and choice; the table is an output even when no candidate can be chosen."""
        results = {}
        for label, node in sorted(self.ctx.jobs.items()):
            if node.is_finished_ok:
                results[f"metrics_{label}"] = node.outputs.metrics
                results.setdefault(f"potential_{label.rsplit('_', 1)[0]}", node.outputs.potential)
        self.ctx.ranking = steps.rank_models(
            self.inputs.grid,
            self.inputs.training,
            Dict(self.ctx.failures),
            **results,
            metadata={"call_link_label": "rank_models"},
        )
        table = self.ctx.ranking["table"].get_dict()
        if table["chosen"] is None:
            self.out("table", self.ctx.ranking["table"])
            reasons = "; ".join(f"{row['candidate']}: {row['ineligible_reason']}" for row in table["rows"])
            return self.exit_codes.ERROR_NO_ELIGIBLE_CANDIDATE.format(failures=reasons)
        row = table["rows"][table["chosen"]]
        full = row["fractions"][-1]
        self.report(
            f"chose {row['candidate']} ({_describe(row)}, {row['n_parameters']} parameters): validation "
            f"energy RMSE {full['validation_energy_rmse']:.3g} meV/atom, force RMSE "
            f"{full['validation_force_rmse']:.3g} eV/Å; {row['diagnosis']['summary']}"
        )
        return None

    def results(self):
        table = self.ctx.ranking["table"]
        chosen = table.get_dict()["chosen_candidate"]
        self.out("config", self.ctx.ranking["config"])
        self.out("table", table)
        self.out("potential", self.ctx.jobs[f"{chosen}_{fraction_label(1.0)}"].outputs.potential)
        self.out("training_dataset", self.ctx.training)
        self.out("validation_dataset", self.ctx.validation)
        for key, node in self.ctx.ranking.items():
            if key.startswith("curve_"):
                self.out(f"learning_curves.{key.removeprefix('curve_')}", node)


def _describe(row: dict) -> str:
    """``chebyshev Rc 4.5 Å, [16, 16] tanh``: the settings that tell candidates apart, for the report."""
    descriptor = row["descriptor"]
    cutoff = descriptor.get("radial_cutoff", descriptor.get("cutoff"))
    orders = ""
    if descriptor["type"] == "chebyshev":
        orders = f" orders {descriptor['radial_order']}/{descriptor['angular_order']}"
    return f"{descriptor['type']}{orders} Rc {cutoff} Å, {row['network']['hidden']} {row['network']['activation']}"
