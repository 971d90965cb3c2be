"""Error metrics and parity data of a potential on a set of labelled structures.

Units: energy errors in meV/atom, force errors in eV/Å (per Cartesian component), stress errors in GPa.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .dataset import FeatureSet
from .disk_features import DiskFeatureSet

EV_PER_A3_TO_GPA = 160.21766208


@dataclass
class Parity:
    """Reference and predicted values, flattened: energies per atom (eV/atom), force components, stress (GPa)."""

    energy_ref: np.ndarray
    energy_pred: np.ndarray
    forces_ref: np.ndarray
    forces_pred: np.ndarray
    stress_ref: np.ndarray
    stress_pred: np.ndarray

    def metrics(self) -> dict[str, float]:
        """RMSE and MAE of energy (meV/atom) and forces (eV/Å), stress RMSE (GPa); NaN where no labels."""
        return {
            "energy_rmse": 1000.0 * _rmse(self.energy_pred - self.energy_ref),
            "energy_mae": 1000.0 * _mae(self.energy_pred - self.energy_ref),
            "force_rmse": _rmse(self.forces_pred - self.forces_ref),
            "force_mae": _mae(self.forces_pred - self.forces_ref),
            "stress_rmse": _rmse(self.stress_pred - self.stress_ref),
            "n_structures": int(self.energy_ref.size),
        }


def _rmse(errors: np.ndarray) -> float:
    errors = errors[np.isfinite(errors)]
    return float(np.sqrt(np.mean(errors**2))) if errors.size else float("nan")


def _mae(errors: np.ndarray) -> float:
    errors = errors[np.isfinite(errors)]
    return float(np.mean(np.abs(errors))) if errors.size else float("nan")


def parity(potential, features: FeatureSet | DiskFeatureSet, batch_size: int = 32, member: int | None = None) -> Parity:
    """Predictions of ``potential`` (committee mean, or one ``member``) against the labels of ``features``."""
    collected = {key: [] for key in ("e_ref", "e_pred", "f_ref", "f_pred", "s_ref", "s_pred")}
    groups = (range(start, min(start + batch_size, len(features))) for start in range(0, len(features), batch_size))
    for batch in features.batches(groups):
        prediction = potential.predict_from_features(
            batch.features,
            batch.jacobian,
            batch.species,
            batch.pairs,
            batch.structure_index,
            batch.n_structures,
            batch.volumes if batch.stress is not None else None,
        )
        select = (lambda t: t.mean(0)) if member is None else (lambda t: t[member])
        n_atoms = batch.n_atoms.to(batch.energy.dtype)
        collected["e_ref"].append(batch.energy / n_atoms)
        collected["e_pred"].append(select(prediction.energy).detach() / n_atoms)
        collected["f_ref"].append(batch.forces.reshape(-1))
        collected["f_pred"].append(select(prediction.forces).detach().reshape(-1))
        if batch.stress is not None:
            collected["s_ref"].append(batch.stress.reshape(-1) * EV_PER_A3_TO_GPA)
            collected["s_pred"].append(select(prediction.stress).detach().reshape(-1) * EV_PER_A3_TO_GPA)

    def join(key):
        return torch.cat(collected[key]).double().cpu().numpy() if collected[key] else np.zeros(0)

    return Parity(*(join(k) for k in ("e_ref", "e_pred", "f_ref", "f_pred", "s_ref", "s_pred")))
