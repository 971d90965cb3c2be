"""What ``campaign_scale.py`` measures on the ``annpot-scale`` profile: query times in a fresh interpreter, storage
sizes, per-label times of the ``ase`` labeller, the labelling phases, the daemon's CPU time.

Run as ``python scale_measurements.py query CAMPAIGN POTENTIAL`` it prints the in-process timings as JSON (a fresh
interpreter each time, as a CLI call has).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROFILE, DATABASE = "annpot-scale", "annpot_scale"
ASE_LABEL = "aiida.workflows:annpot.labelling.ase"


def environment(workdir: Path) -> dict:
    """The environment of every subprocess: this interpreter's scripts first, the profile's AIIDA_PATH."""
    return dict(
        os.environ, AIIDA_PATH=str(workdir / ".aiida"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )


def run(command: list[str], env: dict, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=check, timeout=timeout)


def query_in_process(campaign_pk: int, potential_pk: int) -> dict:
    """Run in a fresh interpreter (``query`` mode): start-up (load_profile, imports, a first query), then each
    query's own time, and the sizes."""
    start = time.perf_counter()
    from aiida import load_profile

    load_profile(PROFILE)
    from aiida.orm import Node, QueryBuilder, load_node

    from aiida_annpot.cli.lineage import learned_from, reference_calculations
    from aiida_annpot.cli.status import campaign_header, held_children, iteration_rows, iteration_table

    potential, campaign = load_node(potential_pk), load_node(campaign_pk)  # the node types' modules imported
    ready = time.perf_counter()
    rows = reference_calculations(potential)
    calculations = time.perf_counter()
    nodes = learned_from(potential)
    lineage = time.perf_counter()
    iterations = iteration_rows(campaign)
    lines = [campaign_header(campaign), *held_children(campaign), iteration_table(iterations) if iterations else ""]
    status = time.perf_counter()
    return {
        "startup_s": ready - start,
        "reference_calculations_s": calculations - ready,
        "learned_from_s": lineage - calculations,
        "status_s": status - lineage,
        "learned_from_count": len(rows),
        "learned_from_nodes": len(nodes),
        "status_lines": len("\n".join(lines).splitlines()),
        "database_bytes": database_bytes(),
        "nodes": QueryBuilder().append(Node).count(),
    }


def database_bytes() -> int:
    """pg_database_size of the loaded profile's database."""
    from aiida.manage import get_manager
    from sqlalchemy import text

    session = get_manager().get_profile_storage().get_session()
    return int(session.execute(text("SELECT pg_database_size(current_database())")).scalar())


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    run(command, env)
    return time.perf_counter() - start


def checkpoint(env: dict, workdir: Path, campaign_pk: int, potential_pk: int, labels: int, repeats: int) -> dict:
    """Every query at this dataset size, ``repeats`` times each (medians), and the storage sizes."""
    inside = [
        json.loads(run([sys.executable, __file__, "query", str(campaign_pk), str(potential_pk)], env).stdout)
        for _ in range(repeats)
    ]
    cli = {
        "help_s": [timed(["aiida-annpot", "--help"], env) for _ in range(repeats)],
        "list_cli_s": [timed(["aiida-annpot", "status"], env) for _ in range(repeats)],  # start-up + one query
        "status_cli_s": [timed(["aiida-annpot", "status", str(campaign_pk)], env) for _ in range(repeats)],
        "lineage_cli_s": [timed(["aiida-annpot", "lineage", str(potential_pk)], env) for _ in range(repeats)],
    }
    result = {key: statistics.median(values) for key, values in cli.items()}
    for key in ("startup_s", "reference_calculations_s", "learned_from_s", "status_s"):
        result[key] = statistics.median(entry[key] for entry in inside)
    sizes = ("learned_from_count", "learned_from_nodes", "status_lines", "database_bytes", "nodes")
    result.update({key: inside[-1][key] for key in sizes})
    result.update(labels=labels, potential=potential_pk, repository_bytes=repository_bytes(workdir))
    return result


def repository_bytes(workdir: Path) -> int:
    container = workdir / ".aiida" / f"repository_{PROFILE}"
    return sum(path.stat().st_size for path in container.rglob("*") if path.is_file())


def work_bytes(workdir: Path) -> int:
    """Bytes in the localhost computer's work folders (the calculations' remote folders, outside AiiDA's storage)."""
    return sum(path.stat().st_size for path in (workdir / ".aiida" / "work").rglob("*") if path.is_file())


def committee_potentials(campaign_pk: int) -> list[int]:
    """PKs of the campaign's committees so far, in iteration order."""
    from aiida.orm import QueryBuilder, WorkChainNode

    from aiida_annpot.data import AnnPotential

    query = QueryBuilder().append(WorkChainNode, filters={"id": campaign_pk}, tag="campaign")
    query.append(WorkChainNode, with_incoming="campaign", edge_filters={"label": {"like": "committee_%"}}, tag="train")
    query.append(AnnPotential, with_incoming="train", edge_filters={"label": "potential"}, project="id")
    query.order_by({AnnPotential: {"id": "asc"}})
    return query.all(flat=True)


def active_descendants(campaign_pk: int) -> int:
    """Processes of the campaign still running (the campaign itself not counted)."""
    from aiida_annpot.cli.provenance import called_processes
    from aiida_annpot.workflows.published import TERMINATED_STATES

    states = [row[2] for row in called_processes(campaign_pk, ("attributes.process_state",))]
    return sum(state not in TERMINATED_STATES for state in states)


def daemon_cpu_seconds() -> float:
    """User + system CPU time of this profile's daemon workers so far."""
    import psutil

    total = 0.0
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if PROFILE in cmdline and "daemon worker" in cmdline:
            times = process.cpu_times()
            total += times.user + times.system
    return total


def label_overheads(reference_pks: list[int]) -> list[dict]:
    """Per ase label of these ReferenceWorkChains: the label work chain's wall time (creation to last change) and
    the ``annpot label`` process's wall time from interpreter start and its EMT time (from its label file)."""
    from aiida.orm import CalcJobNode, FolderData, QueryBuilder, WorkChainNode, WorkflowNode

    from aiida_annpot.parsers.readers import read_label_file

    query = QueryBuilder().append(WorkChainNode, filters={"id": {"in": reference_pks}}, tag="reference")
    query.append(
        WorkflowNode,
        with_incoming="reference",
        filters={"process_type": ASE_LABEL},
        project=["ctime", "mtime"],
        tag="label",
    )
    query.append(CalcJobNode, with_incoming="label", tag="calc")
    query.append(FolderData, with_incoming="calc", edge_filters={"label": "retrieved"}, project="*")
    rows = []
    for ctime, mtime, retrieved in query.iterall():
        timings = read_label_file(retrieved.base.repository.get_object_content("label.json"))
        rows.append({"wall_s": (mtime - ctime).total_seconds(), **timings})
    return rows


def reference_phases(campaign_pk: int) -> list[dict]:
    """PK, wall time and label count of each ReferenceWorkChain of the campaign, in order."""
    from aiida.orm import QueryBuilder, WorkChainNode, WorkflowNode

    query = QueryBuilder().append(WorkChainNode, filters={"id": campaign_pk}, tag="campaign")
    query.append(
        WorkChainNode,
        with_incoming="campaign",
        edge_filters={"label": {"like": "reference_%"}},
        project=["id", "ctime", "mtime"],
    )
    phases = []
    for pk, ctime, mtime in sorted(query.all()):
        labels = QueryBuilder().append(WorkChainNode, filters={"id": pk}, tag="reference")
        labels.append(WorkflowNode, with_incoming="reference", filters={"process_type": ASE_LABEL})
        phases.append({"pk": pk, "wall_s": (mtime - ctime).total_seconds(), "labels": labels.count()})
    return phases


def serial_reference(campaign_pk: int, count: int) -> int:
    """A ReferenceWorkChain of ``count`` new rattled cells with one label at a time and the campaign's labeller,
    code, settings and options, run to its end on the daemon: the overhead of a label that waits for nothing."""
    from aiida.engine import submit
    from aiida.orm import Int, StructureData, load_node
    from ase.build import bulk

    from aiida_annpot.workflows.reference import ReferenceWorkChain

    reference = load_node(reference_phases(campaign_pk)[0]["pk"]).inputs
    structures = {}
    for index in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
        atoms.rattle(0.1, seed=100_000 + index)
        structures[f"serial{index:03d}"] = StructureData(ase=atoms)
    inputs = {key: reference[key] for key in ("labeller", "code", "settings", "options")}
    node = submit(ReferenceWorkChain, structures=structures, max_concurrent=Int(1), **inputs)
    while not load_node(node.pk).is_terminated:
        time.sleep(2.0)
    return node.pk


if __name__ == "__main__" and sys.argv[1:2] == ["query"]:
    print(json.dumps(query_in_process(int(sys.argv[2]), int(sys.argv[3]))))
