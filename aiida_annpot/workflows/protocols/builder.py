"""Turning merged protocol inputs into a ready ActiveLearningWorkChain builder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aiida.orm import Bool, Dict, Float, Int, List, Str, StructureData

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
    merged = merge(
        {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, "max_wallclock_seconds": int(wallclock)},
        options or {},
    )
    ranks = merged["resources"].get("num_machines", 1) * merged["resources"].get("num_mpiprocs_per_machine", 1)
    merged["withmpi"] = bool(mpi_allowed and merged.get("withmpi", ranks > 1))
    if not mpi_allowed:  # annpot is a serial program with threads
        merged["resources"] = {"num_machines": 1, "num_mpiprocs_per_machine": 1}
    return merged


def fill_builder(builder, inputs: dict, labeller_code, annpot_code, structures, options: dict | None):
    """Set every port of an ActiveLearningWorkChain ``builder`` from merged protocol ``inputs``.

    The labeller's settings are resolved here, once, from its protocol entries (``reference.<labeller>``); the
    campaign's ``reference.settings`` input then holds them in full, so the provenance shows every setting used.
    """
    from ..labelling import load_labeller

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
    labeller = load_labeller(reference["labeller"])
    first = structures[sorted(structures)[0]]
    settings = labeller.settings_from_protocol(reference.get(labeller.name) or {}, labeller_code, first)
    builder.reference.labeller = Str(labeller.name)
    builder.reference.code = labeller_code
    builder.reference.settings = Dict(settings)
    builder.reference.options = Dict(_options(options, reference["max_wallclock_seconds"], mpi_allowed=True))
    builder.reference.max_concurrent = Int(reference["max_concurrent"])

    committee = inputs["committee"]
    builder.committee.committee_size = Int(committee["committee_size"])
    builder.committee.config = Dict(committee["config"])
    builder.committee.train.train.code = annpot_code
    builder.committee.train.train.metadata.options = _options(options, committee["max_wallclock_seconds"], False)

    exploration = inputs["exploration"]
    builder.exploration.num_jobs = Int(exploration["num_jobs"])
    builder.exploration.explore.explore.code = annpot_code
    builder.exploration.explore.explore.metadata.options = _options(
        options, exploration["max_wallclock_seconds"], False
    )
    builder.exploration_config = Dict(exploration["config"])
    builder.stage_schedule = List(exploration["stage_schedule"])
    builder.start_supercells = List(exploration["start_supercells"])
    builder.start_vacancies = Bool(exploration["start_vacancies"])
    return builder
