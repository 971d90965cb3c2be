"""``annpot.active_learning``: the campaign. Initial structures → loop { reference → merge → committee →
exploration → selection } until the committee stops finding new configurations.

Converged means: the campaign has reached the last entry of its stage schedule, the accurate ratio of the last
exploration stage reaches ``conv_accuracy`` and the committee's mean validation errors meet ``validation_targets``.
After ``max_iterations`` without convergence the campaign still returns its potential and dataset, with a warning
exit code. Each iteration adds one row to the ``iterations``
output (and, while it runs, to the node's ``annpot_iterations`` extra, which ``aiida-annpot status`` shows).
"""

from __future__ import annotations

from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, while_
from aiida.orm import Bool, Dict, Float, Int, List, StructureData
from aiida_quantumespresso.calculations.functions.create_kpoints_from_distance import create_kpoints_from_distance

from ..calcfunctions import structures as generate
from ..common.config import GenerationConfig, load_config
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .campaign_inputs import validate_generation, validate_inputs, validate_stage_schedule, validate_targets
from .committee import CommitteeTrainingWorkChain
from .exploration import ExplorationWorkChain, deal_start_structures
from .generation import generate_copies
from .protocols import ProtocolMixin
from .protocols.builder import fill_builder
from .reference import ReferenceWorkChain

__all__ = ["ActiveLearningWorkChain"]

#: Extra on the campaign node with the iteration rows so far (for live status).
ITERATIONS_EXTRA = "annpot_iterations"


class ActiveLearningWorkChain(ProtocolMixin, WorkChain):
    """Build a committee potential by active learning with Quantum ESPRESSO labels."""

    _protocol_file = "active_learning.yaml"

    @classmethod
    def get_builder_from_protocol(cls, pw_code, annpot_code, structures, pseudo_family: str,
                                  protocol: str | None = None, overrides: dict | None = None,
                                  options: dict | None = None):  # fmt: skip
        """A builder with every input set from ``protocol`` (fast / balanced / stringent) and ``overrides``.

        :param pw_code: the ``pw.x`` code (``quantumespresso.pw``).
        :param annpot_code: the ``annpot`` code that runs training and exploration.
        :param structures: input structures, a mapping (keys kept) or a sequence (keys s00, s01, …).
        :param pseudo_family: label of an aiida-pseudo family covering every element.
        :param overrides: nested changes of the protocol inputs; unknown keys raise ValueError. Not modified.
        :param options: scheduler options for every CalcJob (queue, account, resources of pw.x, wall time).
        """
        inputs = cls.get_protocol_inputs(protocol, overrides)
        return fill_builder(cls.get_builder(), inputs, pw_code, annpot_code, structures, pseudo_family, options)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace(
            "structures",
            valid_type=StructureData,
            dynamic=True,
            help="Input structures (e.g. primitive cells); supercells of them start every MD stage.",
        )
        spec.input(
            "generation",
            valid_type=Dict,
            default=lambda: Dict({}),
            validator=validate_generation,
            help="GenerationConfig: supercell, strains, rattles, vacancies, slabs for the first DFT set.",
        )
        spec.input(
            "dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="Labelled frames to start from (same DFT settings as `reference`).",
        )
        spec.input(
            "max_iterations",
            valid_type=Int,
            default=lambda: Int(5),
            help="Stop after this many iterations even if not converged (warning exit code).",
        )
        spec.input(
            "conv_accuracy",
            valid_type=Float,
            default=lambda: Float(0.95),
            help="Converged when this share of the last stage's frames is accurate (σ_F^max < trust_lo) ...",
        )
        spec.input(
            "validation_targets",
            valid_type=Dict,
            default=lambda: Dict({}),
            validator=validate_targets,
            help="... and the mean validation errors meet these: energy_rmse (meV/atom), force_rmse (eV/Å).",
        )
        spec.input(
            "warm_start",
            valid_type=Bool,
            default=lambda: Bool(True),
            help="Members of iteration i+1 start from the weights of iteration i.",
        )
        spec.input(
            "exploration_config",
            valid_type=Dict,
            help="ExplorationConfig settings without file paths and stages (thermostat, selection, ...).",
        )
        spec.input(
            "stage_schedule",
            valid_type=List,
            validator=validate_stage_schedule,
            help="Iteration i explores with stages stage_schedule[min(i, len - 1)]: a list of lists of "
            "ExplorationStage settings, so the exploration can grow hotter and longer.",
        )
        spec.expose_inputs(
            ReferenceWorkChain,
            namespace="reference",
            exclude=("structures", "dataset"),
            namespace_options={"help": "DFT labelling: pseudo family, PwBaseWorkChain settings."},
        )
        spec.expose_inputs(
            CommitteeTrainingWorkChain,
            namespace="committee",
            exclude=("dataset", "parent_potential"),
            namespace_options={"help": "Committee training: size, TrainingConfig, annpot code."},
        )
        spec.expose_inputs(
            ExplorationWorkChain,
            namespace="exploration",
            exclude=("potential", "structures", "reference_dataset", "config"),
            namespace_options={"help": "Exploration jobs: number, annpot code, options."},
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.generate_structures,
            while_(cls.should_run_iteration)(
                cls.run_reference,
                cls.inspect_reference,
                cls.run_committee,
                cls.inspect_committee,
                cls.run_exploration,
                cls.inspect_exploration,
            ),
            cls.results,
        )
        spec.output("potential", valid_type=AnnPotential, help="The committee of the last iteration.")
        spec.output("dataset", valid_type=AtomisticDataset, help="All DFT labels of the campaign.")
        spec.output(
            "iterations",
            valid_type=List,
            help="Per iteration: labels added and failed (with reasons), dataset size, validation errors, "
            "accurate / candidate / failed ratios, share of frames outside the training descriptor ranges, "
            "structures selected, converged.",
        )
        spec.exit_code(401, "ERROR_NO_USABLE_LABELS", message="no usable DFT label in iteration {iteration}: {message}")
        spec.exit_code(402, "ERROR_REFERENCE_FAILED", message="the DFT labelling failed: {message}")
        spec.exit_code(403, "ERROR_COMMITTEE_FAILED", message="committee training failed: {message}")
        spec.exit_code(404, "ERROR_EXPLORATION_FAILED", message="exploration failed: {message}")
        spec.exit_code(
            410,
            "WARNING_NOT_CONVERGED",
            message="not converged after {iterations} iteration(s): {reason}; outputs are the last ones",
        )
        spec.exit_code(411, "WARNING_NOTHING_TO_LABEL",
                       message="iteration {iteration} selected no new structure but is not converged ({reason}); "
                       "widen the trust window or change the stages")  # fmt: skip

    # --- setup --------------------------------------------------------------------------------------------------
    def setup(self):
        self.ctx.iteration = 0
        self.ctx.rows = []
        self.ctx.dataset = self.inputs.get("dataset")
        self.ctx.potential = None
        self.ctx.stop = None  # why the loop ends: "converged", "max_iterations" or "nothing_to_label"
        self.ctx.meshes = {}  # input structure key → the k-point mesh of its supercell, shared by all its copies
        self.ctx.mesh_of = {}  # label key → input structure key whose mesh it uses

    def _fix_kpoints(self, key: str, cell: StructureData) -> None:
        """One mesh per input structure, from the campaign's k-point distance on its ideal supercell."""
        pw_base = self.inputs.reference.pw_base
        if "kpoints_distance" not in pw_base:
            return  # an explicit mesh for every structure already
        self.ctx.meshes[key] = create_kpoints_from_distance(
            cell, pw_base.kpoints_distance, pw_base.get("kpoints_force_parity", Bool(False)),
            metadata={"call_link_label": f"kpoints_{key}"},
        )  # fmt: skip

    def generate_structures(self):
        """Supercells of the inputs start the MD; strained, rattled, defective copies are the first DFT set."""
        settings = load_config(self.inputs.generation.get_dict(), GenerationConfig)
        self.ctx.starts, self.ctx.to_label = {}, {}
        for key, structure in sorted(self.inputs.structures.items()):
            cell = generate.supercell_structure(structure, List(settings.supercell),
                                                metadata={"call_link_label": f"supercell_{key}"})  # fmt: skip
            self.ctx.starts[key] = cell
            made = generate_copies(cell, key, settings)
            self.ctx.to_label.update({f"{key}_{name}": node for name, node in made.items()})
            self._fix_kpoints(key, cell)
            self.ctx.mesh_of.update({f"{key}_{name}": key for name in made if not name.startswith("slab")})
        self.report(f"generated {len(self.ctx.to_label)} initial structure(s) to label from "
                    f"{len(self.inputs.structures)} input structure(s)")  # fmt: skip

    def should_run_iteration(self) -> bool:
        return self.ctx.stop is None

    # --- one iteration ------------------------------------------------------------------------------------------
    def run_reference(self):
        self.ctx.iteration += 1
        self.ctx.row = {"iteration": self.ctx.iteration, "labels_submitted": len(self.ctx.to_label)}
        inputs = AttributeDict(self.exposed_inputs(ReferenceWorkChain, namespace="reference"))
        inputs.structures = self.ctx.to_label
        meshes = {label: self.ctx.meshes[key] for label, key in self.ctx.mesh_of.items()
                  if label in self.ctx.to_label and key in self.ctx.meshes}  # fmt: skip
        if meshes:
            inputs.kpoints = meshes
        if self.ctx.dataset is not None:
            inputs.dataset = self.ctx.dataset
        inputs.metadata = {"call_link_label": f"reference_{self.ctx.iteration:02d}"}
        self.report(f"iteration {self.ctx.iteration}: DFT labels for {len(self.ctx.to_label)} structure(s)")
        return ToContext(reference=self.submit(ReferenceWorkChain, **inputs))

    def inspect_reference(self):
        node = self.ctx.reference
        failed = node.outputs.failed.get_dict() if "failed" in node.outputs else {}
        self.ctx.row.update({"labels_failed": len(failed),
                             "failures": {key: entry["reason"] for key, entry in failed.items()}})  # fmt: skip
        if node.exit_status == ReferenceWorkChain.exit_codes.ERROR_NO_USABLE_LABELS.status:
            return self._fail(self.exit_codes.ERROR_NO_USABLE_LABELS.format(iteration=self.ctx.iteration,
                                                                           message=node.exit_message))  # fmt: skip
        if not node.is_finished_ok:
            return self._fail(self.exit_codes.ERROR_REFERENCE_FAILED.format(message=_failure(node)))
        before = self.ctx.dataset.n_frames if self.ctx.dataset is not None else 0
        self.ctx.dataset = node.outputs.dataset
        self.ctx.row.update({"labels_added": self.ctx.dataset.n_frames - before,
                             "dataset_frames": self.ctx.dataset.n_frames})  # fmt: skip
        self.report(f"iteration {self.ctx.iteration}: {self.ctx.row['labels_added']} label(s) added, "
                    f"{len(failed)} failed; dataset has {self.ctx.dataset.n_frames} frames")  # fmt: skip
        self._publish()
        return None

    def run_committee(self):
        inputs = AttributeDict(self.exposed_inputs(CommitteeTrainingWorkChain, namespace="committee"))
        inputs.dataset = self.ctx.dataset
        if self.ctx.potential is not None and self.inputs.warm_start.value:
            inputs.parent_potential = self.ctx.potential
        inputs.metadata = {"call_link_label": f"committee_{self.ctx.iteration:02d}"}
        return ToContext(committee=self.submit(CommitteeTrainingWorkChain, **inputs))

    def inspect_committee(self):
        node = self.ctx.committee
        if not node.is_finished_ok:
            return self._fail(self.exit_codes.ERROR_COMMITTEE_FAILED.format(message=_failure(node)))
        self.ctx.potential = node.outputs.potential
        self.ctx.row["validation"] = node.outputs.metrics["validation_mean"]
        self._publish()
        return None

    def run_exploration(self):
        schedule = self.inputs.stage_schedule.get_list()
        stages = schedule[min(self.ctx.iteration, len(schedule)) - 1]
        inputs = AttributeDict(self.exposed_inputs(ExplorationWorkChain, namespace="exploration"))
        inputs.potential = self.ctx.potential
        inputs.structures = self.ctx.starts
        inputs.reference_dataset = self.ctx.dataset
        inputs.config = Dict({**self.inputs.exploration_config.get_dict(), "stages": stages})
        inputs.metadata = {"call_link_label": f"exploration_{self.ctx.iteration:02d}"}
        return ToContext(exploration=self.submit(ExplorationWorkChain, **inputs))

    def inspect_exploration(self):
        node = self.ctx.exploration
        if not node.is_finished_ok:
            return self._fail(self.exit_codes.ERROR_EXPLORATION_FAILED.format(message=_failure(node)))
        summary = node.outputs.summary.get_dict()
        last_stage = summary["stages"][-1]["ratios"] if summary["stages"] else summary["ratios"]
        selected = dict(sorted(node.outputs.selected.items())) if "selected" in node.outputs else {}
        self.ctx.row.update({"frames": summary["frames"], "ratios": summary["ratios"],
                             "last_stage_ratios": last_stage, "selected": len(selected),
                             "out_of_range": summary.get("extrapolation", {}).get("ratio")})  # fmt: skip
        unmet = self._unmet(last_stage["accurate"])
        self.ctx.row["converged"] = not unmet
        if not unmet:
            self.ctx.stop = "converged"
            self.report(
                f"iteration {self.ctx.iteration}: converged (last stage accurate "
                f"{last_stage['accurate']:.3f} ≥ {self.inputs.conv_accuracy.value}, validation targets met)"
            )
        elif self.ctx.iteration >= self.inputs.max_iterations.value:
            self.ctx.stop = "max_iterations"
        elif not selected:
            self.ctx.stop = "nothing_to_label"
        else:
            self.ctx.to_label = {f"it{self.ctx.iteration:02d}_{key.split('_')[-1]}": s for key, s in selected.items()}
            self._trace_meshes(summary["selected"])
            self.report(f"iteration {self.ctx.iteration}: not converged ({'; '.join(unmet)}); "
                        f"{len(selected)} new structure(s) to label")  # fmt: skip
        self.ctx.row["unmet"] = unmet
        self.ctx.rows.append(self.ctx.row)
        self._publish(final=True)
        return None

    def _trace_meshes(self, picks: list[dict]) -> None:
        """A selected frame uses the mesh of the start structure its trajectory began from."""
        dealt = deal_start_structures(self.ctx.starts, self.inputs.exploration.num_jobs.value)
        for rank, pick in enumerate(picks):
            job = int(pick["origin"].split("_")[-1])
            self.ctx.mesh_of[f"it{self.ctx.iteration:02d}_{rank:03d}"] = dealt[job][pick["structure"]]

    def _unmet(self, accurate: float) -> list[str]:
        """Convergence criteria not met yet, as readable phrases.

        A campaign converges only once it explores with the last entry of its stage schedule: agreement at the
        early, gentler stages says nothing about the conditions the schedule is heading for.
        """
        unmet = []
        scheduled = len(self.inputs.stage_schedule.get_list())
        if self.ctx.iteration < scheduled:
            unmet.append(f"stage schedule not complete (iteration {self.ctx.iteration} of {scheduled})")
        if accurate < self.inputs.conv_accuracy.value:
            unmet.append(f"last stage accurate {accurate:.3f} < {self.inputs.conv_accuracy.value}")
        validation = self.ctx.row.get("validation", {})
        for key, target in self.inputs.validation_targets.get_dict().items():
            value = validation.get(key)
            if value is None or value > target:
                unmet.append(f"validation {key} {value if value is None else round(value, 4)} > {target}")
        return unmet

    # --- bookkeeping --------------------------------------------------------------------------------------------
    def _publish(self, final: bool = False) -> None:
        """Rows so far (plus the running one) on the node's extras, for status while the campaign runs."""
        rows = list(self.ctx.rows) if final else [*self.ctx.rows, {**self.ctx.row, "running": True}]
        self.node.base.extras.set(ITERATIONS_EXTRA, rows)

    def _fail(self, exit_code):
        self.ctx.rows.append({**self.ctx.row, "failed": exit_code.message})
        self._publish(final=True)
        self._attach_outputs()
        return exit_code

    def _attach_outputs(self) -> None:
        if self.ctx.potential is not None:
            self.out("potential", self.ctx.potential)
        if self.ctx.dataset is not None:
            self.out("dataset", self.ctx.dataset)
        self.out("iterations", List(self.ctx.rows).store())

    def results(self):
        self._attach_outputs()
        last = self.ctx.rows[-1]
        if self.ctx.stop == "max_iterations":
            return self.exit_codes.WARNING_NOT_CONVERGED.format(iterations=self.ctx.iteration,
                                                                reason="; ".join(last["unmet"]))  # fmt: skip
        if self.ctx.stop == "nothing_to_label":
            return self.exit_codes.WARNING_NOTHING_TO_LABEL.format(iteration=self.ctx.iteration,
                                                                   reason="; ".join(last["unmet"]))  # fmt: skip
        self.report(f"campaign converged after {self.ctx.iteration} iteration(s) with {self.ctx.dataset.n_frames} "
                    "DFT labels")  # fmt: skip
        return None


def _failure(node) -> str:
    return f"{node.process_label}<{node.pk}> exit status {node.exit_status}: {node.exit_message}"
