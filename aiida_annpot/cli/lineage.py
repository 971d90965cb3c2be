"""``aiida-annpot lineage``: provenance questions answered from the graph.

For an ``AnnPotential``: the PwCalculations whose labels it learned from (potential ← training ← dataset ←
merge_dataset ← trajectory ← PwCalculation, restricted to the frames its datasets kept). For a ``StructureData``:
where it came from (the calcfunction that made it; for a selected structure the AnnExploreCalculation whose MD frame
it is and the committee that drove that MD; for a generated copy its parent structure) and the PwCalculations that
labelled it.
"""

from __future__ import annotations

import click
from aiida.cmdline.utils import decorators, echo
from tabulate import tabulate

from .root import NODE, cmd_root, describe

__all__ = ["learned_from", "structure_origin"]


def _energy(calculation) -> str:
    if "output_parameters" not in calculation.outputs:
        return "-"
    energy = calculation.outputs.output_parameters.get_dict().get("energy")
    return "-" if energy is None else f"{energy:.6f}"


def _inputs_of_creator(node, node_class) -> list:
    """Inputs of type ``node_class`` of the calculation that created ``node`` (none for an uploaded node)."""
    creator = node.creator
    return [] if creator is None else [link.node for link in creator.base.links.get_incoming(node_class=node_class)]


def _upstream(start, node_class) -> dict:
    """PK → node of type ``node_class`` reached from ``start`` through creator inputs of the same type."""
    found, stack = {}, [start]
    while stack:
        for parent in _inputs_of_creator(stack.pop(), node_class):
            if parent.pk not in found:
                found[parent.pk] = parent
                stack.append(parent)
    return found


def learned_from(potential) -> list:
    """The PwCalculations whose frames are in the datasets ``potential`` was trained on, oldest first.

    Walks direct links only (committee ← members ← AnnTrainCalculation ← dataset ← merge_dataset ← trajectory ←
    PwCalculation, and warm-start parents and earlier datasets likewise): a recursive ``with_descendants`` query
    enumerates every path of the campaign's graph and takes minutes.
    """
    from aiida.orm import TrajectoryData

    from ..data import AnnPotential, AtomisticDataset

    potentials = {potential.pk: potential, **_upstream(potential, AnnPotential)}
    datasets = {}
    for node in potentials.values():
        for dataset in _inputs_of_creator(node, AtomisticDataset):
            datasets.update({dataset.pk: dataset, **_upstream(dataset, AtomisticDataset)})
    kept = {uuid for dataset in datasets.values() for uuid in dataset.sources if uuid}  # rejected labels are not
    calculations = {}
    for dataset in datasets.values():
        for trajectory in _inputs_of_creator(dataset, TrajectoryData):
            calculation = trajectory.creator
            if calculation is not None and calculation.uuid in kept:
                calculations[calculation.pk] = calculation
    return sorted(calculations.values(), key=lambda node: node.ctime)


def _selection_origin(structure, creator) -> list[str]:
    """The exploration job and committee behind a structure made by ``select_candidates``."""
    from aiida.common.links import LinkType

    rank = int(structure.base.links.get_incoming(link_type=LinkType.CREATE).one().link_label.split("_")[-1])
    pick = creator.outputs.summary.get_dict()["selected"][rank]
    frames = creator.base.links.get_incoming(link_label_filter=pick["origin"]).one().node
    explore = frames.creator
    committee = explore.inputs.potential
    return [
        f"  the MD of {explore.process_label}<{explore.pk}> {explore.uuid} (stage {pick['stage']}, step "
        f"{pick['step']}, σ_F^max {pick['max_force_std']:.3f} eV/Å),",
        f"  driven by the committee AnnPotential<{committee.pk}> {committee.uuid}",
    ]


def structure_origin(structure) -> list[str]:
    """Lines saying which calcfunction made ``structure`` and from what."""
    from aiida.orm import StructureData

    creator = structure.creator
    head = f"StructureData<{structure.pk}> {structure.get_formula()}"
    if creator is None:
        return [f"{head}: an input structure, not made by a calculation"]
    lines = [f"{head}: made by {creator.process_label}<{creator.pk}> from"]
    if creator.process_label == "select_candidates":
        return lines + _selection_origin(structure, creator)
    parents = [link.node for link in creator.base.links.get_incoming(node_class=StructureData).all()]
    return lines + [f"  StructureData<{p.pk}> {p.get_formula()} {p.uuid}" for p in parents]


def _labelled_by(structure) -> list:
    from aiida.orm import CalcJobNode, QueryBuilder, StructureData

    query = QueryBuilder().append(StructureData, filters={"id": structure.pk}, tag="structure")
    query.append(CalcJobNode, with_incoming="structure", project="*",
                 filters={"attributes.process_label": "PwCalculation"})  # fmt: skip
    return sorted(query.all(flat=True), key=lambda node: node.ctime)


@cmd_root.command("lineage")
@click.argument("node", type=NODE)
@decorators.with_dbenv()
def cmd_lineage(node):
    """Provenance of NODE: an AnnPotential's DFT calculations, or a StructureData's origin and DFT labels."""
    from aiida.orm import StructureData

    from ..data import AnnPotential

    if isinstance(node, AnnPotential):
        calculations = learned_from(node)
        echo.echo(f"AnnPotential<{node.pk}> learned from {len(calculations)} PwCalculation(s):")
        rows = [[c.pk, c.uuid, c.inputs.structure.get_formula(), _energy(c)] for c in calculations]
    elif isinstance(node, StructureData):
        echo.echo("\n".join(structure_origin(node)))
        calculations = _labelled_by(node)
        echo.echo(f"labelled by {len(calculations)} PwCalculation(s):")
        rows = [[c.pk, c.uuid, c.exit_status if c.is_terminated else c.process_state.value, _energy(c)]
                for c in calculations]  # fmt: skip
    else:
        echo.echo_critical(f"node {node.pk} is {describe(node)}; lineage knows AnnPotential and StructureData")
    headers = ("PK", "UUID", "formula" if isinstance(node, AnnPotential) else "exit status", "energy (eV)")
    if rows:
        echo.echo(tabulate(rows, headers=headers, disable_numparse=True))
