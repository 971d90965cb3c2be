"""``aiida-annpot lineage``: provenance questions answered from the graph.

For an ``AnnPotential``: the reference calculations whose labels it learned from (potential ← training ← dataset ←
merge_dataset ← label → its calculation, restricted to the frames its datasets kept), whatever code made them. For a
``StructureData``: where it came from (the calcfunction that made it; for a selected structure the
AnnExploreCalculation whose MD frame it is and the committee that drove that MD; for a generated copy its parent
structure) and the reference calculations that labelled it.
"""

from __future__ import annotations

import click
from aiida.cmdline.utils import decorators, echo
from tabulate import tabulate

from .root import NODE, cmd_root, describe

__all__ = ["learned_from", "structure_origin"]


def _energy(label) -> str:
    return "-" if label is None or label.energy is None else f"{label.energy:.6f}"


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


def learned_from(potential) -> list[tuple]:
    """(calculation, label) of every reference label in the datasets ``potential`` was trained on, oldest first.

    Walks direct links only (committee ← members ← AnnTrainCalculation ← dataset ← merge_dataset ← label, and
    warm-start parents and earlier datasets likewise): a recursive ``with_descendants`` query enumerates every path
    of the campaign's graph and takes minutes.
    """
    from aiida.orm import load_node

    from ..data import AnnPotential, AtomisticDataset, LabelData

    potentials = {potential.pk: potential, **_upstream(potential, AnnPotential)}
    datasets = {}
    for node in potentials.values():
        for dataset in _inputs_of_creator(node, AtomisticDataset):
            datasets.update({dataset.pk: dataset, **_upstream(dataset, AtomisticDataset)})
    kept = {uuid for dataset in datasets.values() for uuid in dataset.sources if uuid}  # rejected labels are not
    found = {}
    for dataset in datasets.values():
        for label in _inputs_of_creator(dataset, LabelData):
            if label.calculation_uuid in kept and label.calculation_uuid not in found:
                found[label.calculation_uuid] = (load_node(label.calculation_uuid), label)
    return sorted(found.values(), key=lambda pair: pair[0].ctime)


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


def _labelled_by(structure) -> list[tuple]:
    """(labelling work chain, its label or None) for every labeller run on ``structure``, oldest first."""
    from aiida.orm import QueryBuilder, StructureData, WorkflowNode

    from ..workflows.labelling import ENTRY_POINT_PREFIX

    query = QueryBuilder().append(StructureData, filters={"id": structure.pk}, tag="structure")
    query.append(
        WorkflowNode,
        with_incoming="structure",
        project="*",
        filters={"process_type": {"like": f"aiida.workflows:{ENTRY_POINT_PREFIX}%"}},
    )
    runs = sorted(query.all(flat=True), key=lambda node: node.ctime)
    return [(run, run.outputs.label if "label" in run.outputs else None) for run in runs]


@cmd_root.command("lineage")
@click.argument("node", type=NODE)
@decorators.with_dbenv()
def cmd_lineage(node):
    """Provenance of NODE: an AnnPotential's DFT calculations, or a StructureData's origin and DFT labels."""
    from aiida.orm import StructureData

    from ..data import AnnPotential

    if isinstance(node, AnnPotential):
        labels = learned_from(node)
        echo.echo(f"AnnPotential<{node.pk}> learned from {len(labels)} reference calculation(s):")
        rows = [
            [c.pk, c.process_label, c.uuid, c.inputs.structure.get_formula(), _energy(label)] for c, label in labels
        ]
    elif isinstance(node, StructureData):
        echo.echo("\n".join(structure_origin(node)))
        runs = _labelled_by(node)
        echo.echo(f"labelled by {len(runs)} reference run(s):")
        rows = [
            [r.pk, r.process_label, r.uuid, r.exit_status if r.is_terminated else r.process_state.value, _energy(label)]
            for r, label in runs
        ]
    else:
        echo.echo_critical(f"node {node.pk} is {describe(node)}; lineage knows AnnPotential and StructureData")
    headers = ("PK", "process", "UUID", "formula" if isinstance(node, AnnPotential) else "exit status", "energy (eV)")
    if rows:
        echo.echo(tabulate(rows, headers=headers, disable_numparse=True))
