"""``annpot.committee``: K models trained in parallel on one dataset, assembled into a committee potential.

Member k trains with seed ``config.seed + k``; the seed sets its validation split, initial weights and batch order,
so the members differ as query by committee needs. Each member runs through :class:`AnnTrainBaseWorkChain`, which
resumes after wall time and lowers the learning rate after divergence. With a ``parent_potential`` member k
warm-starts from member k mod K' of it (fine-tuning on the grown dataset).
"""

from __future__ import annotations

import math

from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain
from aiida.orm import Dict, Int

from ..calcfunctions.committee import assemble_committee, natural_order
from ..calculations.train import validate_training_config
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .ports import at_least_one
from .train_base import AnnTrainBaseWorkChain

__all__ = ["CommitteeTrainingWorkChain"]

#: Validation errors averaged over members in the ``metrics`` output.
SUMMARY_METRICS = ("energy_rmse", "energy_mae", "force_rmse", "force_mae", "stress_rmse")


class CommitteeTrainingWorkChain(WorkChain):
    """Train a committee of ``committee_size`` models and assemble them into one AnnPotential."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("dataset", valid_type=AtomisticDataset, help="The labelled frames every member trains on.")
        spec.input(
            "config",
            valid_type=Dict,
            validator=validate_training_config,
            help="TrainingConfig settings without file paths; member k uses seed + k.",
        )
        spec.input(
            "committee_size",
            valid_type=Int,
            default=lambda: Int(4),
            validator=at_least_one("committee_size"),
            help="Number of members K (≥ 2 for a deviation; 1 trains a single model).",
        )
        spec.input(
            "parent_potential",
            valid_type=AnnPotential,
            required=False,
            help="Warm start: member k starts from member k mod K' of this potential.",
        )
        spec.expose_inputs(
            AnnTrainBaseWorkChain,
            namespace="train",
            exclude=(
                "train.dataset",
                "train.config",
                "train.parent_potential",
                "train.parent_member",
                "train.parent_folder",
            ),
            namespace_options={"help": "The annpot code, scheduler options and restart settings."},
        )
        spec.outline(cls.run_training, cls.inspect_training, cls.assemble, cls.results)
        spec.output("potential", valid_type=AnnPotential, help="The committee of all members.")
        spec.output_namespace("members", valid_type=AnnPotential, dynamic=True, help="Each member on its own.")
        spec.output_namespace("learning_curves", dynamic=True, help="Per-epoch arrays of each member's training.")
        spec.output(
            "metrics",
            valid_type=Dict,
            help="Each member's training and validation metrics and the validation mean over members.",
        )
        spec.exit_code(
            400, "ERROR_MEMBER_FAILED", message="{count} of {size} committee members failed to train: {failures}"
        )

    def run_training(self):
        size = self.inputs.committee_size.value
        config = self.inputs.config.get_dict()
        futures = {}
        for k in range(size):
            inputs = AttributeDict(self.exposed_inputs(AnnTrainBaseWorkChain, namespace="train"))
            inputs.train = AttributeDict(inputs.train)
            inputs.train.dataset = self.inputs.dataset
            inputs.train.config = Dict({**config, "seed": config.get("seed", 0) + k})
            if "parent_potential" in self.inputs:
                inputs.train.parent_potential = self.inputs.parent_potential
                inputs.train.parent_member = Int(k % self.inputs.parent_potential.committee_size)
            inputs.metadata = {"call_link_label": f"member_{k}"}
            futures[f"members.member_{k}"] = self.submit(AnnTrainBaseWorkChain, **inputs)
        start = "warm start" if "parent_potential" in self.inputs else "from scratch"
        self.report(f"training {size} member(s) on {self.inputs.dataset.n_frames} frames ({start})")
        return ToContext(**futures)

    def _members(self) -> list[tuple[str, object]]:
        """(key, AnnTrainBaseWorkChain node) of every member, member_0 first, member_10 after member_9."""
        return sorted(self.ctx.members.items(), key=lambda item: natural_order(item[0]))

    def inspect_training(self):
        failures = {key: node for key, node in self._members() if not node.is_finished_ok}
        if failures:
            text = "; ".join(f"{key} <{node.pk}> exit {node.exit_status}" for key, node in failures.items())
            return self.exit_codes.ERROR_MEMBER_FAILED.format(
                count=len(failures), size=len(self.ctx.members), failures=text
            )
        return None

    def assemble(self):
        members = {key: node.outputs.potential for key, node in self._members()}
        self.ctx.potential = assemble_committee(**members, metadata={"call_link_label": "assemble_committee"})

    def results(self):
        per_member = {key: node.outputs.metrics.get_dict() for key, node in self._members()}
        mean = {}
        for name in SUMMARY_METRICS:
            values = [m["validation"].get(name) for m in per_member.values()]
            finite = [v for v in values if v is not None and math.isfinite(v)]
            mean[name] = sum(finite) / len(finite) if len(finite) == len(values) else None
        metrics = Dict({"validation_mean": mean, "members": per_member}).store()
        for key, node in self._members():
            self.out(f"members.{key}", node.outputs.potential)
            self.out(f"learning_curves.{key}", node.outputs.learning_curve)
        self.out("potential", self.ctx.potential)
        self.out("metrics", metrics)
        self.report(
            f"committee ready: validation energy RMSE {_fmt(mean['energy_rmse'])} meV/atom, force RMSE "
            f"{_fmt(mean['force_rmse'])} eV/Å (mean over {len(per_member)} members)"
        )


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"
