"""Inference speed: energy + forces on fcc Cu (256 and 2048 atoms), as a ratio to ASE's EMT in the same run.

Each calculator is called on the same sequence of configurations (a random walk of 0.005 Å per step and atom, so
neighbour lists with a Verlet skin are reused as in MD). Reports atom-steps per second for EMT, one model, and a
committee of 4 members (per-member forces, as the force deviation needs), in float32 on ``--threads`` threads.

Each round measures EMT and then the models, ``--repeats`` rounds; the ratio to EMT is taken within a round and
reported as the range over rounds. ``--clock process`` counts this process's CPU time instead of wall time: with
one thread it stays meaningful while other work shares the machine (it does not undo the caches and memory
bandwidth they take).

``--tensor-ops`` adds the models with the descriptor's tensor operations instead of its compiled loops (the path
that GPUs and training take), in the same rounds.

Run: ``python bench/inference.py [--threads 2] [--seconds 5] [--repeats 3] [--clock wall|process] [--tensor-ops]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT

from aiida_annpot.common.config import ChebyshevConfig, NetworkConfig
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.model import Potential

# The architecture of the training benchmark (bench/training.py).
DESCRIPTOR = ChebyshevConfig(radial_order=12, angular_order=4, radial_cutoff=5.5, angular_cutoff=4.0)
NETWORK = NetworkConfig(hidden=[32, 32], activation="silu")


def committee(size: int, compiled: bool = True) -> Potential:
    potential = Potential(["Cu"], DESCRIPTOR, NETWORK, n_members=size)
    potential.networks.reset_parameters(torch.Generator().manual_seed(0))  # speed does not depend on the weights
    if hasattr(potential.descriptor, "compiled"):  # code before the compiled loops has no such switch
        potential.descriptor.compiled = compiled
    return potential


def atom_steps_per_second(calc, n_repeat: int, seconds: float, clock=time.perf_counter) -> float:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n_repeat,) * 3)
    rng = np.random.default_rng(0)
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    atoms.get_forces()  # warm-up: first neighbour list, allocations
    steps, start, wall = 0, clock(), time.perf_counter()
    while time.perf_counter() - wall < seconds or steps < 3:
        atoms.positions += rng.normal(0.0, 0.005, atoms.positions.shape)
        atoms.get_forces()
        steps += 1
    return len(atoms) * steps / (clock() - start)


def span(values, digits: int = 2) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if round(low, digits) == round(high, digits) else f"{low:.{digits}f}–{high:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each measures EMT and the models in turn")
    parser.add_argument(
        "--clock",
        choices=["wall", "process"],
        default="wall",
        help="process: CPU time of this process, for one thread on a machine that other work keeps busy",
    )
    parser.add_argument(
        "--tensor-ops", action="store_true", help="also the models through tensor operations (no compiled loops)"
    )
    args = parser.parse_args()
    if args.clock == "process" and args.threads != 1:
        parser.error("--clock process measures one thread only (idle OpenMP threads spin and count as CPU time)")
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"{args.clock} clock, {args.repeats} rounds; descriptor {DESCRIPTOR.model_dump()}, network {NETWORK.hidden}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("| atoms | calculator | atom-steps/s | ms/step | × EMT (same round) |\n|---:|---|---:|---:|---:|")
    calculators = {"ASE EMT": EMT}
    paths = [("", True), (" (tensor ops)", False)] if args.tensor_ops else [("", True)]
    for suffix, compiled in paths:
        for label, size in (("annpot, 1 model", 1), ("annpot, committee of 4 (per-member forces)", 4)):
            calculators[label + suffix] = lambda size=size, compiled=compiled: AnnCalculator(
                committee(size, compiled), dtype="float32", skin=0.5
            )
    for n_repeat in (4, 8):
        n_atoms = 4 * n_repeat**3
        rates = {label: [] for label in calculators}
        for _ in range(args.repeats):
            for label, make in calculators.items():
                rates[label].append(atom_steps_per_second(make(), n_repeat, args.seconds, clock))
        for label, values in rates.items():
            ratios = [value / emt for value, emt in zip(values, rates["ASE EMT"], strict=True)]
            ms = [1000 * n_atoms / value for value in values]
            print(f"| {n_atoms} | {label} | {span(values, 0)} | {span(ms)} | {span(ratios)} |", flush=True)
    print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
