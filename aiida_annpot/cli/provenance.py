"""Walks of a campaign's provenance graph in a fixed number of queries, whatever its size.

A campaign of 10^4 labels has some 3 × 10^4 processes. Walking it node by node (``called_descendants``,
``creator.inputs``, ``load_node`` per label) costs a query each, about 10 ms on PostgreSQL, minutes in all;
QueryBuilder's ``with_ancestors`` / ``with_descendants`` follow every link of every data node and are slower still;
and a walk of one query per level costs one round trip per iteration of a campaign (each merge, each warm start adds
a level). So the two walks the CLI needs, down the call links and up the creator links between nodes of one type,
are single recursive SQL queries over AiiDA's link table (``WITH RECURSIVE``, which PostgreSQL and SQLite both run,
on the indexed ``db_dblink``); everything else is QueryBuilder, with ids in chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

__all__ = ["called_depths", "called_processes", "creator_inputs", "in_chunks", "upstream"]

#: Ids per ``IN (...)`` filter: well within PostgreSQL's and SQLite's bound-parameter limits.
CHUNK = 5000

#: Every process a process called, at any depth, with its depth (the call graph is a tree: UNION ALL ends).
_CALLED = """
WITH RECURSIVE called(id, depth) AS (
    SELECT output_id, 1 FROM db_dblink WHERE input_id = :root AND type IN ('call_calc', 'call_work')
    UNION ALL
    SELECT link.output_id, called.depth + 1 FROM db_dblink AS link JOIN called ON link.input_id = called.id
    WHERE link.type IN ('call_calc', 'call_work')
)
SELECT id, depth FROM called
"""

#: The nodes of one type reached from the start nodes through the inputs of their creators, at any depth.
_UPSTREAM = """
WITH RECURSIVE up(id) AS (
    SELECT id FROM db_dbnode WHERE id IN :start
    UNION
    SELECT used.input_id FROM up
    JOIN db_dblink AS made ON made.output_id = up.id AND made.type = 'create'
    JOIN db_dblink AS used ON used.output_id = made.input_id AND used.type = 'input_calc'
    JOIN db_dbnode AS parent ON parent.id = used.input_id AND parent.node_type = :node_type
)
SELECT id FROM up
"""


def _sql(statement: str, **parameters) -> list[tuple]:
    """Rows of a read-only SQL ``statement`` on the profile's storage; list parameters expand into ``IN`` lists."""
    from contextlib import nullcontext

    from aiida.manage import get_manager
    from sqlalchemy import bindparam, text

    expanding = [bindparam(name, expanding=True) for name, value in parameters.items() if isinstance(value, list)]
    session = get_manager().get_profile_storage().get_session()
    with nullcontext() if session.in_transaction() else session.begin():  # no transaction left open behind
        return [tuple(row) for row in session.execute(text(statement).bindparams(*expanding), parameters)]


def in_chunks(values: Iterable) -> Iterator[list]:
    """``values`` sorted, in lists of at most :data:`CHUNK`."""
    values = sorted(values)
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def called_depths(root_pk: int) -> dict[int, int]:
    """Id → depth of every process that ``root_pk`` called, directly (depth 1) or through the processes it called."""
    return dict(_sql(_CALLED, root=root_pk))


def called_processes(
    root_pk: int, project: Sequence[str] = (), filters: dict | None = None, depths: dict[int, int] | None = None
) -> list[tuple]:
    """``(depth, id, *project)`` of every process that ``root_pk`` called, at any depth, that matches the
    QueryBuilder ``filters``; ``project`` names QueryBuilder projections (``attributes.process_label``, ``ctime``).

    With ``filters`` (paused, killed or active processes: few in any profile) the matching processes of the whole
    profile come back in one query and those the walk reached are kept, rather than sending the walk's ids back in
    ``IN`` lists; ``depths`` reuses a walk of :func:`called_depths`.
    """
    from aiida.orm import ProcessNode, QueryBuilder

    depths = called_depths(root_pk) if depths is None else depths
    projections = ["id", *project]
    if filters:
        query = QueryBuilder().append(ProcessNode, filters=filters, project=projections)
        return sorted((depths[row[0]], *row) for row in query.all() if row[0] in depths)
    rows = []
    for chunk in in_chunks(depths):
        query = QueryBuilder().append(ProcessNode, filters={"id": {"in": chunk}}, project=projections)
        rows.extend((depths[row[0]], *row) for row in query.all())
    return sorted(rows)


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
    (a committee's members and their warm-start parents, a dataset's earlier datasets); ``pks`` not included."""
    start = sorted(set(pks))
    if not start:
        return set()
    return {row[0] for row in _sql(_UPSTREAM, start=start, node_type=node_class.class_node_type)} - set(start)
