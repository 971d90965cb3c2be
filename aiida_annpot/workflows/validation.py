"""``annpot.validation``: test a potential on physical properties of one bulk crystal against its reference code.

Methods, in the order of the outline:

1. **setup** — the structures of the requested properties are made from the input cell by one calcfunction:
   ``points`` isotropically scaled copies for the equation of state, the perfect and the defective vacancy supercell,
   the MD supercell. The equation-of-state copies are copies of the input cell, the two vacancy cells copies of the
   ideal vacancy supercell: they share what the labeller fixes per cell (Quantum ESPRESSO's k-point mesh), as the
   campaign's copies of a cell do, since a distance-based mesh would change size as the cell is strained and shift
   the energies by tens of meV/atom.
2. **run_dft / inspect_dft** — a ReferenceWorkChain labels the structures with the same labeller and settings as the
   training data (identical structures are labelled once); each structure's label is its ``labels`` output, checked
   against the sources of the merged dataset. A failed point stops the work chain with ``ERROR_DFT_POINT_FAILED``
   naming it.
3. **run_ann** — the potential's energies of the same structures, in-process (calcfunction), and their
   extrapolation grades: each DFT property reports the largest over its structures, so an error where the
   potential extrapolates (a vacancy absent from the training set) is recognisable as such.
4. **run_md / inspect_md** — NVE molecular dynamics with the potential alone, as an ``annpot explore`` job with one
   ``ensemble: nve`` stage (velocity Verlet from Maxwell–Boltzmann velocities).
5. **results** — a calcfunction compares: Birch–Murnaghan V0, B0, B0', E0 (per atom), the unrelaxed vacancy
   formation energy ``E(N−1) − (N−1)/N·E(N)``, and the energy drift and closest approach of the NVE run.
"""

from __future__ import annotations

import math

from aiida.common import AttributeDict
from aiida.engine import ToContext, WorkChain, if_
from aiida.orm import ArrayData, Dict, StructureData

from ..calcfunctions.dataset import structure_key
from ..calcfunctions.validation import (
    MD_START,
    VACANCY_DEFECT,
    VACANCY_PERFECT,
    compare_properties,
    evaluate_potential,
    validation_structures,
)
from ..calculations.base import validate_config_dict
from ..common.config import ConfigError, SelectionConfig, ValidationConfig, load_config
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential
from .active_learning import ActiveLearningWorkChain
from .explore_base import CALLER_SET_INPUTS, AnnExploreBaseWorkChain
from .messages import failure_text
from .reference import ReferenceWorkChain, labeller_problem

__all__ = ["ValidationWorkChain"]

#: Properties that compare the potential with DFT (the others use the potential alone).
DFT_PROPERTIES = ("equation_of_state", "vacancy")
#: Extrapolation grade above which the report names a structure as outside the training ranges (the selection
#: default tolerance).
EXTRAPOLATING = SelectionConfig.model_fields["extrapolation_tolerance"].default
#: Exploration settings of the NVE run besides its stage: float64 so that rounding does not drift the energy, and
#: one thread, the fastest for a few dozen atoms.
MD_ENGINE = {"dtype": "float64", "threads": 1, "seed": 0}


def validate_config(value: Dict, _) -> str | None:
    return validate_config_dict(value, ValidationConfig, path_keys=(), placeholders={})


def unsupported_property(structure: StructureData, settings: ValidationConfig) -> str | None:
    """Why a requested property cannot be computed for ``structure``, naming it; None when all can."""
    if not all(structure.pbc):
        return (
            f"{', '.join(settings.properties)} need(s) a bulk crystal, but the structure is not periodic in all "
            "three directions"
        )
    if "vacancy" in settings.properties:
        vacancy = settings.vacancy
        atoms = len(structure.sites) * math.prod(vacancy.supercell)
        if atoms < 2:
            return (
                f"vacancy needs at least 2 atoms, but the structure has {len(structure.sites)} and vacancy."
                f"supercell {vacancy.supercell} makes {atoms}: enlarge the supercell"
            )
        if vacancy.site >= atoms:
            return (
                f"vacancy site {vacancy.site} is out of range: the supercell {vacancy.supercell} has {atoms} "
                f"atoms (sites 0 to {atoms - 1})"
            )
    return None


def validate_inputs(inputs: dict, _) -> str | None:
    try:
        settings = load_config(inputs["config"].get_dict(), ValidationConfig)
    except (ConfigError, KeyError):
        return None  # the config port's own validator says what is wrong
    structure, potential = inputs["structure"], inputs["potential"]
    message = unsupported_property(structure, settings)
    if message:
        return message
    missing = sorted(structure.get_symbols_set() - set(potential.elements))
    if missing:
        return (
            f"the structure has element(s) {', '.join(missing)} that the potential does not cover (it covers "
            f"{', '.join(potential.elements)})"
        )
    needs_dft = sorted(set(DFT_PROPERTIES) & set(settings.properties))
    if needs_dft and not inputs.get("reference"):
        return f"{' and '.join(needs_dft)} compare(s) with DFT: give the `reference` inputs (labeller, code, settings)"
    if "md_stability" in settings.properties and not inputs.get("md"):
        return "md_stability runs an annpot explore job: give the `md` inputs (md.explore.code at least)"
    if needs_dft:
        return labeller_problem(inputs["reference"], {"input": structure})
    return None


class ValidationWorkChain(WorkChain):
    """Compare a potential with its reference (the training data's labeller) on properties of one bulk crystal."""

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=StructureData, help="The bulk crystal (ideal cell) to validate on.")
        spec.input("potential", valid_type=AnnPotential, help="The potential (committee) under test.")
        spec.input(
            "config",
            valid_type=Dict,
            default=lambda: Dict({}),
            validator=validate_config,
            help="ValidationConfig: properties (equation_of_state, vacancy, md_stability) and their settings.",
        )
        spec.expose_inputs(
            ReferenceWorkChain,
            namespace="reference",
            exclude=("structures", "dataset", "cells"),
            namespace_options={
                "required": False,
                "populate_defaults": False,
                "help": "The labeller (reference code) and settings of the training data; needed for "
                "equation_of_state and vacancy.",
            },
        )
        spec.expose_inputs(
            AnnExploreBaseWorkChain,
            namespace="md",
            exclude=CALLER_SET_INPUTS,
            namespace_options={
                "required": False,
                "populate_defaults": False,
                "help": "The annpot code and scheduler options of the NVE run; needed for md_stability.",
            },
        )
        spec.inputs.validator = validate_inputs
        spec.outline(
            cls.setup,
            if_(cls.should_compare_with_dft)(cls.run_dft, cls.inspect_dft, cls.run_ann),
            if_(cls.should_run_md)(cls.run_md, cls.inspect_md),
            cls.results,
        )
        spec.output(
            "properties",
            valid_type=Dict,
            help="Per property the DFT and potential values side by side with error = ANN − DFT (relative_error for "
            "V0 and B0); units in the key names and under `units`; vacancy energies are unrelaxed.",
        )
        spec.output(
            "equation_of_state",
            valid_type=ArrayData,
            required=False,
            help="Arrays volume_per_atom (Å³/atom), dft_energy_per_atom and ann_energy_per_atom (eV/atom).",
        )
        spec.output(
            "md_energy",
            valid_type=ArrayData,
            required=False,
            help="Arrays time_ps and total_energy_per_atom (eV/atom) of the NVE run.",
        )
        spec.output(
            "dataset",
            valid_type=AtomisticDataset,
            required=False,
            help="The DFT labels of the validation structures (energies, forces, stress), for provenance and reuse.",
        )
        spec.exit_code(401, "ERROR_REFERENCE_FAILED", message="the DFT work chain failed: {message}")
        spec.exit_code(402, "ERROR_DFT_POINT_FAILED", message="DFT failed for validation structure(s) {keys}: {reason}")
        spec.exit_code(403, "ERROR_MD_FAILED", message="the NVE run failed: {message}")
        spec.exit_code(404, "ERROR_EOS_FIT_FAILED", message="the Birch–Murnaghan fit failed ({errors})")

    # --- building a validation from a campaign ------------------------------------------------------------------
    @classmethod
    def get_builder_from_campaign(
        cls, campaign_node, structure: StructureData | None = None, config: dict | None = None
    ):
        """A builder that validates a campaign's final potential with the campaign's own DFT settings.

        :param campaign_node: a finished ``annpot.active_learning`` node with a ``potential`` output.
        :param structure: the crystal to validate on; default the campaign's first input structure (sorted keys).
        :param config: ValidationConfig settings; default all properties with their defaults.
        :raises ValueError: not a campaign, or a campaign without a potential.
        """
        if getattr(campaign_node, "process_type", None) != ActiveLearningWorkChain.build_process_type():
            raise ValueError(f"node {campaign_node.pk} is not an annpot.active_learning campaign")
        if "potential" not in campaign_node.outputs:
            raise ValueError(
                f"campaign {campaign_node.pk} has no potential output (state: "
                f"{campaign_node.process_state}, exit status {campaign_node.exit_status})"
            )
        campaign = campaign_node.get_builder_restart()._inputs(prune=True)
        builder = cls.get_builder()
        builder.potential = campaign_node.outputs.potential
        structures = campaign["structures"]
        builder.structure = structure if structure is not None else structures[sorted(structures)[0]]
        builder.config = Dict(config or {})
        ports = cls.spec().inputs["reference"]
        builder.reference._update({key: value for key, value in campaign["reference"].items() if key in ports})
        explore = campaign["exploration"]["explore"]["explore"]
        builder.md.explore.code = explore["code"]
        if "options" in explore.get("metadata", {}):
            builder.md.explore.metadata.options = explore["metadata"]["options"]
        return builder

    # --- setup --------------------------------------------------------------------------------------------------
    def setup(self):
        """Make the structures of the requested properties and fix one k-point mesh per cell."""
        self.ctx.settings = load_config(self.inputs.config.get_dict(), ValidationConfig)
        self.ctx.structures = validation_structures(
            self.inputs.structure, self.inputs.config, metadata={"call_link_label": "validation_structures"}
        )
        self.ctx.dft = {key: node for key, node in self.ctx.structures.items() if key != MD_START}
        self.report(
            f"validating on {', '.join(self.ctx.settings.properties)}: {len(self.ctx.dft)} structure(s) to "
            f"compare with DFT"
        )

    def should_compare_with_dft(self) -> bool:
        return bool(self.ctx.dft)

    def should_run_md(self) -> bool:
        return MD_START in self.ctx.structures

    def _cells(self) -> dict:
        """Structure key → the ideal cell it is a copy of: the input cell for the equation of state, the ideal
        vacancy supercell for both vacancy cells."""
        cells = {key: self.inputs.structure for key in self.ctx.dft if key.startswith("eos_")}
        if VACANCY_PERFECT in self.ctx.dft:
            same = self.ctx.settings.vacancy.supercell == [1, 1, 1]
            ideal = self.inputs.structure if same else self.ctx.dft[VACANCY_PERFECT]
            cells.update({VACANCY_PERFECT: ideal, VACANCY_DEFECT: ideal})
        return cells

    # --- DFT ----------------------------------------------------------------------------------------------------
    def run_dft(self):
        """Label every distinct validation structure once (the training data's labeller and settings)."""
        unique, self.ctx.labelled_as = {}, {}
        for key, structure in sorted(self.ctx.dft.items()):
            first = unique.setdefault(structure_key(structure.get_ase()), key)
            self.ctx.labelled_as[key] = first
        cells = self._cells()
        inputs = AttributeDict(self.exposed_inputs(ReferenceWorkChain, namespace="reference"))
        inputs.structures = {key: self.ctx.dft[key] for key in unique.values()}
        inputs.cells = {key: cells[key] for key in inputs.structures}
        inputs.metadata = {"call_link_label": "reference"}
        distinct_cells = len({cell.pk for cell in cells.values()})
        self.report(f"DFT for {len(inputs.structures)} distinct structure(s), copies of {distinct_cells} cell(s)")
        return ToContext(reference=self.submit(ReferenceWorkChain, **inputs))

    def inspect_dft(self):
        """Each structure's label (the reference work chain's ``labels`` output), kept in its dataset."""
        node = self.ctx.reference
        failed = node.outputs.failed.get_dict() if "failed" in node.outputs else {}
        if failed:
            keys = sorted(key for key, first in self.ctx.labelled_as.items() if first in failed)
            reason = failed[sorted(failed)[0]]["reason"]
            return self.exit_codes.ERROR_DFT_POINT_FAILED.format(keys=", ".join(keys), reason=reason)
        if not node.is_finished_ok or "dataset" not in node.outputs:
            return self.exit_codes.ERROR_REFERENCE_FAILED.format(message=failure_text(node))
        sources = set(node.outputs.dataset.sources)
        self.ctx.labels = {}
        for key, first in sorted(self.ctx.labelled_as.items()):
            label = node.outputs.labels[first]
            if label.calculation_uuid not in sources:  # merge_dataset kept no frame of this calculation
                return self.exit_codes.ERROR_DFT_POINT_FAILED.format(keys=key, reason="its label is not in the dataset")
            self.ctx.labels[key] = label
        self.report(f"DFT done: {node.outputs.dataset.n_frames} label(s) for {len(self.ctx.labels)} structure(s)")
        return None

    def run_ann(self):
        """The potential's energies of the same structures (committee mean, in-process) and their extrapolation
        grades (how far their descriptors leave the training ranges)."""
        self.ctx.ann = evaluate_potential(
            self.inputs.potential, **self.ctx.dft, metadata={"call_link_label": "evaluate_potential"}
        )
        grades = self.ctx.ann["extrapolation"].get_dict()
        outside = [f"{key} ({grade:.2f})" for key, grade in sorted(grades.items()) if grade > EXTRAPOLATING]
        self.report(
            f"potential energies of {len(self.ctx.dft)} structure(s) computed; outside the training "
            f"descriptor ranges: {', '.join(outside) or 'none'}"
        )

    # --- MD -----------------------------------------------------------------------------------------------------
    def run_md(self):
        """NVE molecular dynamics with the potential alone, as one annpot explore job."""
        md = self.ctx.settings.md_stability
        stage = {
            "temperature": md.temperature,
            "ensemble": "nve",
            "steps": md.steps,
            "timestep": md.timestep,
            "sample_interval": md.sample_interval,
        }
        inputs = AttributeDict(self.exposed_inputs(AnnExploreBaseWorkChain, namespace="md"))
        inputs.explore = AttributeDict(inputs.explore)
        inputs.explore.potential = self.inputs.potential
        inputs.explore.structures = {"start": self.ctx.structures[MD_START]}
        inputs.explore.config = Dict({**MD_ENGINE, "stages": [stage]})
        inputs.metadata = {"call_link_label": "md_stability"}
        atoms = len(self.ctx.structures[MD_START].sites)
        self.report(f"NVE run: {atoms} atoms, {md.steps} steps of {md.timestep:g} fs from {md.temperature:g} K")
        return ToContext(md=self.submit(AnnExploreBaseWorkChain, **inputs))

    def inspect_md(self):
        node = self.ctx.md
        if not node.is_finished_ok:
            return self.exit_codes.ERROR_MD_FAILED.format(message=failure_text(node))
        trajectory = node.outputs.summary["trajectories"][0]
        self.report(f"NVE run ended {trajectory['reason']} after {trajectory['steps']} steps")
        return None

    # --- results ------------------------------------------------------------------------------------------------
    def results(self):
        """Compare DFT and potential (calcfunction) and attach the outputs."""
        inputs = {"config": self.inputs.config, "metadata": {"call_link_label": "compare_properties"}}
        if self.ctx.dft:
            inputs["ann_energies"], inputs["extrapolation"] = self.ctx.ann["energies"], self.ctx.ann["extrapolation"]
            for key, label in self.ctx.labels.items():
                inputs[f"structure_{key}"] = self.ctx.dft[key]
                inputs[f"label_{key}"] = label
            self.out("dataset", self.ctx.reference.outputs.dataset)
        if self.should_run_md():
            inputs["md_frames"], inputs["md_summary"] = self.ctx.md.outputs.frames, self.ctx.md.outputs.summary
        compared = compare_properties(**inputs)
        for name, node in compared.items():
            self.out(name, node)
        properties = compared["properties"].get_dict()
        self.report(_summary(properties))
        errors = properties.get("equation_of_state", {}).get("fit_errors")
        if errors:
            return self.exit_codes.ERROR_EOS_FIT_FAILED.format(errors="; ".join(f"{k}: {v}" for k, v in errors.items()))
        return None


def _summary(properties: dict) -> str:
    """One report line: the headline numbers, DFT / potential."""

    def pair(entry: dict, unit: str, digits: int = 3) -> str:
        values = [f"{entry[side]:.{digits}f}" if entry[side] is not None else "n/a" for side in ("dft", "ann")]
        return f"{' / '.join(values)} {unit}"

    parts = []
    if "equation_of_state" in properties:
        eos = properties["equation_of_state"]
        parts.append(f"V0 {pair(eos['equilibrium_volume_A3_per_atom'], 'Å³/atom')}")
        parts.append(f"B0 {pair(eos['bulk_modulus_GPa'], 'GPa', 1)}")
    if "vacancy" in properties:
        parts.append(f"unrelaxed E_f {pair(properties['vacancy']['unrelaxed_formation_energy_eV'], 'eV')}")
    text = f"DFT / potential: {'; '.join(parts)}" if parts else "no DFT comparison"
    if "md_stability" in properties:
        md = properties["md_stability"]
        drift, closest = md["energy_drift_meV_per_atom_per_ps"], md["min_distance_A"]
        text += (
            f"; NVE drift {'n/a' if drift is None else f'{drift:.3f}'} meV/atom/ps, closest approach "
            f"{'n/a' if closest is None else f'{closest:.3f}'} Å, {'stable' if md['stable'] else 'NOT stable'}"
        )
    return text
