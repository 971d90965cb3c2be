"""Batched exploration: atom-steps/s of ``annpot explore`` with trajectories one after another and side by side.

``run_exploration`` with 1, 4 and 16 trajectories, each count run serially (``batch_trajectories: 1``) and side by
side (``batch_trajectories: 16``, the default: one model call per MD step for the trajectories of a batch, whose
size the engine caps at 256 atoms per torch thread; with one trajectory this measures what the side-by-side
machinery costs), interleaved, ``--repeats`` times. Committee of 4 members of the training benchmark's architecture
(Chebyshev radial order 12 / cutoff 5.5 Å, angular order 4 / cutoff 4.0 Å, networks 32-32 SiLU), float32, trained
briefly (seeds 0-3) on EMT Cu so that the MD stays physical; cached under ``bench/out/exploration_batched/``. Start
structures: ``--cell`` repetitions of the conventional fcc Cu cell (default 2×2×4: 64 atoms, a = 3.61 Å) rattled by
0.05 Å with distinct seeds; one trajectory per start structure, one NVT stage at 600 K, 2 fs steps, a frame every 20
steps, Verlet skin 0.5 Å.

Throughput = trajectories × atoms × steps / wall time of the whole ``run_exploration`` call (model loading, frame
recording and the summary included). Printed per count: serial and batched atom-steps/s as min-max over the
repeats, the batched/serial ratio of the medians (serial measured in the same run), the share of the wall time spent
in model calls, and the load average before and after. Then the model call alone (``Potential.forward_many`` on
the start structures' neighbour pairs, best of ``--repeats`` × 20 calls): ms per structure with 1, 4 and 16
structures per call, which separates the call's fixed cost from its cost per atom.

Run: ``python bench/exploration_batched.py [--threads 2] [--steps 200] [--repeats 3] [--cell 2 2 4]``
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

import ase.io
import emt_data  # bench/ is the script's folder, hence on sys.path
import numpy as np
import torch
from ase.build import bulk

from aiida_annpot.common.config import ExplorationConfig, TrainingConfig
from aiida_annpot.core.exploration import ATOMS_PER_THREAD, run_exploration
from aiida_annpot.core.geometry import NeighborSearch
from aiida_annpot.core.model import Potential
from aiida_annpot.core.modelfile import load_potential
from aiida_annpot.core.training import MODEL, Trainer

OUT = emt_data.OUT / "exploration_batched"
MEMBERS = 4
COUNTS = (1, 4, 16)
BATCHED = 16  # batch_trajectories of the side-by-side runs
TRAINING = {
    "descriptor": {"type": "chebyshev", "radial_order": 12, "angular_order": 4, "radial_cutoff": 5.5,
                   "angular_cutoff": 4.0},
    "network": {"hidden": [32, 32], "activation": "silu"},
    "batch_size": 8,
    "learning_rate": 1e-2,
    "max_epochs": 40,
    "dtype": "float32",
}  # fmt: skip


def committee() -> list[str]:
    """Model files of the 4 members, trained on first use on rattled 32- and 108-atom cells and EMT MD frames."""
    paths = [OUT / f"member{seed}" / MODEL for seed in range(MEMBERS)]
    if all(path.is_file() for path in paths):
        return [str(path) for path in paths]
    OUT.mkdir(parents=True, exist_ok=True)
    data = OUT / "train.extxyz"
    if not data.is_file():
        rng = np.random.default_rng(0)
        ase.io.write(data, emt_data.rattled(rng, 40) + emt_data.md(rng, 600, 20) + emt_data.md(rng, 1200, 20))
    for seed, path in enumerate(paths):
        config = TrainingConfig.model_validate({**TRAINING, "dataset": str(data), "seed": seed})
        Trainer(config, path.parent, log=lambda line: None).run()
    return [str(path) for path in paths]


def start_structures(count: int, cell: tuple[int, int, int]) -> Path:
    path = OUT / f"starts_{count}_{'x'.join(map(str, cell))}.extxyz"
    cells = []
    for seed in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(cell)
        atoms.rattle(0.05, seed=seed)
        cells.append(atoms)
    ase.io.write(path, cells)
    return path


class ModelClock:
    """Seconds spent in :meth:`Potential.forward_many` (every model call of the exploration goes through it)."""

    def __init__(self):
        self.seconds = 0.0
        self._forward_many = Potential.forward_many
        clock = self

        def timed(potential, *args, **kwargs):
            start = time.perf_counter()
            try:
                return clock._forward_many(potential, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - start

        Potential.forward_many = timed


def explore(models: list[str], count: int, cell: tuple, width: int, steps: int, threads: int, clock: ModelClock):
    """(atom-steps/s, share of the time in model calls) of one exploration of ``count`` trajectories."""
    config = ExplorationConfig(
        models=models,
        structures=str(start_structures(count, cell)),
        stages=[{"temperature": 600.0, "steps": steps, "timestep": 2.0, "sample_interval": 20}],
        batch_trajectories=width,
        threads=threads,
        dtype="float32",
    )
    clock.seconds = 0.0
    start = time.perf_counter()
    summary = run_exploration(config, OUT / "run", log=lambda line: None)
    elapsed = time.perf_counter() - start
    if summary["stop_reasons"]["completed"] != count:  # an early stop would flatter the figure
        raise RuntimeError(f"not every trajectory completed: {summary['stop_reasons']}")
    return count * 4 * math.prod(cell) * steps / elapsed, clock.seconds / elapsed


def model_call_ms(models: list[str], count: int, cell: tuple, repeats: int) -> float:
    """Best time (ms) per structure of one ``forward_many`` call on ``count`` start structures."""
    potential = load_potential(models, torch.float32).eval()
    search = NeighborSearch(potential.descriptor.cutoff)
    requests = [
        (atoms.numbers, search(atoms.positions, atoms.cell.array, atoms.pbc), atoms.get_volume())
        for atoms in ase.io.read(start_structures(count, cell), ":")
    ]
    best = float("inf")
    for _ in range(repeats * 20):
        start = time.perf_counter()
        potential.forward_many(requests)
        best = min(best, time.perf_counter() - start)
    return 1000 * best / count


def span(values: list[float]) -> str:
    return f"{min(values):,.0f}–{max(values):,.0f}".replace(",", " ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell", type=int, nargs=3, default=[2, 2, 4], help="repetitions of the 4-atom fcc cell")
    args = parser.parse_args()
    cell = tuple(args.cell)
    atoms = 4 * math.prod(cell)
    models = committee()
    torch.set_num_threads(args.threads)
    clock = ModelClock()
    explore(models, 1, cell, 1, 20, args.threads, clock)  # warm-up: allocations, first neighbour lists
    load = os.getloadavg()
    per_call = min(BATCHED, max(1, ATOMS_PER_THREAD * args.threads // atoms))
    print(
        f"# {platform.machine()}, torch {torch.__version__}, {args.threads} threads, committee of {MEMBERS}, "
        f"float32, {atoms}-atom Cu, {args.steps} steps, side by side up to {per_call} per call; load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print("| trajectories | serial atom-steps/s | batched atom-steps/s | batched / serial | in model calls |")
    print("|---:|---:|---:|---:|---:|")
    for count in COUNTS:
        rates = {1: [], BATCHED: []}
        shares = {1: [], BATCHED: []}
        for _ in range(args.repeats):
            for width in (1, BATCHED):  # serial, then side by side, in the same minute
                rate, share = explore(models, count, cell, width, args.steps, args.threads, clock)
                rates[width].append(rate)
                shares[width].append(share)
        ratio = statistics.median(rates[BATCHED]) / statistics.median(rates[1])
        share = f"{statistics.median(shares[1]):.0%} / {statistics.median(shares[BATCHED]):.0%}"
        print(f"| {count} | {span(rates[1])} | {span(rates[BATCHED])} | {ratio:.2f} | {share} |", flush=True)
    calls = ", ".join(f"{count}: {model_call_ms(models, count, cell, args.repeats):.2f}" for count in COUNTS)
    print(f"\nmodel call alone, ms per {atoms}-atom structure with 1, 4, 16 structures per call: {calls}")
    load = os.getloadavg()
    print(f"# load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
