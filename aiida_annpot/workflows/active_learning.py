"""``annpot.active_learning``: the campaign. Initial structures → loop { reference → merge → committee →
exploration → selection } until the committee stops finding new configurations.

An independent test set (generated with its own seed and ranges by ``test_set``, given as ``test_structures``, or
given labelled as ``test_dataset``) is labelled once with the same DFT settings and never trained on; every
iteration scores its committee on it (errors per kind of structure, V0 and B0 of an energy–volume series, the
vacancy formation energy).

Converged means: the campaign has reached the last entry of its stage schedule, the accurate ratio of the last
exploration stage reaches ``conv_accuracy``, the committee's mean validation errors meet ``validation_targets``
and its test-set figures meet ``test_targets``.
After ``max_iterations`` without convergence the campaign still returns its potential and dataset, with a warning
exit code. Each iteration adds one row to the ``iterations``
output (and, while it runs, to the node's ``annpot_iterations`` extra, which ``aiida-annpot status`` shows).
"""

from __future__ import annotations

from aiida.common import AttributeDict
from aiida.engine import ExitCode, ToContext, WorkChain, if_, while_
from aiida.orm import Bool, Dict, Float, Int, List, StructureData, load_node

from ..calcfunctions import structures as generate
from ..common.config import GenerationConfig, TestSetConfig, load_config
from ..core.testset import targets_unmet
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .campaign_inputs import (
    split_exploration_config,
    validate_generation,
    validate_inputs,
    validate_stage_schedule,
    validate_start_supercells,
    validate_targets,
)
from .campaign_structures import CampaignStructures
from .campaign_test_set import TestSetSteps, define_test_set
from .committee import CommitteeTrainingWorkChain
from .exploration import ExplorationWorkChain
from .messages import failure_text
from .protocols import ProtocolMixin, merge
from .protocols.builder import fill_builder
from .protocols.schema import check_protocol_inputs
from .published import ITERATIONS_EXTRA
from .reference import ReferenceWorkChain

__all__ = ["ITERATIONS_EXTRA", "ActiveLearningWorkChain"]


class ActiveLearningWorkChain(ProtocolMixin, TestSetSteps, WorkChain):
    """Build a committee potential by active learning with reference labels from one labeller (DFT code)."""

    _protocol_file = "active_learning.yaml"
    _protocol_schema = staticmethod(check_protocol_inputs)

    @classmethod
    def get_builder_from_protocol(
        cls,
        labeller_code,
        annpot_code,
        structures,
        pseudo_family: str | None = None,
        protocol: str | None = None,
        overrides: dict | None = None,
        options: dict | None = None,
        labeller: str | None = None,
    ):
        """A builder with every input set from ``protocol`` (fast / balanced / stringent) and ``overrides``.

        :param labeller_code: the reference code (pw.x for ``quantumespresso``, cp2k for ``cp2k``).
        :param annpot_code: the ``annpot`` code that runs training and exploration.
        :param structures: input structures, a mapping (keys kept) or a sequence (keys s00, s01, …).
        :param pseudo_family: for Quantum ESPRESSO, the label of an aiida-pseudo family covering every element
            (the same as ``overrides={"reference": {"quantumespresso": {"pseudo_family": ...}}}``).
        :param overrides: nested changes of the protocol inputs; unknown keys raise ValueError. Not modified.
        :param options: scheduler options for every CalcJob (queue, account, resources of the reference code, wall
            time).
        :param labeller: the reference code's labeller (default: the protocol's ``reference.labeller``).
        """
        changes: dict = {}
        if labeller is not None:
            changes["labeller"] = labeller
        if pseudo_family is not None:
            changes["quantumespresso"] = {"pseudo_family": pseudo_family}
        overrides = merge(overrides or {}, {"reference": changes} if changes else {})
        inputs = cls.get_protocol_inputs(protocol, overrides)
        return fill_builder(cls.get_builder(), inputs, labeller_code, annpot_code, structures, options)

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
        define_test_set(spec)
        spec.input(
            "start_supercells",
            valid_type=List,
            default=lambda: List([[1, 1, 1]]),
            validator=validate_start_supercells,
            help="Exploration start cells: repetitions of each generated supercell (a larger cell than the DFT "
            "cell lets longer-range environments appear).",
        )
        spec.input(
            "start_vacancies",
            valid_type=Bool,
            default=lambda: Bool(False),
            help="The first generated vacancy structure of each input structure starts MD too.",
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
            help="ExplorationConfig settings without file paths and stages (thermostat, ...), and `selection` "
            "(SelectionConfig), which applies once over the frames of every exploration job.",
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
            exclude=("structures", "dataset", "cells"),
            namespace_options={"help": "Reference labels: the labeller (code) and its settings."},
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
            exclude=("potential", "structures", "reference_dataset", "config", "selection"),
            namespace_options={"help": "Exploration jobs: number, annpot code, options."},
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            cls.generate_structures,
            while_(cls.should_run_iteration)(
                cls.start_iteration,
                if_(cls.has_new_labels)(
                    cls.run_reference,
                    cls.inspect_reference,
                    cls.run_committee,
                    cls.inspect_committee,
                ),
                cls.run_exploration,
                cls.inspect_exploration,
            ),
            if_(cls.should_label_md_test_frames)(cls.run_md_test_labels, cls.inspect_md_test_labels),
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
        spec.exit_code(
            411,
            "WARNING_NOTHING_TO_LABEL",
            message="iteration {iteration} selected no new structure but is not converged ({reason}); "
            "widen the trust window or change the stages",
        )

    # --- setup --------------------------------------------------------------------------------------------------
    def setup(self):
        self.ctx.iteration = 0
        self.ctx.rows = []
        self.ctx.dataset = self.inputs.get("dataset")
        self.ctx.potential = None
        self.ctx.stop = None  # why the loop ends: "converged", "max_iterations", "nothing_to_label"; or "final_test"
        self.ctx.cells = {}  # cell key → an ideal cell, whose labeller inputs (k-point mesh) all its copies share
        self.ctx.cell_of = {}  # label key or start cell → the key of the cell it is a copy of
        self.ctx.test_dataset = self.inputs.get("test_dataset")
        self.ctx.test_kinds = {}  # test label → [kind, input structure key]
        self.ctx.test_score = None
        self.ctx.pending_test_reference = None  # pk of the test-set labels until the first committee waits for them
        self.ctx.deferred_failure = None  # [status, message] of a failure that waits for those labels
        self.ctx.start_group = {}  # exploration start cell → input structure key

    def _structures(self) -> CampaignStructures:
        return CampaignStructures(self.ctx.cells, self.ctx.cell_of)

    def generate_structures(self):
        """Supercells of the inputs start the MD; strained, rattled, defective copies are the first DFT set; the
        test set is generated the same way with its own settings (labels prefixed ``test_``)."""
        settings = load_config(self.inputs.generation.get_dict(), GenerationConfig)
        test = load_config(self.inputs.test_set.get_dict(), TestSetConfig)
        cells = self._structures()
        self.ctx.starts, self.ctx.to_label, self.ctx.test_to_label = {}, {}, {}
        for key, structure in sorted(self.inputs.structures.items()):
            cell = generate.supercell_structure(
                structure, List(settings.supercell), metadata={"call_link_label": f"supercell_{key}"}
            )
            labelled = cells.generate(cell, key, settings)
            self.ctx.to_label.update({label: node for label, (node, _) in labelled.items()})
            starts = cells.start_cells(cell, key, self.inputs.start_supercells.get_list())
            vacancy = cells.vacancy_start(labelled, key) if self.inputs.start_vacancies.value else None
            if vacancy is not None:
                starts[vacancy[0]] = vacancy[1]
            self.ctx.starts.update(starts)
            self.ctx.start_group.update({name: key for name in starts})
            if test.generation is not None:
                for label, (node, kind) in cells.generate(cell, key, test.generation, prefix="test_").items():
                    self.ctx.test_to_label[label] = node
                    self.ctx.test_kinds[label] = [kind, key]
        for key, structure in sorted(self.inputs.get("test_structures", {}).items()):
            self.ctx.test_to_label[f"test_user_{key}"] = structure
            self.ctx.test_kinds[f"test_user_{key}"] = ["user", key]
        self.report(
            f"generated {len(self.ctx.to_label)} structure(s) to label and {len(self.ctx.test_to_label)} "
            f"test structure(s) from {len(self.inputs.structures)} input structure(s); "
            f"{len(self.ctx.starts)} exploration start cell(s)"
        )

    def should_run_iteration(self) -> bool:
        return self.ctx.stop is None

    # --- one iteration ------------------------------------------------------------------------------------------
    def start_iteration(self):
        self.ctx.iteration += 1
        self.ctx.row = {"iteration": self.ctx.iteration, "labels_submitted": len(self.ctx.to_label)}
        if not self.has_new_labels():  # the committee stays; its figures carry over to this row
            previous = self.ctx.rows[-1]
            self.ctx.row.update(
                {key: previous[key] for key in ("validation", "test", "dataset_frames") if key in previous},
                labels_added=0,
                labels_failed=0,
            )
            self.report(
                f"iteration {self.ctx.iteration}: nothing new to label; the committee explores the next "
                "entry of the stage schedule"
            )

    def has_new_labels(self) -> bool:
        """Structures to label (always in the first iteration); else the last committee explores on."""
        return bool(self.ctx.to_label) or self.ctx.potential is None

    def run_reference(self):
        futures = {
            "reference": self._submit_reference(
                self.ctx.to_label, self.ctx.dataset, f"reference_{self.ctx.iteration:02d}"
            )
        }
        self.report(f"iteration {self.ctx.iteration}: DFT labels for {len(self.ctx.to_label)} structure(s)")
        if self.ctx.test_to_label:
            # the test set is labelled once, beside the first training labels; its large cells run on while the
            # first committee trains, which waits for it only before it is scored
            self.ctx.pending_test_reference = self._submit_reference(
                self.ctx.test_to_label, self.ctx.test_dataset, "reference_test"
            ).pk
            self.report(f"test set: DFT labels for {len(self.ctx.test_to_label)} structure(s)")
            self.ctx.test_to_label = {}
        return ToContext(**futures)

    def _submit_reference(self, structures: dict, dataset, link_label: str):
        """A ReferenceWorkChain with the campaign's labeller and settings; each structure a copy of its cell."""
        inputs = AttributeDict(self.exposed_inputs(ReferenceWorkChain, namespace="reference"))
        inputs.structures = structures
        cells = self._structures().cells_of(structures)
        if cells:
            inputs.cells = cells
        if dataset is not None:
            inputs.dataset = dataset
        inputs.metadata = {"call_link_label": link_label}
        return self.submit(ReferenceWorkChain, **inputs)

    def inspect_reference(self):
        node = self.ctx.reference
        failed = node.outputs.failed.get_dict() if "failed" in node.outputs else {}
        self.ctx.row.update(
            {"labels_failed": len(failed), "failures": {key: entry["reason"] for key, entry in failed.items()}}
        )
        if node.exit_status == ReferenceWorkChain.exit_codes.ERROR_NO_USABLE_LABELS.status:
            return self._fail_after_test_set(
                self.exit_codes.ERROR_NO_USABLE_LABELS.format(iteration=self.ctx.iteration, message=node.exit_message)
            )
        if not node.is_finished_ok:
            return self._fail_after_test_set(self.exit_codes.ERROR_REFERENCE_FAILED.format(message=failure_text(node)))
        before = self.ctx.dataset.n_frames if self.ctx.dataset is not None else 0
        self.ctx.dataset = node.outputs.dataset
        self.ctx.row.update(
            {"labels_added": self.ctx.dataset.n_frames - before, "dataset_frames": self.ctx.dataset.n_frames}
        )
        self.report(
            f"iteration {self.ctx.iteration}: {self.ctx.row['labels_added']} label(s) added, "
            f"{len(failed)} failed; dataset has {self.ctx.dataset.n_frames} frames"
        )
        self._publish()
        return None

    def _fail_after_test_set(self, exit_code):
        """Fail now, or once the test labels still running in the background have finished: they are kept (as the
        ``test_dataset`` output), and no process is left running under a terminated campaign."""
        if self.ctx.pending_test_reference is None:
            return self._fail(exit_code)
        self.ctx.deferred_failure = [exit_code.status, exit_code.message]
        self.report("waiting for the test-set labels before stopping")
        return None

    def run_committee(self):
        if self.ctx.deferred_failure is not None:
            return ToContext(test_reference=load_node(self.ctx.pending_test_reference))
        inputs = AttributeDict(self.exposed_inputs(CommitteeTrainingWorkChain, namespace="committee"))
        inputs.dataset = self.ctx.dataset
        if self.ctx.potential is not None and self.inputs.warm_start.value:
            inputs.parent_potential = self.ctx.potential
        inputs.metadata = {"call_link_label": f"committee_{self.ctx.iteration:02d}"}
        futures = {"committee": self.submit(CommitteeTrainingWorkChain, **inputs)}
        if self.ctx.pending_test_reference is not None:
            futures["test_reference"] = load_node(self.ctx.pending_test_reference)
        return ToContext(**futures)

    def inspect_committee(self):
        if self.ctx.pending_test_reference is not None:
            self.ctx.pending_test_reference = None
            failure = self._inspect_test_reference()
            if self.ctx.deferred_failure is not None:  # the training labels failed first: that is the reason
                return self._fail(ExitCode(*self.ctx.deferred_failure))
            if failure is not None:  # the training labels computed so far are still attached
                return self._fail(failure)
        node = self.ctx.committee
        if not node.is_finished_ok:
            return self._fail(self.exit_codes.ERROR_COMMITTEE_FAILED.format(message=failure_text(node)))
        self.ctx.potential = node.outputs.potential
        self.ctx.row["validation"] = node.outputs.metrics["validation_mean"]
        if self.ctx.test_dataset is not None:
            self._score_test_set()
        self._publish()
        return None

    def run_exploration(self):
        schedule = self.inputs.stage_schedule.get_list()
        stages = schedule[min(self.ctx.iteration, len(schedule)) - 1]
        inputs = AttributeDict(self.exposed_inputs(ExplorationWorkChain, namespace="exploration"))
        inputs.potential = self.ctx.potential
        inputs.structures = self.ctx.starts
        inputs.reference_dataset = self.ctx.dataset
        engine, selection = split_exploration_config(self.inputs.exploration_config.get_dict())
        inputs.config = Dict({**engine, "stages": stages})
        inputs.selection = Dict(selection)
        inputs.metadata = {"call_link_label": f"exploration_{self.ctx.iteration:02d}"}
        return ToContext(exploration=self.submit(ExplorationWorkChain, **inputs))

    def inspect_exploration(self):
        node = self.ctx.exploration
        if not node.is_finished_ok:
            return self._fail(self.exit_codes.ERROR_EXPLORATION_FAILED.format(message=failure_text(node)))
        summary = node.outputs.summary.get_dict()
        last_stage = summary["stages"][-1]["ratios"] if summary["stages"] else summary["ratios"]
        selected = dict(sorted(node.outputs.selected.items())) if "selected" in node.outputs else {}
        self.ctx.row.update(
            {
                "frames": summary["frames"],
                "ratios": summary["ratios"],
                "last_stage_ratios": last_stage,
                "selected": len(selected),
                "out_of_range": summary.get("extrapolation", {}).get("ratio"),
            }
        )
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
        elif not selected and self.ctx.iteration >= len(self.inputs.stage_schedule.get_list()):
            self.ctx.stop = "nothing_to_label"
        elif not selected:  # only the stage schedule is ahead: explore its next entry with the same committee
            self.ctx.to_label = {}
        else:
            self.ctx.to_label = {f"it{self.ctx.iteration:02d}_{key.split('_')[-1]}": s for key, s in selected.items()}
            self._trace_cells(summary["selected"])
            self.report(
                f"iteration {self.ctx.iteration}: not converged ({'; '.join(unmet)}); "
                f"{len(selected)} new structure(s) to label"
            )
        self.ctx.row["unmet"] = unmet
        self.ctx.rows.append(self.ctx.row)
        self._publish(final=True)
        return None

    def _trace_cells(self, picks: list[dict]) -> None:
        """A selected frame is a copy of the cell its trajectory started from."""
        cells = self._structures()
        for rank, pick in enumerate(picks):  # each pick names the start cell its trajectory began from
            cells.follow(f"it{self.ctx.iteration:02d}_{rank:03d}", pick["start"])

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
        targets = self.inputs.test_targets.get_dict()
        if targets:
            unmet.extend(targets_unmet(self.ctx.row.get("test", {}), targets))
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
        self._attach_test_outputs()
        self.out("iterations", List(self.ctx.rows).store())

    def results(self):
        self._attach_outputs()
        last = self.ctx.rows[-1]
        if self.ctx.stop in ("max_iterations", "final_test"):
            return self.exit_codes.WARNING_NOT_CONVERGED.format(
                iterations=self.ctx.iteration, reason="; ".join(last["unmet"])
            )
        if self.ctx.stop == "nothing_to_label":
            return self.exit_codes.WARNING_NOTHING_TO_LABEL.format(
                iteration=self.ctx.iteration, reason="; ".join(last["unmet"])
            )
        self.report(
            f"campaign converged after {self.ctx.iteration} iteration(s) with {self.ctx.dataset.n_frames} DFT labels"
        )
        return None
