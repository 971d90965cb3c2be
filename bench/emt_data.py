"""EMT-labelled fcc Cu data for the benchmarks (ASE's EMT as a cheap stand-in for DFT).

Training pool (about 600 structures of 31–108 atoms): anisotropically strained cells, rattled cells, vacancies,
and Langevin MD at 300, 800 and 1400 K. Held-out test set: 150 frames of 108 atoms from 1000 K MD with a
different seed. Files are cached under ``bench/out/`` (delete them to regenerate).

Run: ``python bench/emt_data.py`` (prints the counts and the time it took).
"""

from __future__ import annotations

import time
from pathlib import Path

import ase.io
import numpy as np
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

OUT = Path(__file__).parent / "out"
LATTICE = 3.61  # Å, close to EMT's equilibrium for Cu


def labelled(atoms):
    """A copy of ``atoms`` carrying EMT energy, forces and stress as a single-point calculator."""
    atoms = atoms.copy()
    atoms.calc = EMT()
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def cell(repeat: int, scale: float = 1.0):
    return bulk("Cu", "fcc", a=LATTICE * scale, cubic=True).repeat((repeat,) * 3)


def strained(rng, n):
    frames = []
    for _ in range(n):
        atoms = cell(2)
        strain = rng.uniform(-0.04, 0.04, (3, 3))
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.rattle(0.01, seed=int(rng.integers(1 << 31)))
        frames.append(labelled(atoms))
    return frames


def rattled(rng, n):
    frames = []
    for _ in range(n):
        atoms = cell(int(rng.choice([2, 3])), rng.uniform(0.98, 1.02))
        atoms.rattle(rng.uniform(0.05, 0.2), seed=int(rng.integers(1 << 31)))
        frames.append(labelled(atoms))
    return frames


def vacancies(rng, n):
    frames = []
    for _ in range(n):
        atoms = cell(int(rng.choice([2, 3])), rng.uniform(0.99, 1.01))
        del atoms[int(rng.integers(len(atoms)))]
        atoms.rattle(rng.uniform(0.03, 0.12), seed=int(rng.integers(1 << 31)))
        frames.append(labelled(atoms))
    return frames


def md(rng, temperature, n_frames, interval=20, vacancy=False, equilibration=200):
    atoms = cell(3)
    if vacancy:
        del atoms[0]
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    dynamics = Langevin(
        atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.02 / units.fs, fixcm=False, rng=rng
    )
    dynamics.run(equilibration)
    frames = []
    for _ in range(n_frames):
        dynamics.run(interval)
        frames.append(labelled(atoms))
    return frames


def training_pool(seed: int = 1) -> list:
    rng = np.random.default_rng(seed)
    frames = strained(rng, 100) + rattled(rng, 150) + vacancies(rng, 100)
    for temperature in (300, 800, 1400):
        frames += md(rng, temperature, 50) + md(rng, temperature, 34, vacancy=True)
    return frames


def test_set(seed: int = 2) -> list:
    return md(np.random.default_rng(seed), 1000, 150, interval=25)


def load(name: str = "train") -> list:
    """The cached pool (``train``) or held-out set (``test``), generated on first use."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"emt_cu_{name}.extxyz"
    if not path.is_file():
        frames = training_pool() if name == "train" else test_set()
        ase.io.write(path, frames)
    return ase.io.read(path, index=":")


if __name__ == "__main__":
    for name in ("train", "test"):
        start = time.perf_counter()
        frames = load(name)
        sizes = sorted({len(f) for f in frames})
        print(f"{name}: {len(frames)} frames, sizes {sizes}, {time.perf_counter() - start:.1f} s")
