"""``annpot.score``: a committee scores frames sampled elsewhere (``annpot score``).

Frames from another engine (LAMMPS, i-PI) or a user's trajectory file come in as a ``SinglefileData`` in one of
ASE's data formats (:data:`~aiida_annpot.core.scoring.FRAME_FORMATS`) and come back as the exploration's frames file,
each frame with the committee's deviations, smallest distance, fingerprint and extrapolation grade; the
``select_candidates`` calcfunction then selects from them exactly as from explored frames.
"""

from __future__ import annotations

from aiida.orm import ArrayData, Dict, SinglefileData, Str

from ..common.config import ScoringConfig
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .base import AnnpotCalculation, validate_config_dict

__all__ = ["AnnScoreCalculation"]

REFERENCE = "reference.extxyz"
PATH_KEYS = ("models", "frames", "reference_structures", "start")


def validate_scoring_config(value: Dict, _) -> str | None:
    """The settings (dtype, threads, format) must form a ScoringConfig once the calculation adds the paths."""
    return validate_config_dict(value, ScoringConfig, PATH_KEYS, {"models": ["member_0.safetensors"], "frames": "x"})


def _valid_start(value: Str, _) -> str | None:
    if not value.value.strip():
        return "start: give a non-empty key for the frames' origin"
    return None


class AnnScoreCalculation(AnnpotCalculation):
    """Score the frames of a trajectory file with a committee (``annpot score``)."""

    COMMAND = "score"
    CONFIG_FILE = "score.yaml"
    RETRIEVE = ("frames.extxyz", "summary.json", "reference_fingerprints.npy")

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("potential", valid_type=AnnPotential, help="The committee that scores the frames.")
        spec.input("frames", valid_type=SinglefileData, help="The trajectory file (extxyz, traj, xyz, ...).")
        spec.input(
            "start",
            valid_type=Str,
            default=lambda: Str("frames"),
            validator=_valid_start,
            help="Key recorded with every frame as its origin (reported with each pick).",
        )
        spec.input(
            "config",
            valid_type=Dict,
            default=lambda: Dict({}),
            validator=validate_scoring_config,
            help="ScoringConfig settings without paths: format, dtype, threads.",
        )
        spec.input(
            "reference_dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="The training set: its fingerprints feed the duplicate filter.",
        )
        spec.inputs["metadata"]["options"]["parser_name"].default = "annpot.score"
        spec.output("frames", valid_type=SinglefileData, help="Scored frames, in the exploration's frame format.")
        spec.output("summary", valid_type=Dict, help="Frame count and how many the committee could not evaluate.")
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
        source = self.inputs.frames
        name = f"input_{source.filename}"  # never the name of an output (frames.extxyz)
        with folder.open(name, "wb") as handle:
            handle.write(source.get_content(mode="rb"))
        config = {**self.inputs.config.get_dict(), "models": models, "frames": name, "start": self.inputs.start.value}
        if "reference_dataset" in self.inputs:
            self.inputs.reference_dataset.write_extxyz(folder.get_abs_path(REFERENCE))
            config["reference_structures"] = REFERENCE
        return config
