"""CPU against GPU: energy + forces of one model on fcc Cu (256 and 2048 atoms), and one training epoch.

Inference follows ``bench/inference.py`` (same architecture, the same random walk of 0.005 Å per step, Verlet skin
0.5 Å, float32), on ``--threads`` CPU threads and on the first CUDA device. The training epoch is one pass over 128
EMT-labelled 32-atom Cu cells (batches of 8, float32 and float64, features in memory) after the features are
computed; the epoch alone is timed. Each figure is measured ``--repeats`` times and printed as a range. Without a
CUDA device the script says so and exits 0.

Run: ``python bench/gpu.py [--threads 2] [--seconds 3] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from inference import DESCRIPTOR, NETWORK, atom_steps_per_second, committee  # bench/ is the script's folder

from aiida_annpot.common.config import TrainingConfig
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.training import Trainer

TRAINING = {
    "descriptor": DESCRIPTOR.model_dump(),
    "network": NETWORK.model_dump(),
    "batch_size": 8,
    "max_epochs": 1000,
    "feature_store": "memory",
    "seed": 0,
}


def _span(values: list[float], digits: int = 0) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}"


def _training_data(path: Path, n_frames: int = 128) -> Path:
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(n_frames):
        atoms = bulk("Cu", "fcc", a=3.61 * (1 + rng.uniform(-0.02, 0.02)), cubic=True).repeat(2)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    ase.io.write(path, frames)
    return path


def epoch_seconds(dataset: Path, device: str, dtype: str, repeats: int) -> list[float]:
    """Wall time of ``repeats`` epochs of one trainer (after one untimed warm-up epoch)."""
    with tempfile.TemporaryDirectory() as workdir:
        config = TrainingConfig(dataset=str(dataset), device=device, dtype=dtype, **TRAINING)
        trainer = Trainer(config, workdir, log=lambda line: None)
        trainer.initial_loss = trainer._validation_loss()[0]
        times = []
        try:
            for _ in range(repeats + 1):
                start = time.perf_counter()
                trainer._epoch()
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        finally:
            trainer.train_set.close()
            trainer.validation_set.close()
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="per inference measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            f"no CUDA device: torch {torch.__version__} ({torch.version.cuda or 'CPU-only build'}) finds none; "
            "nothing to compare"
        )
        return
    torch.set_num_threads(args.threads)
    print(
        f"# CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores, {args.threads} threads, load "
        f"{os.getloadavg()[0]:.2f}), GPU {torch.cuda.get_device_name()}, torch {torch.__version__} "
        f"(CUDA {torch.version.cuda}); descriptor {DESCRIPTOR.model_dump()}, network {NETWORK.hidden}; "
        f"ranges over {args.repeats} runs"
    )
    print(f"{'measure':<34} {'CPU':>16} {'GPU':>16} {'GPU speed-up':>12}")
    for n_repeat in (4, 8):
        rates = {}
        for device in ("cpu", "cuda"):
            calc = AnnCalculator(committee(1), dtype="float32", skin=0.5, device=device)
            rates[device] = [atom_steps_per_second(calc, n_repeat, args.seconds) for _ in range(args.repeats)]
        ratio = [g / c for g, c in zip(rates["cuda"], rates["cpu"], strict=True)]
        label = f"E+F {4 * n_repeat**3} atoms, atom-steps/s"
        print(f"{label:<34} {_span(rates['cpu']):>16} {_span(rates['cuda']):>16} {_span(ratio, 2):>12}")
    with tempfile.TemporaryDirectory() as folder:
        dataset = _training_data(Path(folder) / "cu.extxyz")
        for dtype in ("float32", "float64"):
            seconds = {device: epoch_seconds(dataset, device, dtype, args.repeats) for device in ("cpu", "cuda")}
            speedup = [c / g for c, g in zip(seconds["cpu"], seconds["cuda"], strict=True)]
            label = f"training epoch {dtype}, s"
            print(f"{label:<34} {_span(seconds['cpu'], 3):>16} {_span(seconds['cuda'], 3):>16} {_span(speedup, 2):>12}")


if __name__ == "__main__":
    main()
