"""Walks of a campaign's provenance graph as a few QueryBuilder queries: one per level of the graph, never one per
node.

A campaign of 10^4 labels has some 3 × 10^4 processes. Walking it node by node (``called_descendants``,
``creator.inputs``, ``load_node`` per label) costs a query each, about 10 ms on PostgreSQL, minutes in all; a
recursive ``with_ancestors`` / ``with_descendants`` query follows every link of every data node and is slower still.
Here each level is one query over the whole frontier (ids in chunks, projecting only what the caller needs), so the
cost is a handful of queries whose rows grow with the graph.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

__all__ = ["called_processes", "creator_inputs", "in_chunks", "upstream"]

#: Ids per ``IN (...)`` filter: well within PostgreSQL's and SQLite's bound-parameter limits.
CHUNK = 5000


def in_chunks(values: Iterable) -> Iterator[list]:
    """``values`` sorted, in lists of at most :data:`CHUNK`."""
    values = sorted(values)
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def called_processes(root_pk: int, project: Sequence[str] = ()) -> list[tuple]:
    """``(depth, id, *project)`` of every process that ``root_pk`` called, directly (depth 1) or through the processes
    it called; ``project`` names QueryBuilder projections of the process (``attributes.paused``, ``ctime``, ...)."""
    from aiida.orm import ProcessNode, QueryBuilder

    rows, frontier, depth = [], [root_pk], 0
    while frontier:
        depth += 1
        found = []
        for chunk in in_chunks(frontier):
            query = QueryBuilder().append(ProcessNode, filters={"id": {"in": chunk}}, tag="caller")
            # a process links to another process only by CALL links: no link-type filter needed
            query.append(ProcessNode, with_incoming="caller", project=["id", *project])
            found.extend(query.all())
        rows.extend((depth, *row) for row in found)
        frontier = [row[0] for row in found]
    return rows


def creator_inputs(pks: Iterable[int], node_class, input_class) -> set[int]:
    """Ids of the ``input_class`` inputs of the calculations that created the ``node_class`` nodes ``pks``."""
    from aiida.common.links import LinkType
    from aiida.orm import CalculationNode, QueryBuilder

    found = set()
    for chunk in in_chunks(pks):
        query = QueryBuilder().append(node_class, filters={"id": {"in": chunk}}, tag="made")
        query.append(CalculationNode, with_outgoing="made", edge_filters={"type": LinkType.CREATE.value}, tag="creator")
        query.append(input_class, with_outgoing="creator", project="id")
        found.update(query.all(flat=True))
    return found


def upstream(pks: Iterable[int], node_class) -> set[int]:
    """Ids of the ``node_class`` nodes reached from ``pks`` through creator inputs of the same class, at any depth
    (a dataset's earlier datasets, a committee's members and their warm-start parents); ``pks`` not included."""
    found, frontier = set(), set(pks)
    while frontier:
        frontier = creator_inputs(frontier, node_class, node_class) - found - set(pks)
        found |= frontier
    return found
