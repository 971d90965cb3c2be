"""Inference speed: energy + forces on fcc Cu (256 and 2048 atoms), as a ratio to ASE's EMT in the same run.

Each calculator is called on the same sequence of configurations (a random walk of 0.005 Å per step and atom, so
neighbour lists with a Verlet skin are reused as in MD). Reports atom-steps per second for EMT, one model, and a
committee of 4 members (per-member forces, as the force deviation needs), in float32 on ``--threads`` threads.

Run: ``python bench/inference.py [--threads 2] [--seconds 5]``
"""

from __future__ import annotations

import argparse
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


def committee(size: int) -> Potential:
    potential = Potential(["Cu"], DESCRIPTOR, NETWORK, n_members=size)
    potential.networks.reset_parameters(torch.Generator().manual_seed(0))  # speed does not depend on the weights
    return potential


def atom_steps_per_second(calc, n_repeat: int, seconds: float) -> float:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((n_repeat,) * 3)
    rng = np.random.default_rng(0)
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    atoms.get_forces()  # warm-up: first neighbour list, allocations
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or steps < 3:
        atoms.positions += rng.normal(0.0, 0.005, atoms.positions.shape)
        atoms.get_forces()
        steps += 1
    return len(atoms) * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"descriptor {DESCRIPTOR.model_dump()}, network {NETWORK.hidden}"
    )
    print(f"{'atoms':>6} {'calculator':<22} {'atom-steps/s':>13} {'ms/step':>9} {'x EMT':>7}")
    for n_repeat in (4, 8):
        n_atoms = 4 * n_repeat**3
        baseline = atom_steps_per_second(EMT(), n_repeat, args.seconds)
        rows = [("ASE EMT", baseline)]
        for label, size in (("annpot, 1 model", 1), ("annpot, committee of 4", 4)):
            calc = AnnCalculator(committee(size), dtype="float32", skin=0.5)
            rows.append((label, atom_steps_per_second(calc, n_repeat, args.seconds)))
        for label, rate in rows:
            print(f"{n_atoms:6d} {label:<22} {rate:13.0f} {1000 * n_atoms / rate:9.2f} {rate / baseline:7.2f}")


if __name__ == "__main__":
    main()
