"""Query-by-committee statistics from per-member predictions (formulas of DESIGN.md).

Per atom σ_F,i = sqrt(mean_k |F_i^k - F̄_i|²); per frame σ_F^max = max_i σ_F,i; energy σ_E = std_k(E^k) / N
(population standard deviations over the K members).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .model import Prediction


@dataclass
class CommitteeStatistics:
    """Committee mean and deviations of one structure. Energies in eV, forces in eV/Å, stress (3, 3) eV/Å³."""

    energy: float
    forces: torch.Tensor  # (N, 3)
    stress: torch.Tensor | None
    energy_std: float  # eV/atom
    forces_std: torch.Tensor  # (N,)

    @property
    def max_force_std(self) -> float:
        return float(self.forces_std.max()) if self.forces_std.numel() else 0.0


def committee_statistics(prediction: Prediction) -> CommitteeStatistics:
    """Mean and deviations over the K members of a single-structure :class:`~aiida_annpot.core.model.Prediction`."""
    energies = prediction.energy[:, 0].detach()
    member_forces = prediction.forces.detach()
    n_atoms = member_forces.shape[1]
    forces = member_forces.mean(0)
    forces_std = ((member_forces - forces) ** 2).sum(-1).mean(0).sqrt()
    return CommitteeStatistics(
        energy=float(energies.mean()),
        forces=forces,
        stress=None if prediction.stress is None else prediction.stress[:, 0].detach().mean(0),
        energy_std=float(energies.std(unbiased=False)) / n_atoms,
        forces_std=forces_std,
    )
