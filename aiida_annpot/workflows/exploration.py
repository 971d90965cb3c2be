"""``annpot.exploration``: committee MD from start structures over a schedule of stages, then selection.

The start structures are dealt round-robin to ``num_jobs`` exploration jobs (each an
:class:`AnnExploreBaseWorkChain`, so a wall-time stop resumes). The jobs sample and score frames; the frames of all
jobs then go through one ``select_candidates`` step, so the trust window, duplicate filter, farthest-point sampling
and cap act on the whole exploration at once. Each pick names the start structure its trajectory began from.
"""

from __future__ import annotations

from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain
from aiida.orm import ArrayData, Dict, Int, StructureData

from ..calcfunctions.selection import select_candidates
from ..calculations.base import validate_config_dict
from ..calculations.explore import validate_exploration_config, validate_start_structures
from ..common.config import SelectionConfig
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .explore_base import CALLER_SET_INPUTS, AnnExploreBaseWorkChain
from .ports import at_least_one

__all__ = ["ExplorationWorkChain", "deal_start_structures", "validate_selection"]


def validate_selection(value: Dict, _) -> str | None:
    return validate_config_dict(value, SelectionConfig, path_keys=(), placeholders={})


def deal_start_structures(keys, num_jobs: int) -> list[list[str]]:
    """The start-structure keys of each exploration job: the sorted keys dealt round-robin to
    min(num_jobs, len(keys)) jobs. A frame's ``structure`` is the index of its start in its job's list."""
    keys = sorted(keys)
    jobs = min(num_jobs, len(keys))
    return [keys[j::jobs] for j in range(jobs)]


class ExplorationWorkChain(WorkChain):
    """Explore with the committee and select the frames to label next."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("potential", valid_type=AnnPotential, help="The committee that drives MD and measures deviation.")
        spec.input_namespace(
            "structures",
            valid_type=StructureData,
            dynamic=True,
            help="Start structures; each runs through every stage.",
        )
        spec.input(
            "config",
            valid_type=Dict,
            validator=validate_exploration_config,
            help="ExplorationConfig settings without file paths: stages, thermostat, ...",
        )
        spec.input(
            "selection",
            valid_type=Dict,
            default=lambda: Dict({}),
            validator=validate_selection,
            help="SelectionConfig: trust window, duplicate filter, caps; applied once over the frames of all jobs.",
        )
        spec.input(
            "reference_dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="The training set, for the duplicate filter of the selection.",
        )
        spec.input(
            "num_jobs",
            valid_type=Int,
            default=lambda: Int(1),
            validator=at_least_one("num_jobs"),
            help="Number of exploration jobs the start structures are spread over.",
        )
        spec.expose_inputs(
            AnnExploreBaseWorkChain,
            namespace="explore",
            exclude=CALLER_SET_INPUTS,
            namespace_options={"help": "The annpot code, scheduler options and restart settings."},
        )
        spec.inputs.validator = validate_start_structures
        spec.outline(cls.run_exploration, cls.inspect_exploration, cls.select, cls.results)
        spec.output_namespace(
            "selected", valid_type=StructureData, dynamic=True, help="The structures to label next, in pick order."
        )
        spec.output(
            "summary",
            valid_type=Dict,
            help="Accurate / candidate / failed counts and ratios overall and per stage; the picks.",
        )
        spec.output("deviations", valid_type=ArrayData, help="Per frame: max_force_std, stage, selected.")
        spec.exit_code(400, "ERROR_EXPLORATION_FAILED", message="{count} exploration job(s) failed: {failures}")

    def run_exploration(self):
        dealt = deal_start_structures(self.inputs.structures, self.inputs.num_jobs.value)
        futures = {}
        for j, keys in enumerate(dealt):
            inputs = AttributeDict(self.exposed_inputs(AnnExploreBaseWorkChain, namespace="explore"))
            inputs.explore = AttributeDict(inputs.explore)
            inputs.explore.potential = self.inputs.potential
            inputs.explore.structures = {key: self.inputs.structures[key] for key in keys}
            inputs.explore.config = self.inputs.config
            if "reference_dataset" in self.inputs:
                inputs.explore.reference_dataset = self.inputs.reference_dataset
            inputs.metadata = {"call_link_label": f"explore_{j}"}
            futures[f"jobs.explore_{j}"] = self.submit(AnnExploreBaseWorkChain, **inputs)
        stages = self.inputs.config["stages"]
        temperatures = ", ".join(
            f"{s['temperature']:g} K" + (f" {s['pressure']:g} GPa" if s.get("pressure") is not None else "")
            for s in stages
        )
        self.report(
            f"exploring {len(self.inputs.structures)} start structure(s) in {len(dealt)} job(s) over "
            f"{len(stages)} stage(s): {temperatures}"
        )
        return ToContext(**futures)

    def inspect_exploration(self):
        failures = {key: node for key, node in sorted(self.ctx.jobs.items()) if not node.is_finished_ok}
        if failures:
            text = "; ".join(f"{key} <{node.pk}> exit {node.exit_status}" for key, node in failures.items())
            return self.exit_codes.ERROR_EXPLORATION_FAILED.format(count=len(failures), failures=text)
        return None

    def select(self):
        jobs = sorted(self.ctx.jobs.items())
        inputs = {f"frames_{key.split('_')[-1]}": node.outputs.frames for key, node in jobs}
        reference = [
            node.outputs.reference_fingerprints for _, node in jobs if "reference_fingerprints" in node.outputs
        ]

        if reference:
            inputs["reference_fingerprints"] = reference[0]  # the same potential and training set for every job
        self.ctx.selection = select_candidates(
            selection_settings=self.inputs.selection, **inputs, metadata={"call_link_label": "select_candidates"}
        )

    def results(self):
        outputs = self.ctx.selection
        summary = outputs["summary"]
        for key, node in outputs.items():
            if key.startswith("structure_"):
                self.out(f"selected.{key}", node)
        self.out("summary", summary)
        self.out("deviations", outputs["deviations"])
        ratios = summary["ratios"]
        last = summary["stages"][-1]["ratios"] if summary["stages"] else ratios
        self.report(
            f"{summary['frames']} frames: accurate {ratios['accurate']:.2f}, candidate "
            f"{ratios['candidate']:.2f}, failed {ratios['failed']:.2f} (last stage accurate "
            f"{last['accurate']:.2f}); {len(summary['selected'])} selected for labelling"
        )
