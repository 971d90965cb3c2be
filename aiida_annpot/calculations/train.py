"""``annpot.train``: one committee member trained by ``annpot train`` on an AtomisticDataset.

The configuration is the engine's :class:`~aiida_annpot.common.config.TrainingConfig` without its file paths; it is
validated at submit time. A ``parent_potential`` warm-starts the weights (fine-tuning after new labels arrive); a
``parent_folder`` from a run stopped at its wall time resumes from its checkpoint.
"""

from __future__ import annotations

from aiida.orm import ArrayData, Dict, Int

from ..common.config import TrainingConfig
from ..common.contract import CHECKPOINT_FILE, CURVE_FILE, METRICS_FILE, MODEL_FILE
from ..core.baselines import ENTRY_POINT_GROUP, is_registered, registered_names
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .base import AnnpotCalculation, validate_config_dict
from .gpus import validate_gpu_request

__all__ = ["AnnTrainCalculation"]

DATASET = "dataset.extxyz"
VALIDATION_DATASET = "validation.extxyz"
INIT_MODEL = "init_model.safetensors"
PATH_KEYS = ("dataset", "validation_dataset", "init_model")


def validate_training_config(value: Dict, _) -> str | None:
    """The settings must form a valid TrainingConfig once the calculation adds the dataset path, with a registered
    baseline if any: an import path would be imported by the daemon and the cluster, where no one trusted it."""
    message = validate_config_dict(value, TrainingConfig, PATH_KEYS, {"dataset": DATASET})
    baseline = (value.get_dict().get("baseline") or {}).get("name")
    if message is None and baseline is not None and not is_registered(baseline):
        message = (
            f"baseline.name {baseline!r} is an import path: AiiDA processes take registered baselines only "
            f"({', '.join(registered_names())}); register the class under the entry point group {ENTRY_POINT_GROUP} "
            "of an installed package"
        )
    return message


def validate_inputs(inputs: dict, namespace) -> str | None:
    """The parent member must exist, the dataset must hold only elements the configuration covers, and GPUs asked
    for must be possible (:func:`~.gpus.validate_gpu_request`)."""
    message = validate_gpu_request(inputs, namespace)
    if message is not None or "config" not in namespace:  # exposed without its configuration: the wrapper checks it
        return message
    if "parent_member" in inputs:
        size = inputs["parent_potential"].committee_size if "parent_potential" in inputs else 0
        if not 0 <= inputs["parent_member"].value < size:
            return f"parent_member {inputs['parent_member'].value} is not a member of a committee of {size}"
    elements = inputs["config"].get_dict().get("elements")
    if elements is not None and "dataset" in inputs:
        missing = sorted(set(inputs["dataset"].elements) - set(elements))
        if missing:
            return f"dataset has element(s) {', '.join(missing)} not in config elements {elements}"
    return None


class AnnTrainCalculation(AnnpotCalculation):
    """Train one neural-network potential with ``annpot train``."""

    COMMAND = "train"
    CONFIG_FILE = "train.yaml"
    RETRIEVE = (MODEL_FILE, METRICS_FILE, CURVE_FILE)
    RESUME_FILES = (CHECKPOINT_FILE,)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input(
            "dataset",
            valid_type=AtomisticDataset,
            help="Labelled frames; a seeded split of them validates unless validation_dataset is given.",
        )
        spec.input(
            "validation_dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="Fixed validation frames (instead of a split of the dataset).",
        )
        spec.input(
            "config",
            valid_type=Dict,
            validator=validate_training_config,
            help="TrainingConfig settings (descriptor, network, loss, optimiser, seed, ...) without file paths.",
        )
        spec.input(
            "parent_potential",
            valid_type=AnnPotential,
            required=False,
            help="Warm start: the weights of one member of this potential (same architecture) are the start.",
        )
        spec.input(
            "parent_member",
            valid_type=Int,
            required=False,
            help="Which member of parent_potential to start from (default 0).",
        )
        spec.inputs.validator = validate_inputs
        spec.inputs["metadata"]["options"]["parser_name"].default = "annpot.train"
        spec.output("potential", valid_type=AnnPotential, help="The trained model (a committee of one).")
        spec.output(
            "metrics", valid_type=Dict, help="Training and validation errors (meV/atom, eV/Å, GPa), epochs, wall time."
        )
        spec.output(
            "learning_curve",
            valid_type=ArrayData,
            help="Per-epoch arrays: learning rate, training and validation losses and errors.",
        )
        spec.exit_code(
            400,
            "ERROR_TRAINING_DIVERGED",
            message="training diverged: {message}; a rerun with a lower learning rate may recover.",
        )
        spec.default_output_node = "metrics"

    def engine_config(self, folder) -> dict:
        config = {**self.inputs.config.get_dict(), "dataset": DATASET}
        self.inputs.dataset.write_extxyz(folder.get_abs_path(DATASET))
        if "validation_dataset" in self.inputs:
            self.inputs.validation_dataset.write_extxyz(folder.get_abs_path(VALIDATION_DATASET))
            config["validation_dataset"] = VALIDATION_DATASET
        if "parent_potential" in self.inputs:
            member = self.inputs.parent_member.value if "parent_member" in self.inputs else 0
            content = self.inputs.parent_potential.member_bytes(member)
            with folder.open(INIT_MODEL, "wb") as handle:
                handle.write(content)
            config["init_model"] = INIT_MODEL
        return config
