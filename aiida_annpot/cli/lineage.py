"""``aiida-annpot lineage``: provenance questions answered from the graph.

For an ``AnnPotential``: the reference calculations whose labels it learned from (potential ← training ← dataset ←
merge_dataset ← label → its calculation, restricted to the frames its datasets kept), whatever code made them. For a
``StructureData``: where it came from (the calcfunction that made it; for a selected structure the
AnnExploreCalculation whose MD frame it is and the committee that drove that MD; for a generated copy its parent
structure) and the reference calculations that labelled it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import click
from aiida.cmdline.utils import decorators, echo
from tabulate import tabulate

from .root import NODE, cmd_root, describe

__all__ = ["ReferenceCalculation", "learned_from", "reference_calculations", "structure_origin"]


def _energy(energy) -> str:
    return "-" if energy is None else f"{energy:.6f}"


@dataclass(frozen=True)
class ReferenceCalculation:
    """One reference calculation behind a potential, with the label the potential learned from it."""

    pk: int
    uuid: str
    process_label: str
    ctime: datetime
    formula: str  # of the calculation's ``structure`` input; "-" without one
    energy: float | None  # the label's, eV
    label_pk: int


def _training_datasets(potential) -> set[int]:
    """Ids of every dataset behind ``potential``: those its members (and their warm-start parents) trained on, and
    the earlier datasets each was merged from."""
    from ..data import AnnPotential, AtomisticDataset
    from .provenance import creator_inputs, upstream

    potentials = {potential.pk} | upstream([potential.pk], AnnPotential)
    direct = creator_inputs(potentials, AnnPotential, AtomisticDataset)
    return direct | upstream(direct, AtomisticDataset)


def _formula(kinds: list | None, sites: list | None) -> str:
    """StructureData.get_formula from the projected attributes, without loading the node."""
    from aiida.orm.nodes.data.structure import Kind, get_formula

    if not sites:
        return "-"
    symbols = {kind["name"]: Kind(raw=kind).get_symbols_string() for kind in kinds}
    return get_formula([symbols[site["kind_name"]] for site in sites])


def reference_calculations(potential) -> list[ReferenceCalculation]:
    """Every reference calculation whose label is in the datasets ``potential`` was trained on, oldest first,
    whatever code made it; labels the merge rejected (duplicates) excluded.

    The datasets come from direct links (potential ← members ← training ← dataset ← merge_dataset ← earlier
    dataset), level by level; then three queries, whatever the number of labels: the datasets' frame sources, their
    merges' labels, and the calculations those labels name (:mod:`.provenance` says why not node by node).
    """
    from aiida.common.links import LinkType
    from aiida.orm import CalculationNode, QueryBuilder, StructureData

    from ..data import AtomisticDataset, LabelData
    from .provenance import in_chunks

    datasets = _training_datasets(potential)
    kept = set()  # the frames the datasets kept, by calculation UUID: a rejected label is not learned from
    for chunk in in_chunks(datasets):
        for (dataset,) in QueryBuilder().append(AtomisticDataset, filters={"id": {"in": chunk}}).iterall():
            kept.update(uuid for uuid in dataset.sources if uuid)
    labels = {}
    for chunk in in_chunks(datasets):
        query = QueryBuilder().append(AtomisticDataset, filters={"id": {"in": chunk}}, tag="dataset")
        query.append(CalculationNode, with_outgoing="dataset", edge_filters={"type": LinkType.CREATE.value}, tag="m")
        query.append(LabelData, with_outgoing="m", project=["id", "attributes.calculation_uuid", "attributes.energy"])
        for pk, uuid, energy in sorted(query.distinct().all()):
            if uuid in kept:
                labels.setdefault(uuid, (pk, energy))
    found = []
    for chunk in in_chunks(labels):
        query = QueryBuilder().append(
            CalculationNode,
            filters={"uuid": {"in": chunk}},
            project=["id", "uuid", "attributes.process_label", "ctime"],
            tag="calculation",
        )
        query.append(
            StructureData,
            with_outgoing="calculation",
            edge_filters={"label": "structure"},
            project=["attributes.kinds", "attributes.sites"],
            outerjoin=True,
        )
        for pk, uuid, process_label, ctime, kinds, sites in query.iterall():
            label_pk, energy = labels[uuid]
            found.append(ReferenceCalculation(pk, uuid, process_label, ctime, _formula(kinds, sites), energy, label_pk))
    return sorted(found, key=lambda calculation: (calculation.ctime, calculation.pk))


def learned_from(potential) -> list[tuple]:
    """(calculation, label) nodes of :func:`reference_calculations`, oldest first (two bulk queries)."""
    from aiida.orm import Node, QueryBuilder

    from .provenance import in_chunks

    rows = reference_calculations(potential)
    wanted = {row.pk for row in rows} | {row.label_pk for row in rows}
    nodes = {}
    for chunk in in_chunks(wanted):
        nodes.update(
            (node.pk, node) for (node,) in QueryBuilder().append(Node, filters={"id": {"in": chunk}}).iterall()
        )
    return [(nodes[row.pk], nodes[row.label_pk]) for row in rows]


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
        calculations = reference_calculations(node)
        echo.echo(f"AnnPotential<{node.pk}> learned from {len(calculations)} reference calculation(s):")
        rows = [[c.pk, c.process_label, c.uuid, c.formula, _energy(c.energy)] for c in calculations]
    elif isinstance(node, StructureData):
        echo.echo("\n".join(structure_origin(node)))
        runs = _labelled_by(node)
        echo.echo(f"labelled by {len(runs)} reference run(s):")
        rows = [
            [
                r.pk,
                r.process_label,
                r.uuid,
                r.exit_status if r.is_terminated else r.process_state.value,
                _energy(None if label is None else label.energy),
            ]
            for r, label in runs
        ]
    else:
        echo.echo_critical(f"node {node.pk} is {describe(node)}; lineage knows AnnPotential and StructureData")
    headers = ("PK", "process", "UUID", "formula" if isinstance(node, AnnPotential) else "exit status", "energy (eV)")
    if rows:
        echo.echo(tabulate(rows, headers=headers, disable_numparse=True))
