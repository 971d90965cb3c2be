"""``annpot.reference``: DFT labels for a set of structures, one PwBaseWorkChain each, merged into a dataset.

The DFT settings come in once (the exposed ``pw_base`` inputs) and are the same for every structure of the
campaign, so energies stay comparable; only the structure and its pseudopotentials (from ``pseudo_family``) change.
An explicit ``kpoints`` mesh per structure key, when given, replaces the ``kpoints_distance`` of the shared
settings for that structure: strained, rattled and MD copies of one cell then share one mesh, so their energies
differ only through the structure (a distance-based mesh jumps between sizes as a cell is strained, which shifts
the energy by far more than the potential's target error). At most ``max_concurrent`` work chains run at a time, in a
sliding window that starts the largest structures first.
A structure whose PwBaseWorkChain still fails after its own restart handlers is excluded and listed in the
``failed`` output with the reason, never dropped silently; a failure no handler knows (pw.x killed by the node or the
scheduler) is retried once first (``on_unhandled_failure: restart_once`` unless ``pw_base`` says otherwise).
"""

from __future__ import annotations

import difflib
import math

from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, while_
from aiida.orm import Bool, Dict, Float, Int, KpointsData, List, Str, StructureData, load_group, load_node
from aiida.plugins import WorkflowFactory

from ..calcfunctions.dataset import merge_dataset
from ..calcfunctions.kpoints import kpoints_mesh, validate_offset
from ..data.dataset import AtomisticDataset
from .ports import at_least_one

__all__ = ["ReferenceWorkChain", "overlapping_structure", "validate_pseudo_family", "validate_pw_parameters"]

PwBaseWorkChain = WorkflowFactory("quantumespresso.pw.base")


def validate_pseudo_family(family_label: str, structures) -> str | None:
    """Error message when ``family_label`` is not a pseudopotential family covering every structure's elements."""
    try:
        family = load_group(family_label)
    except Exception:  # NotExistent or MultipleObjectsError: either way the label does not name one family
        return f"pseudo family {family_label!r} does not exist (aiida-pseudo list shows the installed ones)"
    if not hasattr(family, "get_pseudos"):
        return f"group {family_label!r} is not a pseudopotential family"
    available = set(family.elements)
    for key, structure in structures.items():
        missing = sorted(set(structure.get_symbols_set()) - available)
        if missing:
            return f"structure {key}: pseudo family {family_label!r} has no pseudopotential for {', '.join(missing)}"
    return None


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
            what = f"atom {i} ({symbols[i]}) is {distance:.3f} Å from its own periodic image" if i == j else (
                f"atoms {i} ({symbols[i]}) and {j} ({symbols[j]}) are {distance:.3f} Å apart")  # fmt: skip
            return (f"structure {key}: {what}, below {OVERLAP_RATIO} × the sum of their covalent radii "
                    f"({limit:.3f} Å): overlapping atoms")  # fmt: skip
    return None


#: pw.x settings that must be numbers (a string such as ``ecutwfc: high`` would only fail inside pw.x).
_NUMERIC_PW_KEYS = {
    "SYSTEM": ("ecutwfc", "ecutrho", "ecutfock", "degauss", "tot_charge", "tot_magnetization", "nbnd", "nspin"),
    "ELECTRONS": ("conv_thr", "mixing_beta", "mixing_ndim", "electron_maxstep", "diago_thr_init"),
    "CONTROL": ("etot_conv_thr", "forc_conv_thr", "max_seconds", "nstep"),
}


def validate_pw_parameters(parameters: dict, where: str = "pw.parameters") -> str | None:
    """Error message naming the first unknown pw.x namelist or variable (by the variables that ASE lists from QE's
    INPUT_PW documentation, with the closest known name) or a numeric variable that is not a number."""
    from ase.io.espresso_namelist.keys import pw_keys

    for namelist, values in parameters.items():
        known = pw_keys.get(str(namelist).lower())
        if known is None:
            return f"{where}: {namelist!r} is not a pw.x namelist (known: {', '.join(k.upper() for k in pw_keys)})"
        if not isinstance(values, dict):
            return f"{where}.{namelist}: expected a mapping of pw.x variables, got {values!r}"
        for key, value in values.items():
            name = str(key).lower().split("(")[0]  # starting_magnetization(1) is the variable starting_magnetization
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                return f"{where}.{namelist}.{key}: not a pw.x variable of &{str(namelist).upper()}{hint}"
            numeric = name in _NUMERIC_PW_KEYS.get(str(namelist).upper(), ())
            if numeric and (isinstance(value, bool) or not isinstance(value, int | float)):
                return f"{where}.{namelist}.{key}: must be a number, got {value!r}"
    return None


def _valid_bands_factor(factor, _=None) -> str | None:
    if factor.value < 1.0:
        return f"bands_factor: must be at least 1 (the occupied bands), got {factor.value}"
    return None


def bands_for(structure: StructureData, pseudos: dict, factor: float) -> int:
    """pw.x's ``nbnd`` for ``structure``: ``factor`` × the occupied bands, and at least 4 empty ones."""
    electrons = sum(pseudos[site.kind_name].z_valence for site in structure.sites)
    occupied = math.ceil(electrons / 2)
    return max(math.ceil(factor * electrons / 2), occupied + 4)


def validate_inputs(inputs: dict, namespace) -> str | None:
    parameters = inputs.get("pw_base", {}).get("pw", {}).get("parameters")
    if parameters is not None:
        message = validate_pw_parameters(parameters.get_dict(), "pw_base.pw.parameters")
        if message:
            return message
        if "bands_factor" in inputs and "nbnd" in {k.lower() for k in parameters.get_dict().get("SYSTEM", {})}:
            return "pw_base.pw.parameters.SYSTEM.nbnd and bands_factor both set the bands: give one of them"
    if "structures" not in namespace:  # exposed without its structures: the wrapping process checks them
        return None
    if not inputs.get("structures"):
        return "no structures to label: the structures namespace is empty"
    message = overlapping_structure(inputs["structures"])
    if message:
        return message
    if "pseudo_family" in inputs:
        return validate_pseudo_family(inputs["pseudo_family"].value, inputs["structures"])
    return None


class ReferenceWorkChain(WorkChain):
    """Label structures with Quantum ESPRESSO and merge the converged results into an AtomisticDataset."""

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
            "pseudo_family",
            valid_type=Str,
            help="Label of an aiida-pseudo family with a pseudopotential for every element.",
        )
        spec.input(
            "dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="Labels so far: the new ones are appended (duplicates of its structures are skipped).",
        )
        spec.input_namespace(
            "kpoints",
            valid_type=KpointsData,
            dynamic=True,
            required=False,
            help="Structure key → explicit k-point mesh, replacing pw_base.kpoints_distance.",
        )
        spec.input(
            "kpoints_offset",
            valid_type=List,
            required=False,
            validator=validate_offset,
            help="Shift of every mesh made from pw_base.kpoints_distance, in mesh steps (e.g. [0.5, 0.5, 0.5]: "
            "Monkhorst–Pack); unset: Γ-centred meshes.",
        )
        spec.input(
            "bands_factor",
            valid_type=Float,
            required=False,
            validator=_valid_bands_factor,
            help="Bands per structure as a multiple of the occupied ones (nbnd = factor × valence electrons / 2, at "
            "least 4 more): pw.x's default of 1.2 left hot and strained cells stuck in the SCF with small smearing.",
        )
        spec.input(
            "max_concurrent",
            valid_type=Int,
            default=lambda: Int(8),
            validator=at_least_one("max_concurrent"),
            help="At most this many DFT work chains run at the same time.",
        )
        spec.expose_inputs(
            PwBaseWorkChain,
            namespace="pw_base",
            exclude=("pw.structure", "pw.pseudos"),
            namespace_options={"help": "DFT settings shared by every structure of the campaign."},
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
            help="The input dataset plus every new converged label.",
        )
        spec.output(
            "failed",
            valid_type=Dict,
            help="Structure key → {structure uuid, reason}: labels that were excluded and why.",
        )
        spec.exit_code(300, "ERROR_NO_USABLE_LABELS",
                       message="none of the {count} structures gave a usable DFT label, and there is no dataset to "
                       "extend; first failure: {reason}")  # fmt: skip

    def setup(self):
        structures = self.inputs.structures
        # largest first: the long labels start at once and the short ones cycle through the window around them
        self.ctx.pending = sorted(structures, key=lambda key: (-len(structures[key].sites), key))
        self.ctx.running = {}  # key → pk of its PwBaseWorkChain
        self.ctx.finished = {}
        self.ctx.family = load_group(self.inputs.pseudo_family.value)

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
            self.report(f"submitted {len(submitted)} DFT label(s); {len(self.ctx.running)} running, "
                        f"{len(self.ctx.pending)} waiting")  # fmt: skip
        structures = self.inputs.structures
        first = min(self.ctx.running, key=lambda key: (len(structures[key].sites), self.ctx.running[key]))
        return ToContext(awaited=load_node(self.ctx.running[first]))

    def _submit_label(self, key: str):
        structure = self.inputs.structures[key]
        inputs = AttributeDict(self.exposed_inputs(PwBaseWorkChain, namespace="pw_base"))
        inputs.pw = AttributeDict(inputs.pw)
        inputs.pw.structure = structure
        inputs.pw.pseudos = self.ctx.family.get_pseudos(structure=structure)
        if key in self.inputs.get("kpoints", {}):
            inputs.kpoints = self.inputs.kpoints[key]
            inputs.pop("kpoints_distance", None)
        elif "kpoints_offset" in self.inputs and "kpoints_distance" in inputs:
            inputs.kpoints = kpoints_mesh(structure, inputs.pop("kpoints_distance"),
                                          inputs.get("kpoints_force_parity", Bool(False)),
                                          self.inputs.kpoints_offset, key)  # fmt: skip
        if "bands_factor" in self.inputs:
            parameters = inputs.pw.parameters.get_dict()
            parameters.setdefault("SYSTEM", {})["nbnd"] = bands_for(structure, inputs.pw.pseudos,
                                                                     self.inputs.bands_factor.value)  # fmt: skip
            inputs.pw.parameters = Dict(parameters)
        inputs.setdefault("on_unhandled_failure", Str("restart_once"))  # a killed pw.x (no known cause): once more
        inputs.metadata = {"call_link_label": f"label_{key}"}
        return self.submit(PwBaseWorkChain, **inputs)

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
            self.report(f"{len(failed)} of {len(done)} DFT label(s) failed: {', '.join(failed)}")

    def merge_labels(self):
        labels, failed = {}, {}
        for key, node in sorted(self.ctx.finished.items()):
            if not node.is_finished_ok:
                failed[key] = {"structure": self.inputs.structures[key].uuid,
                               "reason": f"PwBaseWorkChain<{node.pk}> exit status {node.exit_status}: "
                                         f"{node.exit_message}"}  # fmt: skip
                continue
            labels[f"structure_{key}"] = self.inputs.structures[key]
            labels[f"parameters_{key}"] = node.outputs.output_parameters
            labels[f"trajectory_{key}"] = node.outputs.output_trajectory
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
        self.report(f"{count - len(self.ctx.failed)} of {count} structure(s) labelled; dataset now has "
                    f"{self.ctx.dataset.n_frames} frames")  # fmt: skip
        return None
