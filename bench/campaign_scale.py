"""Campaign throughput at scale (issue 13 item 6): an EMT Cu campaign of 1,000+ labels on PostgreSQL + RabbitMQ.

The labels come from the ``ase`` labeller (``annpot.labelling.ase``: one ``annpot label`` CalcJob per structure on
the localhost computer, EMT as a stand-in for DFT), so AiiDA's own cost dominates: small cells (4 Cu atoms), a
committee of 2 small networks trained for a few epochs, one short MD. Each iteration labels ``--per-iteration``
structures (the first from rattled copies, later ones from the MD frames: a trust window that takes every frame and a
cap of exactly that many), for ``--iterations`` iterations. The profile ``annpot-scale`` is made afresh on every run
(database dropped, repository removed; services started if needed), and the daemon runs ``--workers`` workers.

At every committee (after 1, 2, ... iterations' labels) the campaign is paused once its exploration has finished
(no label is running then), and measured on an idle daemon (:mod:`scale_measurements`):
- ``aiida-annpot status CAMPAIGN`` and ``aiida-annpot lineage POTENTIAL`` as CLI calls (wall time of the process);
  as start-up, ``aiida-annpot --help`` (Python, click, AiiDA imports; no profile) and ``aiida-annpot status`` listing
  the campaigns (imports, profile, database connection, one small query), which a call's time "beyond start-up" is
  taken from; and the same queries in a fresh interpreter after ``load_profile`` and a first node load
  (``reference_calculations``: "every reference calculation behind this potential", ``learned_from``: the same as
  nodes, the status lines), each ``--repeats`` times (median);
- the database (``pg_database_size``), the file repository (bytes under the disk-objectstore container) and nodes.
After the run: per label, the label work chain's wall time (creation to last change) and the ``annpot label``
process's own wall time from interpreter start (written by the engine); their difference is the AiiDA overhead per
label, at the campaign's concurrency and, for ``--serial`` more labels, one at a time. The labelling phases' wall
time per label (throughput) and the daemon workers' CPU time per label are printed too. The times are fitted
linearly against the labels and evaluated at 10^4 (the number of queries does not depend on the labels; the rows
they return do). ``--remeasure`` times the queries again on the last campaign's database; ``scale_synthetic.py``
times them on a campaign-shaped graph of 10^4 labels.

Usage: python bench/campaign_scale.py [--per-iteration 250] [--iterations 4] [--max-concurrent 8] [--workers 2]
       python bench/campaign_scale.py --remeasure [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from scale_measurements import (  # bench/ is the script's folder, hence on sys.path
    DATABASE,
    PROFILE,
    active_descendants,
    checkpoint,
    committee_potentials,
    daemon_cpu_seconds,
    database_bytes,
    environment,
    label_overheads,
    reference_phases,
    repository_bytes,
    run,
    serial_reference,
    work_bytes,
)

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ROOT / "scripts" / "services"
TARGET = 10_000  # labels to extrapolate to
#: Times fitted against the labels: CLI calls beyond start-up, and the in-process queries.
FITTED = ("status_beyond_s", "lineage_beyond_s", "status_s", "reference_calculations_s", "learned_from_s")


# --- the profile ------------------------------------------------------------------------------------------------
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
    print(f"remote work folders: {result.get('work_bytes', 0) / result['label_count'] / 1e3:.1f} kB/label")
    print("during the run:")
    print_queries(result["checkpoints"], result["empty"], result["extrapolation"])
    if "remeasured" in result:
        print(f"again on the final database (load before {result['remeasured']['machine_before']['loadavg']}):")
        print_queries(result["remeasured"]["checkpoints"], result["empty"], result["remeasured"]["extrapolation"])


def print_queries(points: list[dict], empty: dict, extrapolation: dict) -> None:
    print(
        "labels | DB MB (kB/label: all, since last) | repository MB (kB/label) | nodes | start-up: --help, status "
        "list, in-process | status CLI / in-process | lineage CLI / reference_calculations / learned_from"
    )
    previous = {"labels": 0, **empty}
    for p in points:
        n, database, repository = p["labels"], p["database_bytes"], p["repository_bytes"]
        print(
            f"{n:6d} | {database / 1e6:6.1f} ({(database - empty['database_bytes']) / n / 1e3:5.1f}, "
            f"{(database - previous['database_bytes']) / max(n - previous['labels'], 1) / 1e3:5.1f}) | "
            f"{repository / 1e6:6.1f} ({(repository - empty['repository_bytes']) / n / 1e3:5.1f}) | "
            f"{p['nodes']:6d} | {p['help_s']:.2f}, {p['list_cli_s']:.2f}, {p['startup_s']:.2f} | "
            f"{p['status_cli_s']:.2f} / {p['status_s']:.3f} | {p['lineage_cli_s']:.2f} / "
            f"{p['reference_calculations_s']:.3f} / {p['learned_from_s']:.3f}"
        )
        previous = p
    for key, fits in extrapolation.items():
        print(
            f"  {key} at {TARGET} labels: linear {fits['linear_at_target']:.3f} s ({fits['linear'][1] * 1e3:.3f} "
            f"ms/label), power law (exponent {fits['power'][1]:.2f}) {fits['power_at_target']:.3f} s"
        )


def beyond_startup(points: list[dict]) -> list[dict]:
    """A CLI call's time beyond its start-up: less ``aiida-annpot status`` listing the one campaign (imports,
    profile, database connection and one small query)."""
    for point in points:
        point["status_beyond_s"] = point["status_cli_s"] - point["list_cli_s"]
        point["lineage_beyond_s"] = point["lineage_cli_s"] - point["list_cli_s"]
    return points


def run_campaign(args, workdir: Path, env: dict) -> dict:
    """Fresh profile, daemon, the campaign with its checkpoints, the serial labels; the figures."""
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
    phases = reference_phases(campaign.pk)
    labels = label_overheads([phase["pk"] for phase in phases])
    return {
        "machine_before": before,
        "machine_after": machine(),
        "campaign": campaign.pk,
        "exit_status": load_node(campaign.pk).exit_status,
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
        "work_bytes": work_bytes(workdir),
        "checkpoints": beyond_startup(points),
        "target": TARGET,
        "extrapolation": {key: fit([(p["labels"], p[key]) for p in points], TARGET) for key in FITTED},
    }


def remeasure(args, workdir: Path, env: dict, result: dict) -> dict:
    """The queries again on the finished campaign's database, for each of its committees (``--repeats`` times):
    on a quieter machine than during the run, the labels behind each potential at the final database size."""
    from aiida import load_profile

    load_profile(PROFILE)
    points = []
    for iteration, potential in enumerate(committee_potentials(result["campaign"]), start=1):
        labels = iteration * args.per_iteration
        points.append(checkpoint(env, workdir, result["campaign"], potential, labels, args.repeats))
        print(json.dumps(points[-1]), flush=True)
    return {
        "machine_before": machine(),
        "checkpoints": beyond_startup(points),
        "extrapolation": {key: fit([(p["labels"], p[key]) for p in points], TARGET) for key in FITTED},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-iteration", type=int, default=250, help="labels per iteration (a multiple of 5)")
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--max-concurrent", type=int, default=8, help="labels in flight (the sliding window)")
    parser.add_argument("--workers", type=int, default=2, help="daemon workers")
    parser.add_argument("--repeats", type=int, default=3, help="timings per query and checkpoint (median)")
    parser.add_argument("--serial", type=int, default=20, help="labels run one at a time after the campaign")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "campaign_scale")
    parser.add_argument(
        "--remeasure", action="store_true", help="no new campaign: time the queries again on the last one's database"
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    env = environment(workdir)
    os.environ.update(AIIDA_PATH=env["AIIDA_PATH"], PATH=env["PATH"])
    path = workdir / "results.json"
    if args.remeasure:
        result = json.loads(path.read_text())
        result.setdefault("work_bytes", work_bytes(workdir))
        result["remeasured"] = remeasure(args, workdir, env, result)
    else:
        result = run_campaign(args, workdir, env)
    path.write_text(json.dumps(result, indent=1, default=str))
    report(result)


if __name__ == "__main__":
    main()
