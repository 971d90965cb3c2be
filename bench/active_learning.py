"""Active-learning efficiency on EMT Cu: labels needed to reach a held-out force RMSE, committee vs random picks.

Outside AiiDA, with the engine's trainer, committee calculator and selection code, and ASE's EMT as a cheap
reference ("DFT"). Structures: 32-atom fcc Cu bulk cells, the same with a vacancy (31 atoms), and 48-atom (100)
slabs with 10 Å of vacuum ("surface"). Data, cached under ``bench/out/active_learning/``:

* pool: 400 (``uniform``: 404) unlabelled frames from EMT Langevin MD, one trajectory per entry of
  ``POOLS[--pool]``, the same for both arms and all seeds. ``skewed`` is mostly bulk at 300–600 K with 10–15% each
  of hot bulk, strained bulk, vacancy and surface frames; ``uniform`` holds the kinds and temperatures of the test
  set in equal shares;
* held-out test set: 120 frames of EMT MD of bulk, vacancy and surface cells at 300, 600, 900 and 1200 K (10 each,
  other MD seeds), never in a pool;
* seed set: ``--seed-frames`` labelled bulk cells (random strain up to 1.5%, rattled 0.02–0.08 Å), drawn anew for
  every run seed.

Both arms start from the seed set. Each iteration trains on all labels so far, records the held-out errors, then
adds max(``--batch``, ⌈``--growth`` × labels⌉) frames from the pool (the same schedule in both arms); a label is
the EMT energy and forces, computed when a frame is picked, and every label (seed set included) is counted. Models
are trained from scratch with the same settings, seed and ``--steps`` optimisation steps in both arms; the labelled
set is also the validation set (plateau schedule, best weights), so no label is held back.

* committee arm: ``--members`` models are trained (seeds 100·seed + k); the committee's
  :class:`~aiida_annpot.core.calculator.AnnCalculator` gives every remaining pool frame its σ_F^max and fingerprint,
  and :func:`~aiida_annpot.core.selection.select_candidates` picks frames in the trust window [``--trust-lo``,
  ``--trust-hi``) by farthest-point sampling, away from the fingerprints of the labelled set. When the window holds
  too few frames, trust_lo is halved (down to ``--trust-floor``) until it holds enough.
* random arm: frames drawn uniformly (seeded) from the remaining pool, one model (seed 100·seed).

The held-out errors are those of member 0 in the committee arm and of the one model in the random arm: the same
seed, settings and label count, so the arms differ only in which frames were labelled. A run stops at a force RMSE
of 0.03 eV/Å, at ``--max-labels``, or when the committee picks nothing. Printed: every iteration (JSON, also per
test kind), then per seed and arm the labels needed to first reach 0.05 and 0.03 eV/Å, and the ratios committee /
random (target: at most 0.5), as Σ over seeds committee / Σ random, then per seed.

Run: ``python bench/active_learning.py [--pool skewed|uniform] [--seeds 0 1 2] [--jobs 2]``
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import platform
import time
from pathlib import Path

import ase.io
import emt_data  # bench/ is the script's folder, hence on sys.path
import numpy as np
import torch
from ase import units
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import Stationary, thermalize_momenta

from aiida_annpot.common.config import SelectionConfig, TrainingConfig
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.dataset import FeatureSet
from aiida_annpot.core.exploration import min_distance
from aiida_annpot.core.metrics import parity
from aiida_annpot.core.selection import select_candidates
from aiida_annpot.core.training import MODEL, Trainer

OUT = emt_data.OUT / "active_learning"
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
    "lr_schedule": "plateau",
    "lr_patience": 10,
    "lr_decay": 0.5,
    "min_learning_rate": 1e-4,
    "checkpoint_interval": 1000000,
    "dtype": "float32",
}
TARGETS = (0.05, 0.03)
#: Pools of unlabelled frames: (kind, temperature K, lattice scale, frames) per EMT MD trajectory.
#: Kinds: 32-atom bulk cell, the same with a vacancy, and a 48-atom (100) slab with 10 Å of vacuum.
POOLS = {
    # what exploration mostly returns: frames near conditions the seed set covers, and 10–15% each of hot,
    # strained, defective and surface frames
    "skewed": [
        ("bulk", 300, 1.00, 120),
        ("bulk", 600, 1.00, 100),
        ("bulk", 900, 1.00, 40),
        ("bulk", 1200, 1.00, 20),
        ("bulk", 600, 0.98, 20),
        ("bulk", 600, 1.02, 20),
        ("vacancy", 300, 1.00, 20),
        ("vacancy", 900, 1.00, 20),
        ("surface", 300, 1.00, 20),
        ("surface", 900, 1.00, 20),
    ],
    # the kinds and temperatures of the test set in equal shares
    "uniform": [
        (kind, temperature, 1.00, 33 if kind == "bulk" else 34)
        for kind in ("bulk", "vacancy", "surface")
        for temperature in (300, 600, 900, 1200)
    ],
}
TEST_KINDS = ("bulk", "vacancy", "surface")
TEST = [(kind, temperature, 1.00, 10) for kind in TEST_KINDS for temperature in (300, 600, 900, 1200)]


def start_structure(kind: str, scale: float):
    """32-atom fcc bulk cell, the same minus one atom, or a 2×2×3 (100) slab with 5 Å of vacuum on each side."""
    if kind == "surface":
        atoms = emt_data.cell(1, scale).repeat((2, 2, 3))
        atoms.center(vacuum=5.0, axis=2)
        return atoms
    atoms = emt_data.cell(2, scale)
    if kind == "vacancy":
        del atoms[0]
    return atoms


def md_frames(seed: int, kind: str, temperature: float, scale: float, n_frames: int, interval: int = 50) -> list:
    """EMT Langevin MD: ``n_frames`` frames every ``interval`` steps of 2 fs, after 300 steps of equilibration."""
    rng = np.random.default_rng(seed)
    atoms = start_structure(kind, scale)
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    dynamics = Langevin(
        atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, fixcm=False, rng=rng
    )
    dynamics.run(300)
    frames = []
    for _ in range(n_frames):
        dynamics.run(interval)
        frame = atoms.copy()
        frame.info.update({"kind": kind, "temperature": temperature, "scale": scale})
        frames.append(frame)
    return frames


def cached(name: str, recipe: list, seed: int, labelled: bool) -> list:
    """Frames of ``recipe`` (one MD trajectory per entry, seeded ``seed + index``), cached in ``OUT``."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.extxyz"
    if not path.is_file():
        frames = []
        for index, entry in enumerate(recipe):
            frames += md_frames(seed + index, *entry)
        if labelled:
            frames = [emt_data.labelled(frame) for frame in frames]
        ase.io.write(path, frames)
    frames = ase.io.read(path, index=":")
    if not labelled:
        for frame in frames:
            frame.calc = None
    return frames


def seed_set(seed: int, n_frames: int) -> list:
    """Labelled near-equilibrium cells: ±1.5% random strain, rattled by 0.02–0.08 Å."""
    rng = np.random.default_rng([seed, 7])
    frames = []
    for _ in range(n_frames):
        atoms = emt_data.cell(2)
        strain = rng.uniform(-0.015, 0.015, (3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(rng.uniform(0.02, 0.08), seed=int(rng.integers(1 << 31)))
        frames.append(emt_data.labelled(atoms))
    return frames


def train(frames: list, seed: int, workdir: Path, steps: int) -> Trainer:
    """One model trained from scratch on ``frames`` for about ``steps`` optimisation steps (whole epochs).

    The labelled set doubles as the validation set (plateau schedule, best weights), so no label is held back.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    dataset = workdir / "labels.extxyz"
    ase.io.write(dataset, frames)
    epochs = math.ceil(steps / math.ceil(len(frames) / CONFIG["batch_size"]))
    config = TrainingConfig.model_validate(
        {
            **CONFIG,
            "dataset": str(dataset),
            "validation_dataset": str(dataset),
            "seed": seed,
            "max_epochs": epochs,
            "early_stopping_patience": epochs,
        }
    )
    trainer = Trainer(config, workdir, log=lambda line: None)
    trainer.run()
    return trainer


def pool_statistics(calc: AnnCalculator, frames: list, cutoff: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """σ_F^max (eV/Å), smallest distance (Å) and fingerprint of every frame under the committee ``calc``."""
    sigma, dmin, fingerprints = [], [], []
    for frame in frames:
        atoms = frame.copy()
        fingerprints.append(calc.get_property("fingerprint", atoms))
        sigma.append(calc.results["max_force_std"])
        dmin.append(min_distance(atoms, cutoff))
    return np.array(sigma), np.array(dmin), np.stack(fingerprints)


def select(trainers: list, labelled: list, candidates: list, n_new: int, args, row: dict) -> np.ndarray:
    """Committee picks among ``candidates``: trust window, then farthest-point sampling in fingerprint space."""
    calc = AnnCalculator([t.workdir / MODEL for t in trainers], dtype=CONFIG["dtype"])
    cutoff = calc.potential.descriptor.cutoff
    sigma, dmin, fingerprints = pool_statistics(calc, candidates, cutoff)
    reference = pool_statistics(calc, labelled, cutoff)[2]
    trust_lo = args.trust_lo
    while True:
        config = SelectionConfig(
            trust_lo=trust_lo,
            trust_hi=args.trust_hi,
            min_distance=args.min_distance,
            duplicate_threshold=args.duplicate_threshold,
            max_candidates=n_new,
        )
        result = select_candidates(sigma, dmin, fingerprints, config, reference)
        if len(result.selected) >= n_new or trust_lo <= args.trust_floor:
            break
        trust_lo = max(trust_lo / 2, args.trust_floor)
    row.update(
        {
            "sigma_median": round(float(np.median(sigma)), 4),
            "sigma_max": round(float(sigma.max()), 4),
            "trust_lo": trust_lo,
            "counts": {k: v for k, v in result.counts.items() if v},
        }
    )
    return result.selected


def label_of(frame) -> str:
    return f"{frame.info['kind']}{frame.info['temperature']}"


def run_arm(arm: str, seed: int, args) -> list[dict]:
    """One arm for one seed: the learning curve, as rows of labels, held-out errors and what was picked."""
    torch.set_num_threads(args.threads)
    pool = cached(f"pool_{args.pool}", POOLS[args.pool], 1000, labelled=False)
    test = cached("test", TEST, 2000, labelled=True)
    kinds = np.array([frame.info["kind"] for frame in test])
    labelled = seed_set(seed, args.seed_frames)
    remaining = list(range(len(pool)))
    rng = np.random.default_rng([seed, 11])
    workdir = OUT / "runs" / f"{args.pool}-{arm}-seed{seed}"
    test_sets = None
    rows = []
    while True:
        started = time.perf_counter()
        n_models = args.members if arm == "committee" else 1
        trainers = [train(labelled, 100 * seed + k, workdir / f"member{k}", args.steps) for k in range(n_models)]
        if test_sets is None:  # features do not depend on the weights
            potential = trainers[0].potential
            test_sets = {"all": FeatureSet(test, potential, trainers[0].dtype)}
            for kind in TEST_KINDS:
                test_sets[kind] = FeatureSet(
                    [test[i] for i in np.flatnonzero(kinds == kind)], potential, trainers[0].dtype
                )
        row = {"labels": len(labelled)}
        for kind, features in test_sets.items():
            metrics = parity(trainers[0].potential, features).metrics()
            if kind == "all":
                row.update({"force_rmse": metrics["force_rmse"], "energy_rmse": metrics["energy_rmse"]})
            else:
                row[f"force_rmse_{kind}"] = round(metrics["force_rmse"], 4)
        rows.append(row)
        done = row["force_rmse"] <= min(TARGETS) or len(labelled) >= args.max_labels or not remaining
        if not done:
            n_new = max(args.batch, math.ceil(args.growth * len(labelled)))
            picks = (
                select(trainers, labelled, [pool[i] for i in remaining], n_new, args, row)
                if arm == "committee"
                else rng.choice(len(remaining), size=min(n_new, len(remaining)), replace=False)
            )
            chosen = [remaining[i] for i in picks]
            labelled = labelled + [emt_data.labelled(pool[i]) for i in chosen]
            taken = set(chosen)
            remaining = [i for i in remaining if i not in taken]
            row["picked"] = sorted(label_of(pool[i]) for i in chosen)
            done = not chosen  # the committee found nothing to label even at --trust-floor
        row["seconds"] = round(time.perf_counter() - started, 1)
        if not args.quiet:
            print(f"{arm:9s} seed {seed}  " + json.dumps(row), flush=True)
        if done:
            return rows


def first_reaching(rows: list[dict], target: float) -> int | None:
    return next((r["labels"] for r in rows if r["force_rmse"] <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pool", choices=sorted(POOLS), default="skewed")
    parser.add_argument("--members", type=int, default=3, help="committee size of the active-learning arm")
    parser.add_argument("--batch", type=int, default=4, help="least labels added per iteration")
    parser.add_argument("--growth", type=float, default=0.25, help="else this fraction of the labels so far")
    parser.add_argument("--seed-frames", type=int, default=8, help="labelled structures to start from")
    parser.add_argument("--max-labels", type=int, default=150)
    parser.add_argument("--steps", type=int, default=3000, help="optimisation steps per training (whole epochs)")
    parser.add_argument("--trust-lo", type=float, default=0.05)
    parser.add_argument("--trust-hi", type=float, default=1.0)
    parser.add_argument("--trust-floor", type=float, default=0.005)
    parser.add_argument("--min-distance", type=float, default=1.5)
    parser.add_argument("--duplicate-threshold", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--jobs", type=int, default=2, help="arms and seeds run in this many processes")
    parser.add_argument("--quiet", action="store_true", help="no per-iteration lines")
    args = parser.parse_args()
    start = time.perf_counter()
    pool = cached(f"pool_{args.pool}", POOLS[args.pool], 1000, labelled=False)
    test = cached("test", TEST, 2000, labelled=True)
    print(
        f"# {platform.machine()}, torch {torch.__version__}, {args.jobs} jobs × {args.threads} threads; pool "
        f"{args.pool}: {len(pool)} frames, test {len(test)} frames; data {time.perf_counter() - start:.0f} s; "
        f"args {json.dumps(vars(args))}; training {json.dumps(CONFIG)}",
        flush=True,
    )
    tasks = [(arm, seed) for seed in args.seeds for arm in ("committee", "random")]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as workers:
        curves = workers.starmap(run_arm, [(arm, seed, args) for arm, seed in tasks])
    results = dict(zip(tasks, curves, strict=True))
    (OUT / f"results_{args.pool}.json").write_text(json.dumps({f"{a}-{s}": r for (a, s), r in results.items()}))

    print("\n| seed | arm | labels to 0.05 eV/Å | labels to 0.03 eV/Å | final labels | final force RMSE (eV/Å) |")
    print("|---:|---|---:|---:|---:|---:|")
    needed = {}
    for (arm, seed), rows in results.items():
        needed[arm, seed] = [first_reaching(rows, t) for t in TARGETS]
        cells = " | ".join(str(n) if n is not None else f"> {rows[-1]['labels']}" for n in needed[arm, seed])
        print(f"| {seed} | {arm} | {cells} | {rows[-1]['labels']} | {rows[-1]['force_rmse']:.4f} |")
    ratios = []
    for index, target in enumerate(TARGETS):
        pairs = [(needed["committee", s][index], needed["random", s][index]) for s in args.seeds]
        if all(a is not None and r is not None for a, r in pairs):
            mean = sum(a for a, _ in pairs) / sum(r for _, r in pairs)
            ratios.append(f"{target} eV/Å {mean:.2f} (seeds " + ", ".join(f"{a / r:.2f}" for a, r in pairs) + ")")
        else:
            ratios.append(f"{target} eV/Å: not reached in every run")
    print(f"\nruntime {time.perf_counter() - start:.0f} s")
    print("labels committee / random: " + "; ".join(ratios) + " (target ≤ 0.5)")


if __name__ == "__main__":
    main()
