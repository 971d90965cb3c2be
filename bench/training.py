"""Training time to accuracy on EMT Cu (see ``bench/emt_data.py``): ~600 training structures, 150 held-out frames.

The clock starts before the trainer is built, so it includes reading the data and precomputing descriptors and
Jacobians. After every epoch the current weights are evaluated on the held-out set with the clock paused. Reports
the wall time to a held-out force RMSE of ``--target`` (0.025 eV/Å) and the held-out errors after 300 s and 600 s.

Run: ``python bench/training.py [--threads 2] [--budget 600] [--target 0.025]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import time
from pathlib import Path

import emt_data  # bench/ is the script's folder, hence on sys.path
import torch

from aiida_annpot.common.config import TrainingConfig
from aiida_annpot.core.dataset import FeatureSet
from aiida_annpot.core.metrics import parity
from aiida_annpot.core.training import Trainer

CONFIG = {
    "descriptor": {
        "type": "chebyshev",
        "radial_order": 12,
        "angular_order": 4,
        "radial_cutoff": 5.5,
        "angular_cutoff": 4.0,
    },  # EMT's Cu cutoff is 5.38 Å: a shorter radial cutoff stalls the error
    "network": {"hidden": [32, 32], "activation": "silu"},
    "loss": {"energy_weight": 10.0, "force_weight": 1.0},
    "batch_size": 8,
    "learning_rate": 1e-2,
    "lr_schedule": "plateau",
    "lr_patience": 10,
    "lr_decay": 0.5,
    "min_learning_rate": 1e-5,
    "max_epochs": 100000,
    "early_stopping_patience": 100000,
    "validation_fraction": 0.05,
    "dtype": "float32",
    "seed": 0,
}
TARGET_FORCE_RMSE = 0.025
MARKS = (300.0, 600.0)


class _BudgetSpentError(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--workdir", default=str(emt_data.OUT / "training"))
    parser.add_argument("--target", type=float, default=TARGET_FORCE_RMSE, help="held-out force RMSE, eV/Å")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    emt_data.load("train"), emt_data.load("test")  # generate outside the clock
    config = TrainingConfig.model_validate({**CONFIG, "dataset": str(emt_data.OUT / "emt_cu_train.extxyz")})
    print(f"# {platform.machine()}, torch {torch.__version__}, {args.threads} threads; config {json.dumps(CONFIG)}")

    paused = 0.0
    start = time.perf_counter()
    trainer = Trainer(config, Path(args.workdir), log=lambda line: None)
    setup = time.perf_counter() - start
    test_pause = time.perf_counter()
    test_set = FeatureSet(emt_data.load("test"), trainer.potential, trainer.dtype)
    paused += time.perf_counter() - test_pause
    history = []

    def on_epoch(line: str) -> None:
        nonlocal paused
        pause = time.perf_counter()
        elapsed = pause - start - paused
        metrics = parity(trainer.potential, test_set).metrics()
        history.append((elapsed, trainer.epoch, metrics["force_rmse"], metrics["energy_rmse"]))
        paused += time.perf_counter() - pause
        if elapsed > args.budget:
            raise _BudgetSpentError

    trainer.log = on_epoch
    with contextlib.suppress(_BudgetSpentError):
        trainer.run()
    print(
        f"setup (read + features + Jacobians): {setup:.1f} s; epochs run: {history[-1][1]}; "
        f"train structures {len(trainer.train_set)}, held-out frames {len(test_set)}"
    )
    reached = next((h for h in history if h[2] <= args.target), None)
    print(
        f"time to held-out force RMSE {args.target} eV/Å: "
        + (f"{reached[0]:.0f} s (epoch {reached[1]})" if reached else "not reached")
    )
    for mark in MARKS:
        before = [h for h in history if h[0] <= mark]
        if before:
            _, epoch, force, energy = before[-1]
            print(
                f"after {mark:.0f} s (epoch {epoch}): held-out force RMSE {force:.4f} eV/Å, "
                f"energy RMSE {energy:.3f} meV/atom"
            )
    best = min(history, key=lambda h: h[2])
    print(f"best held-out force RMSE {best[2]:.4f} eV/Å at {best[0]:.0f} s (energy {best[3]:.3f} meV/atom)")


if __name__ == "__main__":
    main()
