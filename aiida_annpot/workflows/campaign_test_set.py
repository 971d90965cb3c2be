"""The independent test set of a campaign (:class:`~aiida_annpot.workflows.active_learning.ActiveLearningWorkChain`):
its ports, and the steps that label it, score each committee on it and, at the end, add hot MD frames of the final
committee. Structures are generated in the campaign's ``generate_structures`` with the test set's own
GenerationConfig; the test labels come from a ReferenceWorkChain with the campaign's DFT settings.
"""

from __future__ import annotations

from aiida.common.links import LinkType
from aiida.engine import ToContext
from aiida.orm import ArrayData, Dict, Float, Int, StructureData

from ..calcfunctions.testset import evaluate_test_set, sample_test_frames
from ..common.config import TestSetConfig, load_config
from ..core.testset import targets_unmet
from ..data.dataset import AtomisticDataset
from .campaign_inputs import validate_test_set, validate_test_targets
from .messages import failure_text, number_text

__all__ = ["TestSetSteps", "define_test_set"]


def define_test_set(spec) -> None:
    """The test-set ports, outputs and exit code of the campaign's spec."""
    spec.input(
        "test_set",
        valid_type=Dict,
        default=lambda: Dict({}),
        validator=validate_test_set,
        help="TestSetConfig: the generation of the independent test set (own seed, wider ranges).",
    )
    spec.input_namespace(
        "test_structures",
        valid_type=StructureData,
        dynamic=True,
        required=False,
        help="Further test structures of the user's, labelled with the campaign's DFT settings.",
    )
    spec.input(
        "test_dataset",
        valid_type=AtomisticDataset,
        required=False,
        help="Labelled test frames of the user's (same DFT settings as `reference`), never trained on.",
    )
    spec.input(
        "test_targets",
        valid_type=Dict,
        default=lambda: Dict({}),
        validator=validate_test_targets,
        help="Test-set targets: energy_rmse (meV/atom), force_rmse (eV/Å), volume_error and "
        "bulk_modulus_error (relative, of V0 and B0), vacancy_error (eV).",
    )
    spec.output("test_dataset", valid_type=AtomisticDataset, required=False, help="The labelled test set.")
    spec.output(
        "test_score",
        valid_type=Dict,
        required=False,
        help="The final committee on the test set: errors overall and per kind, V0, B0, vacancy energy.",
    )
    spec.output(
        "test_predictions",
        valid_type=ArrayData,
        required=False,
        help="Parity data of the final committee on the test set (energies per atom, force components).",
    )
    spec.exit_code(405, "ERROR_TEST_SET_FAILED", message="no usable test-set label: {message}")


class TestSetSteps:
    """Work chain steps of the test set; the campaign keeps ``test_dataset``, ``test_kinds`` (label → [kind, input
    structure key]), ``test_score``, ``row`` and ``rows`` in its context."""

    __test__ = False  # not a pytest class

    def _inspect_test_reference(self):
        """The labelled test set (the user's test frames plus the new labels); failed test labels are counted."""
        node = self.ctx.test_reference
        failed = node.outputs.failed.get_dict() if "failed" in node.outputs else {}
        self.ctx.row.update(
            {
                "test_labels_failed": len(failed),
                "test_failures": {key: entry["reason"] for key, entry in failed.items()},
            }
        )
        if not node.is_finished_ok or "dataset" not in node.outputs:
            return self.exit_codes.ERROR_TEST_SET_FAILED.format(message=failure_text(node))
        self.ctx.test_dataset = node.outputs.dataset
        self.report(f"test set: {self.ctx.test_dataset.n_frames} labelled frame(s), {len(failed)} label(s) failed")
        return None

    def _score_test_set(self, link_label: str | None = None) -> None:
        """The committee's errors on the test set (a calcfunction): headline figures and per-kind RMSEs."""
        self.ctx.test_score = evaluate_test_set(
            self.ctx.potential,
            self.ctx.test_dataset,
            Dict(self.ctx.test_kinds),
            self.ctx.dataset,
            metadata={"call_link_label": link_label or f"test_{self.ctx.iteration:02d}"},
        )
        score = self.ctx.test_score["score"].get_dict()
        self.ctx.row["test"] = {
            **score["headline"],
            "frames": score["overall"]["frames"],
            "kinds": {
                kind: {"energy_rmse": e["energy_rmse"], "force_rmse": e["force_rmse"], "frames": e["frames"]}
                for kind, e in score["kinds"].items()
            },
        }
        figures = score["headline"]
        self.report(
            f"iteration {self.ctx.iteration}: test set ({score['overall']['frames']} frames) energy RMSE "
            f"{number_text(figures['energy_rmse'])} meV/atom, force RMSE {number_text(figures['force_rmse'])} eV/Å, "
            f"B0 error {number_text(figures['bulk_modulus_error'])}, vacancy error "
            f"{number_text(figures['vacancy_error'])} eV"
        )

    # --- hot MD frames of the final committee for the test set ------------------------------------------------
    def should_label_md_test_frames(self) -> bool:
        test = load_config(self.inputs.test_set.get_dict(), TestSetConfig)
        return bool(test.md_frames) and self.ctx.test_dataset is not None and "exploration" in self.ctx

    def run_md_test_labels(self):
        """Frames of the last exploration's hottest stage (the final committee's own MD), labelled for the test."""
        test = load_config(self.inputs.test_set.get_dict(), TestSetConfig)
        jobs = self.ctx.exploration.base.links.get_outgoing(link_type=LinkType.CALL_WORK).all()
        frames = {
            f"frames_{link.link_label.split('_')[-1]}": link.node.outputs.frames
            for link in jobs
            if link.link_label.startswith("explore_") and "frames" in link.node.outputs
        }
        distance = self.inputs.exploration_config.get_dict().get("selection", {}).get("min_distance", 1.0)
        sampled = sample_test_frames(
            Int(test.md_frames),
            Int(test.seed),
            Float(distance),
            **frames,
            metadata={"call_link_label": "sample_test_md"},
        )
        origins = sorted(sampled["origins"].get_dict().items())
        cells, to_label = self._structures(), {}
        for key, origin in origins:  # each frame names the start cell its trajectory began from
            label, start = f"test_md_{key.split('_')[-1]}", origin["start"]
            cells.follow(label, start)
            to_label[label] = sampled[key]
            self.ctx.test_kinds[label] = ["md", self.ctx.start_group[start]]
        if not to_label:
            self.report("no MD frame of the last exploration could be sampled for the test set")
            return None
        self.report(f"test set: DFT labels for {len(to_label)} MD frame(s) of the final committee's hottest stage")
        return ToContext(md_test_reference=self._submit_reference(to_label, self.ctx.test_dataset, "reference_test_md"))

    def inspect_md_test_labels(self):
        """Score the final committee on the whole test set, MD frames included; a campaign that had converged but
        misses a test target on them is not converged after all."""
        if "md_test_reference" not in self.ctx:
            return
        node, row = self.ctx.md_test_reference, self.ctx.rows[-1]
        failed = node.outputs.failed.get_dict() if "failed" in node.outputs else {}
        row["test_md_labels_failed"] = len(failed)
        if not node.is_finished_ok or "dataset" not in node.outputs:
            row["test_md_failure"] = failure_text(node)
            self.report(f"the MD test frames could not be labelled: {failure_text(node)}")
            self._publish(final=True)
            return
        self.ctx.test_dataset = node.outputs.dataset
        self.ctx.row = row
        self._score_test_set(link_label="test_final")
        targets = self.inputs.test_targets.get_dict()
        unmet = targets_unmet(row["test"], targets) if targets else []
        # the row's reasons now speak of the whole test set, MD frames included
        kept = [phrase for phrase in row.get("unmet", []) if not phrase.startswith("test ")]
        row["unmet"] = kept + [f"with the MD test frames: {phrase}" for phrase in unmet]
        if self.ctx.stop == "converged" and unmet:
            self.ctx.stop = "final_test"
            row["converged"] = False
            self.report(f"the final committee misses the test targets on its own MD frames: {'; '.join(unmet)}")
        self._publish(final=True)

    def _attach_test_outputs(self) -> None:
        if self.ctx.test_dataset is not None:
            self.out("test_dataset", self.ctx.test_dataset)
        if self.ctx.test_score is not None:
            self.out("test_score", self.ctx.test_score["score"])
            self.out("test_predictions", self.ctx.test_score["predictions"])
