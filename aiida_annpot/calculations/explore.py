"""``annpot.explore``: committee molecular dynamics by ``annpot explore`` from start structures.

The configuration is the engine's :class:`~aiida_annpot.common.config.ExplorationConfig` without its file paths;
it is validated at submit time. The frames come back as one extxyz file with, per frame, the committee's energy and
force deviations, the smallest interatomic distance, a fingerprint, an extrapolation grade and the key of its start
structure (in the ``structures`` namespace). The job samples and scores; the selection runs once over all jobs
(``select_candidates``). With a ``reference_dataset`` (the training set) the engine also returns the training
structures' fingerprints, which the duplicate filter of the selection needs. A ``parent_folder`` from a run stopped
at its wall time resumes from its last frame.
"""

from __future__ import annotations

import ase.io
from aiida.orm import ArrayData, Dict, SinglefileData, StructureData

from ..common.config import ExplorationConfig
from ..core.explored import encode_key  # torch-free
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .base import AnnpotCalculation, validate_config_dict
from .gpus import validate_gpu_request

__all__ = ["AnnExploreCalculation", "validate_exploration_config", "validate_start_structures"]

STRUCTURES = "structures.extxyz"
REFERENCE = "reference.extxyz"
PATH_KEYS = ("models", "structures", "reference_structures")


def validate_exploration_config(value: Dict, _) -> str | None:
    """The settings must form a valid ExplorationConfig once the calculation adds the file paths."""
    placeholders = {"models": ["member_0.safetensors"], "structures": STRUCTURES}
    return validate_config_dict(value, ExplorationConfig, PATH_KEYS, placeholders)


def validate_start_structures(inputs: dict, namespace) -> str | None:
    """There must be start structures, the potential must cover all their elements, and GPUs asked for must be
    possible (:func:`~.gpus.validate_gpu_request`)."""
    message = validate_gpu_request(inputs, namespace)
    if message is not None or "structures" not in namespace:  # exposed without its structures: the wrapper checks
        return message
    structures = inputs.get("structures", {})
    if not structures:
        return "no start structures: the structures namespace is empty"
    if "potential" in inputs:
        covered = set(inputs["potential"].elements)
        for key, structure in structures.items():
            missing = sorted(set(structure.get_symbols_set()) - covered)
            if missing:
                return f"start structure {key} has element(s) {', '.join(missing)} the potential does not cover"
    return None


class AnnExploreCalculation(AnnpotCalculation):
    """Explore configuration space with committee MD (``annpot explore``)."""

    COMMAND = "explore"
    CONFIG_FILE = "explore.yaml"
    RETRIEVE = ("frames.extxyz", "summary.json", "reference_fingerprints.npy")
    RESUME_FILES = ("frames.extxyz", "progress.json")

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("potential", valid_type=AnnPotential, help="The committee whose disagreement guides selection.")
        spec.input_namespace(
            "structures",
            valid_type=StructureData,
            dynamic=True,
            help="Start structures, run in the order of their keys through every stage.",
        )
        spec.input(
            "config",
            valid_type=Dict,
            validator=validate_exploration_config,
            help="ExplorationConfig settings (stages, thermostat, ...) without file paths.",
        )
        spec.input(
            "reference_dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="The training set: candidates too similar to it are dropped as duplicates.",
        )
        spec.inputs.validator = validate_start_structures
        spec.inputs["metadata"]["options"]["parser_name"].default = "annpot.explore"
        spec.output(
            "frames",
            valid_type=SinglefileData,
            help="Sampled frames (extxyz) with committee energy, deviations, smallest distance, fingerprint.",
        )
        spec.output(
            "summary",
            valid_type=Dict,
            help="Frame counts overall and per stage, and how each trajectory ended.",
        )
        spec.output(
            "reference_fingerprints",
            valid_type=ArrayData,
            required=False,
            help="(R, D) fingerprints of the reference_dataset structures, array 'fingerprints'.",
        )
        spec.default_output_node = "summary"

    def engine_config(self, folder) -> dict:
        models = []
        for index in range(self.inputs.potential.committee_size):
            name = AnnPotential.member_name(index)
            with folder.open(name, "wb") as handle:
                handle.write(self.inputs.potential.member_bytes(index))
            models.append(name)
        starts = []
        for key in sorted(self.inputs.structures):
            atoms = self.inputs.structures[key].get_ase()
            atoms.info["key"] = encode_key(key)  # recorded with every frame, so a pick names its start structure
            starts.append(atoms)
        ase.io.write(folder.get_abs_path(STRUCTURES), starts, format="extxyz")
        config = {**self.inputs.config.get_dict(), "models": models, "structures": STRUCTURES}
        if "reference_dataset" in self.inputs:
            self.inputs.reference_dataset.write_extxyz(folder.get_abs_path(REFERENCE))
            config["reference_structures"] = REFERENCE
        return config
