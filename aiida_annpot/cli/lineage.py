"""``aiida-annpot lineage``: provenance questions answered from the graph.

For an ``AnnPotential``: the reference calculations whose labels it learned from (potential ← training ← dataset, whose
frames name the calculations that labelled them), whatever code made them, in a fixed number of queries. For a
``StructureData``: where it came from (the calcfunction that made it; for a selected structure the
AnnExploreCalculation whose MD frame it is and the committee that drove that MD; for a generated copy its parent
structure) and the reference calculations that labelled it.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import click
import numpy as np
from aiida.cmdline.utils import decorators, echo
from tabulate import tabulate

from .root import NODE, cmd_root, describe

__all__ = ["ReferenceCalculation", "learned_from", "reference_calculations", "structure_origin", "trained_on"]


def _energy(energy) -> str:
    return "-" if energy is None else f"{energy:.6f}"


class ReferenceCalculation(NamedTuple):
    """One reference calculation behind a potential, with what its label gave the training set (a named tuple:
    10^4 of them are made in a few milliseconds)."""

    pk: int
    uuid: str
    process_label: str
    ctime: datetime
    formula: str  # of the labelled structure
    energy: float  # the label's, eV


def trained_on(potential) -> set[int]:
    """Ids of the datasets ``potential``'s members were trained on, and its warm-start parents' (two queries, at any
    number of iterations)."""
    from ..data import AnnPotential, AtomisticDataset
    from .provenance import creator_inputs, upstream

    return creator_inputs({potential.pk} | upstream([potential.pk], AnnPotential), AnnPotential, AtomisticDataset)


def _frames(dataset) -> dict[str, tuple[str, float]]:
    """Calculation UUID → (formula, energy) of every frame of ``dataset`` that has a source, from its arrays: one
    formula per distinct composition, not per frame."""
    from aiida.orm.nodes.data.structure import get_formula
    from ase.data import chemical_symbols

    counts, numbers = dataset.get_array("n_atoms"), dataset.get_array("numbers")
    if not len(counts):
        return {}
    elements = np.unique(numbers)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    composition = np.stack([np.add.reduceat((numbers == z).astype(np.int64), starts) for z in elements], axis=1)
    distinct, which = np.unique(composition, axis=0, return_inverse=True)
    formulas = [
        get_formula([chemical_symbols[z] for z, n in zip(elements, row, strict=True) for _ in range(n)])
        for row in distinct
    ]
    arrays = (dataset.get_array("sources"), np.ravel(which), dataset.get_array("energies"))
    frames = zip(*(array.tolist() for array in arrays), strict=True)  # Python scalars: 10x faster to iterate
    return {uuid: (formulas[index], energy) for uuid, index, energy in frames if uuid}


def reference_calculations(potential, datasets: set[int] | None = None) -> list[ReferenceCalculation]:
    """Every reference calculation behind ``potential``, oldest first, whatever code made it: the calculations whose
    labels are frames of the datasets it (or a warm-start parent) was trained on.

    Each frame of a dataset records the UUID of the calculation that labelled it (``AtomisticDataset.sources``;
    ``merge_dataset`` writes it from the label, so a label the merge rejected as a duplicate is not among them, and
    a merged dataset holds every frame of the datasets it was merged from). So the answer is a fixed number of
    queries whatever the number of labels: the potentials and datasets (:mod:`.provenance`), then the calculations
    by UUID; formula and energy come from the dataset's arrays (the frame is the labelled structure, with the
    label's energy). ``datasets``: :func:`trained_on` of ``potential``, when the caller has it already.
    """
    from aiida.orm import CalculationNode, QueryBuilder

    from ..data import AtomisticDataset
    from .provenance import in_chunks

    frames = {}
    for chunk in in_chunks(trained_on(potential) if datasets is None else datasets):
        for dataset in QueryBuilder().append(AtomisticDataset, filters={"id": {"in": chunk}}).all(flat=True):
            frames.update(_frames(dataset))
    found = []
    for chunk in in_chunks(frames):
        projections = ["id", "uuid", "attributes.process_label", "ctime"]
        query = QueryBuilder().append(CalculationNode, filters={"uuid": {"in": chunk}}, project=projections)
        found.extend(ReferenceCalculation(*row, *frames[row[1]]) for row in query.all())
    return sorted(found, key=lambda calculation: (calculation.ctime, calculation.pk))


def learned_from(potential) -> list[tuple]:
    """(calculation, label) nodes of :func:`reference_calculations`, oldest first: the calculations, and their labels
    among those merged into the datasets (None for a frame that came without its label, from an uploaded dataset);
    a few bulk queries."""
    from aiida.common.links import LinkType
    from aiida.orm import CalculationNode, QueryBuilder

    from ..data import AtomisticDataset, LabelData
    from .provenance import in_chunks, upstream

    direct = trained_on(potential)
    rows = reference_calculations(potential, direct)
    calculations, labels = {}, {}
    # the uuids are projected beside the nodes: reading them from the nodes would reload each (AiiDA expires the
    # session's objects when a query's transaction ends)
    for chunk in in_chunks(row.uuid for row in rows):
        query = QueryBuilder().append(CalculationNode, filters={"uuid": {"in": chunk}}, project=["uuid", "*"])
        calculations.update(query.all())
    for chunk in in_chunks(direct | upstream(direct, AtomisticDataset)):
        query = QueryBuilder().append(AtomisticDataset, filters={"id": {"in": chunk}}, tag="dataset")
        query.append(CalculationNode, with_outgoing="dataset", edge_filters={"type": LinkType.CREATE.value}, tag="m")
        query.append(LabelData, with_outgoing="m", project=["id", "attributes.calculation_uuid", "*"])
        for _, uuid, label in sorted(query.distinct().all(), key=lambda row: -row[0]):  # the first label wins
            labels[uuid] = label
    return [(calculations[row.uuid], labels.get(row.uuid)) for row in rows]


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
