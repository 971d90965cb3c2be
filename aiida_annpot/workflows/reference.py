"""``annpot.reference``: reference labels for a set of structures, one labeller work chain each, merged into a
dataset.

The labeller (``labeller``: ``quantumespresso``, ``cp2k``, ... see :mod:`.labelling`) and its settings come in once
and are the same for every structure of the campaign, so energies stay comparable; only the structure changes. A
structure given a ``cells`` entry shares the inputs the labeller fixes per ideal cell (Quantum ESPRESSO's k-point
mesh) with every other copy of that cell: strained, rattled and MD copies of one cell then differ only through the
structure. At most ``max_concurrent`` labels run at a time, in a sliding window that starts the largest structures
first. A structure whose label still fails after the code's own restart handlers is excluded and listed in the
``failed`` output with the reason, never dropped silently.
"""

from __future__ import annotations

from aiida.engine import ToContext, WorkChain, while_
from aiida.orm import AbstractCode, Dict, Int, Str, StructureData, load_node

from ..calcfunctions.dataset import merge_dataset
from ..data.dataset import AtomisticDataset
from ..data.label import LabelData
from .labelling import labeller_names, load_labeller
from .ports import at_least_one

__all__ = ["ReferenceWorkChain", "overlapping_structure"]


def overlapping_structure(structures: dict) -> str | None:
    """Error message naming the first structure (by its key) with two atoms closer than half their covalent radii:
    every DFT label of it, and of everything made from it, would be wasted."""
    from ..core.generate import OVERLAP_RATIO, overlapping_pair  # torch-free

    for key, structure in structures.items():
        atoms = structure.get_ase()
        pair = overlapping_pair(atoms)
        if pair is not None:
            i, j, distance, limit = pair
            symbols = atoms.get_chemical_symbols()
            if i == j:
                what = f"atom {i} ({symbols[i]}) is {distance:.3f} Å from its own periodic image"
            else:
                what = f"atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are {distance:.3f} Å apart"
            return (
                f"structure {key}: {what}, below {OVERLAP_RATIO} × the sum of their covalent radii "
                f"({limit:.3f} Å): overlapping atoms"
            )
    return None


def validate_labeller(name: Str, _=None) -> str | None:
    if name.value not in labeller_names():
        return f"labeller: unknown labeller {name.value!r}; installed: {', '.join(labeller_names())}"
    return None


def labeller_problem(inputs: dict, structures: dict) -> str | None:
    """Why the labeller named in ``inputs`` cannot label ``structures`` with its settings (a missing pseudopotential
    or basis set), or its settings are invalid; None when it can."""
    if "settings" not in inputs or "labeller" not in inputs or validate_labeller(inputs["labeller"]):
        return None  # the ports' own validators say what is wrong
    labeller = load_labeller(inputs["labeller"].value)
    message = labeller.validate_settings(inputs["settings"])
    if message:
        return f"settings: {message}"
    return labeller.check_structures(inputs["settings"].get_dict(), structures) if structures else None


def validate_inputs(inputs: dict, namespace) -> str | None:
    if "structures" not in namespace:  # exposed without its structures: the wrapping process checks them
        return labeller_problem(inputs, {})
    if not inputs.get("structures"):
        return "no structures to label: the structures namespace is empty"
    return overlapping_structure(inputs["structures"]) or labeller_problem(inputs, inputs["structures"])


class ReferenceWorkChain(WorkChain):
    """Label structures with one labeller (reference code) and merge the usable labels into an AtomisticDataset."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input_namespace(
            "structures",
            valid_type=StructureData,
            dynamic=True,
            help="The structures to label; the keys name them in reports and in `failed`.",
        )
        spec.input(
            "dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="Labels so far: the new ones are appended (duplicates of its structures are skipped).",
        )
        spec.input_namespace(
            "cells",
            valid_type=StructureData,
            dynamic=True,
            required=False,
            help="Structure key → the ideal cell it is a copy of: the structure shares the inputs the labeller fixes "
            "per cell (the k-point mesh) with every other copy. Without an entry a structure is its own cell.",
        )
        spec.input(
            "labeller",
            valid_type=Str,
            default=lambda: Str("quantumespresso"),
            validator=validate_labeller,
            help="The reference code: the name of an installed labeller (annpot.labelling.<name> entry point).",
        )
        spec.input("code", valid_type=AbstractCode, help="The labeller's code (pw.x for quantumespresso, ...).")
        spec.input(
            "settings",
            valid_type=Dict,
            help="The labeller's settings, shared by every structure of the campaign (checked against its schema).",
        )
        spec.input(
            "options",
            valid_type=Dict,
            default=lambda: Dict({}),
            help="Scheduler options of every labelling calculation.",
        )
        spec.input(
            "max_concurrent",
            valid_type=Int,
            default=lambda: Int(8),
            validator=at_least_one("max_concurrent"),
            help="At most this many labels run at the same time.",
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            while_(cls.has_labels_to_wait_for)(cls.fill_window, cls.collect_finished),
            cls.merge_labels,
            cls.results,
        )
        spec.output(
            "dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="The input dataset plus every new usable label.",
        )
        spec.output_namespace(
            "labels",
            valid_type=LabelData,
            dynamic=True,
            help="Structure key → its label (energy, forces, stress), for every structure that was labelled.",
        )
        spec.output(
            "failed",
            valid_type=Dict,
            help="Structure key → {structure uuid, reason}: labels that were excluded and why.",
        )
        spec.exit_code(
            300,
            "ERROR_NO_USABLE_LABELS",
            message="none of the {count} structures gave a usable label, and there is no dataset to extend; first "
            "failure: {reason}",
        )

    def setup(self):
        structures = self.inputs.structures
        # largest first: the long labels start at once and the short ones cycle through the window around them
        self.ctx.pending = sorted(structures, key=lambda key: (-len(structures[key].sites), key))
        self.ctx.running = {}  # key → pk of its label work chain
        self.ctx.finished = {}
        self.ctx.fixed = self._fixed_inputs()

    def _labeller(self):
        return load_labeller(self.inputs.labeller.value)

    def _fixed_inputs(self) -> dict[str, dict]:
        """Structure key → the labeller's inputs fixed for its cell, made once per distinct cell (named by the
        first structure key that uses it)."""
        labeller, per_cell, fixed = self._labeller(), {}, {}
        for key, cell in sorted(self.inputs.get("cells", {}).items()):
            if key not in self.inputs.structures:
                continue
            if cell.pk not in per_cell:
                per_cell[cell.pk] = labeller.fixed_inputs(cell, self.inputs.settings, key)
            fixed[key] = per_cell[cell.pk]
        return fixed

    def has_labels_to_wait_for(self) -> bool:
        return bool(self.ctx.pending or self.ctx.running)

    def fill_window(self):
        """Submit labels until ``max_concurrent`` run (a sliding window, not batches: one slow label does not hold
        the next ones back), then wait for the running label expected to end first: the smallest structure."""
        free = self.inputs.max_concurrent.value - len(self.ctx.running)
        submitted = self.ctx.pending[: max(free, 0)]
        self.ctx.pending = self.ctx.pending[len(submitted) :]
        for key in submitted:
            self.ctx.running[key] = self._submit_label(key).pk
        if submitted:
            self.report(
                f"submitted {len(submitted)} label(s); {len(self.ctx.running)} running, {len(self.ctx.pending)} waiting"
            )
        structures = self.inputs.structures
        first = min(self.ctx.running, key=lambda key: (len(structures[key].sites), self.ctx.running[key]))
        return ToContext(awaited=load_node(self.ctx.running[first]))

    def _submit_label(self, key: str):
        inputs = {
            "structure": self.inputs.structures[key],
            "code": self.inputs.code,
            "settings": self.inputs.settings,
            "options": self.inputs.options,
            "metadata": {"call_link_label": f"label_{key}"},
        }
        if key in self.ctx.fixed:
            inputs["fixed"] = self.ctx.fixed[key]
        return self.submit(self._labeller(), **inputs)

    def collect_finished(self):
        done = {}
        for key, pk in list(self.ctx.running.items()):
            node = load_node(pk)
            if node.is_terminated:
                done[key] = node
                del self.ctx.running[key]
        self.ctx.finished.update(done)
        failed = [key for key, node in done.items() if not node.is_finished_ok]
        if failed:
            self.report(f"{len(failed)} of {len(done)} label(s) failed: {', '.join(failed)}")

    def merge_labels(self):
        labels, failed = {}, {}
        for key, node in sorted(self.ctx.finished.items()):
            if not node.is_finished_ok or "label" not in node.outputs:
                failed[key] = {"structure": self.inputs.structures[key].uuid, "reason": _failure(node)}
                continue
            self.out(f"labels.{key}", node.outputs.label)
            labels[f"structure_{key}"] = self.inputs.structures[key]
            labels[f"label_{key}"] = node.outputs.label
        inputs = dict(labels, metadata={"call_link_label": "merge_dataset"})
        if "dataset" in self.inputs:
            inputs["dataset"] = self.inputs.dataset
        merged = merge_dataset(**inputs) if labels else {}
        for key, entry in merged["rejected"].get_dict().items() if merged else ():
            failed[key] = entry
        self.ctx.failed = failed
        self.ctx.dataset = merged.get("dataset") if merged else self.inputs.get("dataset")

    def results(self):
        self.out("failed", Dict(self.ctx.failed).store())
        count = len(self.inputs.structures)
        if self.ctx.dataset is None:
            first = next(iter(self.ctx.failed.values()))["reason"] if self.ctx.failed else "none"
            return self.exit_codes.ERROR_NO_USABLE_LABELS.format(count=count, reason=first)
        self.out("dataset", self.ctx.dataset)
        self.report(
            f"{count - len(self.ctx.failed)} of {count} structure(s) labelled; dataset now has "
            f"{self.ctx.dataset.n_frames} frames"
        )
        return None


def _failure(node) -> str:
    """Why a label work chain gave no label: its exit message names the code's process and its exit status."""
    if node.is_finished and node.exit_message:
        return node.exit_message
    state = node.process_state.value if node.process_state else "unknown"
    return f"{node.process_label}<{node.pk}> {state} (exit status {node.exit_status})"
