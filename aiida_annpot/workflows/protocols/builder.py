"""Turning merged protocol inputs into a ready ActiveLearningWorkChain builder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiida.orm import Bool, Dict, Float, Int, List, Str, StructureData
from aiida.plugins import WorkflowFactory

from . import merge

__all__ = ["fill_builder"]


def _structures(structures: Mapping[str, StructureData] | Sequence[StructureData]) -> dict[str, StructureData]:
    """Structures as a namespace: mappings keep their keys, sequences become s00, s01, …"""
    if isinstance(structures, Mapping):
        return dict(structures)
    items = list(structures)
    return {f"s{index:02d}": structure for index, structure in enumerate(items)}


def _options(options: dict | None, wallclock: float, mpi_allowed: bool) -> dict:
    """Scheduler options: one process unless ``options`` says otherwise; MPI only where the code supports it."""
    merged = merge({"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1},
                    "max_wallclock_seconds": int(wallclock)}, options or {})  # fmt: skip
    ranks = merged["resources"].get("num_machines", 1) * merged["resources"].get("num_mpiprocs_per_machine", 1)
    merged["withmpi"] = bool(mpi_allowed and merged.get("withmpi", ranks > 1))
    if not mpi_allowed:  # annpot is a serial program with threads
        merged["resources"] = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
    return merged


def _pw_base_inputs(pw_code, structure: StructureData, pseudo_family: str, settings: dict, options: dict | None):
    """PwBaseWorkChain inputs from its own protocol with the campaign's cutoffs, k-point density and namelists."""
    from aiida_quantumespresso.common.types import ElectronicType

    PwBaseWorkChain = WorkflowFactory("quantumespresso.pw.base")
    parameters = merge({"SYSTEM": {"ecutwfc": settings["ecutwfc"], "ecutrho": settings["ecutrho"]}},
                       settings["pw_parameters"])  # fmt: skip
    overrides = {"pseudo_family": pseudo_family, "kpoints_distance": settings["kpoints_distance"],
                 "pw": {"parameters": parameters}}  # fmt: skip
    builder = PwBaseWorkChain.get_builder_from_protocol(
        pw_code, structure, protocol=settings["pw_protocol"], overrides=overrides,
        options=_options(options, settings["max_wallclock_seconds"], mpi_allowed=True),
        electronic_type=ElectronicType(settings["electronic_type"]),
    )  # fmt: skip
    inputs = builder._inputs(prune=True)
    inputs["pw"].pop("structure", None)
    inputs["pw"].pop("pseudos", None)
    return inputs


def fill_builder(builder, inputs: dict, pw_code, annpot_code, structures, pseudo_family: str, options: dict | None):
    """Set every port of an ActiveLearningWorkChain ``builder`` from merged protocol ``inputs``."""
    structures = _structures(structures)
    if not structures:
        raise ValueError("no structures given: a campaign needs at least one input structure")
    builder.structures = structures
    builder.max_iterations = Int(inputs["max_iterations"])
    builder.conv_accuracy = Float(inputs["conv_accuracy"])
    builder.warm_start = Bool(inputs["warm_start"])
    builder.validation_targets = Dict(inputs["validation_targets"])
    builder.generation = Dict(inputs["generation"])
    builder.test_set = Dict(inputs["test_set"])
    builder.test_targets = Dict(inputs["test_targets"])

    reference = inputs["reference"]
    first = structures[sorted(structures)[0]]
    builder.reference.pw_base = _pw_base_inputs(pw_code, first, pseudo_family, reference, options)
    builder.reference.pseudo_family = Str(pseudo_family)
    builder.reference.max_concurrent = Int(reference["max_concurrent"])
    if reference.get("kpoints_offset") is not None:
        builder.reference.kpoints_offset = List([float(value) for value in reference["kpoints_offset"]])
    if reference.get("bands_factor") is not None:
        builder.reference.bands_factor = Float(reference["bands_factor"])

    committee = inputs["committee"]
    builder.committee.committee_size = Int(committee["committee_size"])
    builder.committee.config = Dict(committee["config"])
    builder.committee.train.train.code = annpot_code
    builder.committee.train.train.metadata.options = _options(options, committee["max_wallclock_seconds"], False)

    exploration = inputs["exploration"]
    builder.exploration.num_jobs = Int(exploration["num_jobs"])
    builder.exploration.explore.explore.code = annpot_code
    builder.exploration.explore.explore.metadata.options = _options(options, exploration["max_wallclock_seconds"],
                                                                    False)  # fmt: skip
    builder.exploration_config = Dict(exploration["config"])
    builder.stage_schedule = List(exploration["stage_schedule"])
    builder.start_supercells = List(exploration["start_supercells"])
    builder.start_vacancies = Bool(exploration["start_vacancies"])
    return builder
