"""Training memory: features and Jacobians in memory vs on disk, EMT Cu up to 10^4 structures of 108 atoms (10^6
atoms).

Data: 3x3x3 conventional fcc Cu cells (108 atoms) under random ±3 % strain, rattled by 0.02-0.15 Å, labelled by
ASE's EMT; the sets of each size are prefixes of one list, cached under ``bench/out/``. Each configuration trains in a
fresh Python process, which reports its peak resident memory (VmHWM from /proc/self/status) while the Trainer is
built (reading the frames, features and Jacobians) and, after resetting the peak, while it trains; the setup time;
and the time between the first and second epoch lines of the log (one training pass and one validation pass). The
architecture is that of ``bench/training.py`` (Chebyshev 12/4, 5.5/4.0 Å, 18 features, 32-32 SiLU, batch 8), with
the default validation fraction (0.1). The large set trains with ``feature_store`` unset: the Trainer chooses.

Run: ``python bench/training_memory.py [--sizes 500 2000] [--repeats 3] [--large 10000] [--dtype float64]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.build import bulk
from emt_data import OUT, labelled  # bench/ is the script's folder, hence on sys.path

from aiida_annpot.common.config import TrainingConfig
from aiida_annpot.core.dataset import read_frames
from aiida_annpot.core.training import Trainer

CONFIG = {
    "descriptor": {
        "type": "chebyshev",
        "radial_order": 12,
        "angular_order": 4,
        "radial_cutoff": 5.5,
        "angular_cutoff": 4.0,
    },
    "network": {"hidden": [32, 32], "activation": "silu"},
    "loss": {"energy_weight": 10.0, "force_weight": 1.0},
    "batch_size": 8,
    "learning_rate": 1e-2,
    "seed": 0,
}
GIB = float(1 << 30)


def strained_cells(n: int, seed: int = 7) -> list:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((3, 3, 3))
        strain = rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(rng.uniform(0.02, 0.15), seed=int(rng.integers(1 << 31)))
        frames.append(labelled(atoms))
    return frames


def dataset(n: int, largest: int) -> Path:
    """The first ``n`` frames of the ``largest``-frame list, as an extxyz file (generated once)."""
    path = OUT / f"emt_cu108_{n}.extxyz"
    if not path.is_file():
        source = OUT / f"emt_cu108_{largest}.extxyz"
        if not source.is_file():
            OUT.mkdir(exist_ok=True)
            start = time.perf_counter()
            ase.io.write(source, strained_cells(largest))
            print(f"# generated {largest} EMT frames in {time.perf_counter() - start:.0f} s", flush=True)
        if n != largest:
            ase.io.write(path, ase.io.read(source, index=f":{n}"))
    return path


def _status(field: str) -> int:
    """A /proc/self/status memory field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def one_run(path: Path, store: str | None, dtype: str, epochs: int, threads: int) -> dict:
    """Build and train one Trainer in this process; returns the measurements."""
    torch.set_num_threads(threads)
    settings = {**CONFIG, "dataset": str(path), "dtype": dtype, "max_epochs": epochs, "early_stopping_patience": epochs}
    config = TrainingConfig.model_validate(settings | ({"feature_store": store} if store else {}))
    workdir = Path(tempfile.mkdtemp(dir=OUT, prefix="training_memory_"))
    stamps: list[tuple[float, str]] = []
    try:
        start = time.perf_counter()
        trainer = Trainer(config, workdir, log=lambda line: stamps.append((time.perf_counter(), line)))
        setup = time.perf_counter() - start
        setup_peak = _status("VmHWM")
        on_disk = sum(p.stat().st_size for p in workdir.rglob("*.bin"))
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        run_start = time.perf_counter()
        trainer.run()
        epochs_at = [t for t, line in stamps if line.startswith("epoch")]
        return {
            "store": trainer.feature_plan.kind,
            "plan": stamps[0][1],
            "estimated_gib": trainer.feature_plan.estimated_bytes / GIB,
            "on_disk_gib": on_disk / GIB,
            "setup_s": setup,
            "first_epoch_s": epochs_at[0] - run_start,  # includes the initial validation pass
            "epoch_s": epochs_at[1] - epochs_at[0] if len(epochs_at) > 1 else None,
            "setup_peak_gib": setup_peak / GIB,
            "training_peak_gib": _status("VmHWM") / GIB,
        }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def measure(path: Path, store: str | None, args, epochs: int) -> dict:
    """:func:`one_run` in a fresh interpreter (peak memory is per process)."""
    load = os.getloadavg()[0]
    command = [sys.executable, __file__, "--one", str(path), "--store", store or "auto", "--dtype", args.dtype]
    command += ["--epochs", str(epochs), "--threads", str(args.threads)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.splitlines()[-1]) | {"load": load}


def span(values) -> str:
    values = [v for v in values if v is not None]
    return f"{min(values):.2f}" if min(values) == max(values) else f"{min(values):.2f}–{max(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[500, 2000], help="structures, both stores")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", type=int, default=10_000, help="structures, the Trainer's choice (0: skip)")
    parser.add_argument("--large-epochs", type=int, default=2)
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        store = None if args.store == "auto" else args.store
        print(json.dumps(one_run(args.one, store, args.dtype, args.epochs, args.threads)))
        return

    largest = max([*args.sizes, args.large])
    paths = {n: dataset(n, largest) for n in sorted({*args.sizes, args.large} - {0})}
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB
    print(
        f"# {platform.machine()}, {os.cpu_count()} cores, {memory:.1f} GiB, torch {torch.__version__}, "
        f"{args.threads} threads, {args.dtype}; config {json.dumps(CONFIG)}",
        flush=True,
    )
    atoms = {}
    for n, path in paths.items():
        start = time.perf_counter()
        atoms[n] = sum(len(frame) for frame in read_frames(path))
        print(f"# reading {n} frames ({atoms[n]} atoms): {time.perf_counter() - start:.1f} s", flush=True)
    header = "| structures | atoms | store | setup s | epoch s | peak setup GiB | peak training GiB | estimate GiB "
    header += "| on disk GiB | load |"
    rows = [header, "|" + "---:|" * 3 + "---:|" * 7]
    for n in args.sizes:
        results = {"memory": [], "disk": []}
        for _ in range(args.repeats):
            for store in results:
                results[store].append(measure(paths[n], store, args, epochs=2))
                print(f"# {n} {store}: {json.dumps(results[store][-1])}", flush=True)
        for store, runs in results.items():
            rows.append(_row(n, atoms[n], store, runs))
    if args.large:
        run = measure(paths[args.large], None, args, epochs=args.large_epochs)
        print(f"# {args.large} auto: {json.dumps(run)}", flush=True)
        rows.append(_row(args.large, atoms[args.large], f"{run['store']} (chosen)", [run]))
        print(f"# {run['plan']}")
    print("\n".join(rows))


def _row(n: int, atoms: int, store: str, runs: list[dict]) -> str:
    epoch = [r["epoch_s"] if r["epoch_s"] is not None else r["first_epoch_s"] for r in runs]
    cells = [
        f"{n:,}",
        f"{atoms:,}",
        store,
        span([r["setup_s"] for r in runs]),
        span(epoch),
        span([r["setup_peak_gib"] for r in runs]),
        span([r["training_peak_gib"] for r in runs]),
        f"{runs[0]['estimated_gib']:.2f}",
        span([r["on_disk_gib"] for r in runs]),
        span([r["load"] for r in runs]),
    ]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    main()
