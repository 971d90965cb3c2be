"""Campaign throughput at scale (issue 13 item 6): an EMT Cu campaign of 1,000+ labels on PostgreSQL + RabbitMQ.

The labels come from the ``ase`` labeller (``annpot.labelling.ase``: one ``annpot label`` CalcJob per structure on
the localhost computer, EMT as a stand-in for DFT), so AiiDA's own cost dominates: small cells (4 Cu atoms), a
committee of 2 small networks trained for a few epochs, one short MD. Each iteration labels ``--per-iteration``
structures (the first from rattled copies, later ones from the MD frames: a trust window that takes every frame and a
cap of exactly that many), for ``--iterations`` iterations. The profile ``annpot-scale`` is made afresh on every run
(database dropped, repository removed; services started if needed), and the daemon runs ``--workers`` workers.

At every committee (after 1, 2, ... iterations' labels) the campaign is paused once its exploration has finished
(no label is running then), and measured on an idle daemon:
- ``aiida-annpot status CAMPAIGN`` and ``aiida-annpot lineage POTENTIAL`` as CLI calls (wall time of the process),
  ``aiida-annpot --help`` as the CLI's start-up (Python, click, AiiDA imports; no profile), and the same queries in
  a fresh interpreter after ``load_profile`` (``learned_from``: "every reference calculation behind this potential";
  the status lines), each ``--repeats`` times (median);
- the database (``pg_database_size``), the file repository (bytes under the disk-objectstore container) and nodes.
After the run: per label, the label work chain's wall time (creation to last change) and the ``annpot label``
process's own wall time from interpreter start (written by the engine); their difference is the AiiDA overhead per
label at that concurrency. The labelling phases' wall time per label (throughput) and the daemon workers' CPU time
per label are printed too.

Usage: python bench/campaign_scale.py [--per-iteration 250] [--iterations 4] [--max-concurrent 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "scripts" / "services"
PROFILE, DATABASE = "annpot-scale", "annpot_scale"
ASE_LABEL = "aiida.workflows:annpot.labelling.ase"


# --- the profile ------------------------------------------------------------------------------------------------
def environment(workdir: Path) -> dict:
    """The environment of every subprocess: this interpreter's scripts first, the profile's AIIDA_PATH."""
    return dict(
        os.environ, AIIDA_PATH=str(workdir / ".aiida"), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )


def run(command: list[str], env: dict, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True, check=check, timeout=timeout)


def fresh_profile(workdir: Path, env: dict) -> None:
    """Services up, then ``annpot-scale`` made anew (idempotent: whatever an earlier run left is removed first)."""
    run(["bash", str(SERVICES / "start_postgres_rabbitmq.sh")], env)
    run(["verdi", "-p", PROFILE, "daemon", "stop"], env, check=False)
    run(["verdi", "profile", "delete", "--force", "--keep-data", PROFILE], env, check=False)
    run(["su", "postgres", "-c", f"dropdb --if-exists {DATABASE}"], env)
    for path in (workdir / ".aiida" / f"repository_{PROFILE}", workdir / ".aiida" / "work"):
        shutil.rmtree(path, ignore_errors=True)
    run(["bash", str(SERVICES / "make_psql_profile.sh"), PROFILE, DATABASE], env)


def campaign_builder(per_iteration: int, iterations: int, max_concurrent: int):
    """The EMT Cu campaign: ``per_iteration`` labels in each of ``iterations`` iterations, cheap training and MD."""
    from aiida.orm import StructureData, load_computer
    from ase.build import bulk

    from aiida_annpot.tools.local_setup import annpot_executable, ensure_code
    from aiida_annpot.workflows.active_learning import ActiveLearningWorkChain

    computer = load_computer("localhost")
    computer.set_minimum_job_poll_interval(0.0)  # labels take a second: poll the scheduler without delay
    code = ensure_code("annpot", computer, annpot_executable(), "annpot.train")
    amplitudes = [0.03, 0.06, 0.09, 0.12, 0.15]
    overrides = {
        "max_iterations": iterations,
        "test_set": {"generation": None, "md_frames": 0},  # labels for training only: one kind to count
        "test_targets": dict.fromkeys(("energy_rmse", "force_rmse", "bulk_modulus_error", "vacancy_error")),
        "generation": {
            "include_ideal": False,
            "volumes": 0,
            "anisotropic_strains": 0,
            "rattles": per_iteration // len(amplitudes),
            "rattle_amplitudes": amplitudes,
            "vacancies": 0,
        },
        "reference": {"labeller": "ase", "ase": {"calculator": "emt"}, "max_concurrent": max_concurrent},
        "committee": {
            "committee_size": 2,
            "config": {
                "descriptor": {"radial_order": 4, "angular_order": 2, "radial_cutoff": 4.0, "angular_cutoff": 3.0},
                "network": {"hidden": [8]},
                "max_epochs": 10,
                "batch_size": 32,
            },
        },
        "exploration": {
            "start_supercells": [[1, 1, 1]],
            "config": {
                "break_deviation": None,
                "min_distance": 1.0,
                # every frame a candidate, exactly per_iteration picked: the label count is fixed by design
                "selection": {
                    "trust_lo": 0.0,
                    "trust_hi": 1.0e6,
                    "min_distance": 1.5,
                    "candidate_fraction": 1.0,
                    "min_candidates": per_iteration,
                    "max_candidates": per_iteration,
                },
            },
            "stage_schedule": [[{"temperature": 300, "steps": 4 * per_iteration, "sample_interval": 2}]],
        },
    }
    structure = StructureData(ase=bulk("Cu", "fcc", a=3.61, cubic=True))
    builder = ActiveLearningWorkChain.get_builder_from_protocol(
        code, code, {"cu": structure}, protocol="fast", overrides=overrides, labeller="ase"
    )
    builder.metadata.label = f"scale {per_iteration}x{iterations}"
    return builder


# --- measurements -----------------------------------------------------------------------------------------------
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
    lines = [campaign_header(campaign), *held_children(campaign), iteration_table(iteration_rows(campaign))]
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


# --- the run ----------------------------------------------------------------------------------------------------
def machine() -> dict:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    return {
        "nproc": os.cpu_count(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "cpu": next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?"),
    }


def measure_checkpoints(env: dict, workdir: Path, campaign_pk: int, per_iteration: int, repeats: int) -> list[dict]:
    """Until the campaign ends: at each new committee, pause the campaign once its exploration is done (nothing
    else runs then), measure, play it again. Returns the checkpoints, each with the seconds it was held."""
    from aiida.orm import load_node

    measured, done = [], set()
    while True:
        campaign = load_node(campaign_pk)
        for iteration, potential_pk in enumerate(committee_potentials(campaign_pk), start=1):
            if potential_pk in done:
                continue
            held = time.perf_counter()
            if not campaign.is_terminated:
                run(["verdi", "-p", PROFILE, "process", "pause", str(campaign_pk), "--timeout", "120"], env)
            while active_descendants(campaign_pk):  # the exploration finishes; no label is in flight
                time.sleep(1.0)
            labels = iteration * per_iteration
            print(f"checkpoint: {labels} labels, potential <{potential_pk}>: measuring", flush=True)
            point = checkpoint(env, workdir, campaign_pk, potential_pk, labels, repeats)
            if not load_node(campaign_pk).is_terminated:
                run(["verdi", "-p", PROFILE, "process", "play", str(campaign_pk), "--timeout", "120"], env)
            point["held_s"] = time.perf_counter() - held
            print(json.dumps(point), flush=True)
            measured.append(point)
            done.add(potential_pk)
        if campaign.is_terminated and len(done) == len(committee_potentials(campaign_pk)):
            return measured
        time.sleep(2.0)


def fit(points: list[tuple[int, float]], target: int) -> dict:
    """Linear (a + b N) and power-law (c N^p) least-squares fits of time against labels, evaluated at ``target``."""
    import numpy as np

    n, t = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    slope, intercept = np.polyfit(n, t, 1)
    power, log_c = np.polyfit(np.log(n), np.log(np.maximum(t, 1e-6)), 1)
    return {
        "linear": [float(intercept), float(slope)],
        "linear_at_target": float(intercept + slope * target),
        "power": [float(np.exp(log_c)), float(power)],
        "power_at_target": float(np.exp(log_c) * target**power),
    }


def latency(rows: list[dict]) -> dict:
    """Means and medians of the per-label times of :func:`label_overheads`."""
    overhead = [row["wall_s"] - row["process_seconds"] for row in rows]
    return {
        "labels": len(rows),
        "wall_s": statistics.mean(row["wall_s"] for row in rows),
        "wall_median_s": statistics.median(row["wall_s"] for row in rows),
        "process_s": statistics.mean(row["process_seconds"] for row in rows),
        "compute_s": statistics.mean(row["compute_seconds"] for row in rows),
        "overhead_s": statistics.mean(overhead),
        "overhead_median_s": statistics.median(overhead),
    }


def report(result: dict) -> None:
    points = result["checkpoints"]
    print(f"\nmachine: {result['machine_before']} → load after {result['machine_after']['loadavg']}")
    print(
        f"campaign <{result['campaign']}>: exit status {result['exit_status']}, {result['label_count']} labels, "
        f"wall {result['wall_s']:.0f} s ({result['held_s']:.0f} s of it held at checkpoints)"
    )
    for what, summary in (
        (f"campaign, {result['max_concurrent']} at a time", result["latency"]),
        ("one at a time", result["serial_latency"]),
    ):
        print(
            f"per label ({what}, {summary['labels']} labels): work chain wall {summary['wall_s']:.2f} s (median "
            f"{summary['wall_median_s']:.2f}), annpot label process {summary['process_s']:.2f} s, EMT "
            f"{summary['compute_s'] * 1e3:.1f} ms; AiiDA overhead {summary['overhead_s']:.2f} s (median "
            f"{summary['overhead_median_s']:.2f})"
        )
    phase_wall = sum(phase["wall_s"] for phase in result["phases"])
    phase_labels = sum(phase["labels"] for phase in result["phases"])
    per_label = phase_wall / phase_labels
    print(
        f"throughput: labelling phases {phase_wall:.0f} s for {phase_labels} labels = {per_label:.3f} s/label wall; "
        f"minus the labeller's process time: {per_label - result['latency']['process_s']:.3f} s/label; daemon CPU "
        f"{result['daemon_cpu_s'] / result['label_count']:.2f} s/label"
    )
    print(
        "labels | DB MB (kB/label: all, since last) | repository MB (kB/label) | nodes | start-up: --help, status "
        "list, in-process | status CLI / in-process | lineage CLI / reference_calculations / learned_from"
    )
    previous = {"labels": 0, **result["empty"]}
    for p in points:
        n, database, repository = p["labels"], p["database_bytes"], p["repository_bytes"]
        print(
            f"{n:6d} | {database / 1e6:6.1f} ({(database - result['empty']['database_bytes']) / n / 1e3:5.1f}, "
            f"{(database - previous['database_bytes']) / (n - previous['labels']) / 1e3:5.1f}) | "
            f"{repository / 1e6:6.1f} ({(repository - result['empty']['repository_bytes']) / n / 1e3:5.1f}) | "
            f"{p['nodes']:6d} | {p['help_s']:.2f}, {p['list_cli_s']:.2f}, {p['startup_s']:.2f} | "
            f"{p['status_cli_s']:.2f} / {p['status_s']:.3f} | {p['lineage_cli_s']:.2f} / "
            f"{p['reference_calculations_s']:.3f} / {p['learned_from_s']:.3f}"
        )
        previous = p
    for key, fits in result["extrapolation"].items():
        print(
            f"{key} at {result['target']} labels: linear {fits['linear_at_target']:.3f} s "
            f"({fits['linear'][1] * 1e3:.3f} ms/label), power law (exponent {fits['power'][1]:.2f}) "
            f"{fits['power_at_target']:.3f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-iteration", type=int, default=250, help="labels per iteration (a multiple of 5)")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--max-concurrent", type=int, default=8, help="labels in flight (the sliding window)")
    parser.add_argument("--workers", type=int, default=2, help="daemon workers")
    parser.add_argument("--repeats", type=int, default=3, help="timings per query and checkpoint (median)")
    parser.add_argument("--serial", type=int, default=20, help="labels run one at a time after the campaign")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "campaign_scale")
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    env = environment(workdir)
    os.environ.update(AIIDA_PATH=env["AIIDA_PATH"], PATH=env["PATH"])
    before = machine()
    fresh_profile(workdir, env)

    from aiida import load_profile

    load_profile(PROFILE)
    from aiida.engine import submit
    from aiida.orm import load_node

    builder = campaign_builder(args.per_iteration, args.iterations, args.max_concurrent)
    empty = {"database_bytes": database_bytes(), "repository_bytes": repository_bytes(workdir)}
    run(["verdi", "-p", PROFILE, "daemon", "start", str(args.workers)], env)
    start = time.perf_counter()
    campaign = submit(builder)
    print(f"submitted campaign <{campaign.pk}>", flush=True)
    points = measure_checkpoints(env, workdir, campaign.pk, args.per_iteration, args.repeats)
    wall = time.perf_counter() - start
    daemon_cpu = daemon_cpu_seconds()
    serial = serial_reference(campaign.pk, args.serial)
    run(["verdi", "-p", PROFILE, "daemon", "stop"], env)
    node = load_node(campaign.pk)
    phases = reference_phases(campaign.pk)
    labels = label_overheads([phase["pk"] for phase in phases])
    target = 10_000
    for point in points:  # a CLI call beyond its start-up: less `aiida-annpot status` listing the one campaign
        point["status_beyond_s"] = point["status_cli_s"] - point["list_cli_s"]
        point["lineage_beyond_s"] = point["lineage_cli_s"] - point["list_cli_s"]
    keys = ("status_beyond_s", "lineage_beyond_s", "status_s", "reference_calculations_s", "learned_from_s")
    result = {
        "machine_before": before,
        "machine_after": machine(),
        "campaign": campaign.pk,
        "exit_status": node.exit_status,
        "max_concurrent": args.max_concurrent,
        "workers": args.workers,
        "wall_s": wall,
        "held_s": sum(p["held_s"] for p in points),
        "label_count": len(labels),
        "latency": latency(labels),
        "serial_latency": latency(label_overheads([serial])),
        "labels": labels,
        "phases": phases,
        "daemon_cpu_s": daemon_cpu,
        "empty": empty,
        "checkpoints": points,
        "target": target,
        "extrapolation": {key: fit([(p["labels"], p[key]) for p in points], target) for key in keys},
    }
    (workdir / "results.json").write_text(json.dumps(result, indent=1, default=str))
    report(result)


if __name__ == "__main__":
    if sys.argv[1:2] == ["query"]:
        print(json.dumps(query_in_process(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        main()
