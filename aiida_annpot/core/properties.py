"""Physical properties a potential is validated on, as pure functions (numpy and ASE; no torch, no AiiDA).

- **Equation of state**: isotropically scaled copies of a cell, fitted by the third-order Birch–Murnaghan
  equation (``ase.eos``) for the equilibrium volume, energy and bulk modulus.
- **Unrelaxed vacancy formation energy**: ``E_f = E(N−1) − (N−1)/N · E(N)``, atoms kept at their ideal sites.
- **MD stability**: the drift of the total energy of an NVE run (slope of a straight line through the total energy
  per atom against time) and the closest approach of two atoms.

Units: Å, eV, GPa, fs for inputs of MD, ps and meV/atom/ps for the drift.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms, units
from ase.eos import EquationOfState, birchmurnaghan

from .generate import supercell

__all__ = [
    "BirchMurnaghanFit",
    "compare",
    "energy_drift",
    "fit_birch_murnaghan",
    "md_stability",
    "scaled_cells",
    "vacancy_cells",
    "vacancy_formation_energy",
    "volume_factors",
]


@dataclass(frozen=True)
class BirchMurnaghanFit:
    """Third-order Birch–Murnaghan fit of energy against volume (both per atom, or both per cell)."""

    volume: float  # equilibrium volume V0, Å³ (per atom when the data were)
    energy: float  # E0 at V0, eV
    bulk_modulus: float  # B0, GPa
    bulk_modulus_derivative: float  # B0' (dimensionless)
    bracketed: bool  # V0 lies inside the sampled volumes

    def energy_at(self, volumes) -> np.ndarray:
        """The fitted curve E(V) at ``volumes``."""
        b0 = self.bulk_modulus * units.GPa
        return birchmurnaghan(
            np.asarray(volumes, dtype=float), self.energy, b0, self.bulk_modulus_derivative, self.volume
        )


def volume_factors(points: int, max_volume_strain: float) -> np.ndarray:
    """``points`` volume ratios V/V0 evenly spaced over [1 − max_volume_strain, 1 + max_volume_strain]."""
    if points < 1 or not 0.0 < max_volume_strain < 1.0:
        raise ValueError(f"need points ≥ 1 and 0 < max_volume_strain < 1, got {points} and {max_volume_strain}")
    return np.linspace(1.0 - max_volume_strain, 1.0 + max_volume_strain, points)


def scaled_cells(atoms: Atoms, factors: Sequence[float]) -> list[Atoms]:
    """Copies of ``atoms`` with the cell scaled isotropically to ``factor`` times its volume, atoms scaled along."""
    copies = []
    for factor in factors:
        copy = atoms.copy()
        copy.calc = None
        copy.set_cell(atoms.cell.array * float(factor) ** (1.0 / 3.0), scale_atoms=True)
        copies.append(copy)
    return copies


def vacancy_cells(atoms: Atoms, repeat: Sequence[int], site: int) -> tuple[Atoms, Atoms]:
    """The perfect supercell of ``atoms`` and the same supercell with atom ``site`` removed.

    :raises ValueError: fewer than 2 atoms in the supercell, or ``site`` is not an atom of it.
    """
    perfect = supercell(atoms, tuple(repeat))
    if len(perfect) < 2:
        raise ValueError(f"a vacancy needs at least 2 atoms, the supercell {list(repeat)} has {len(perfect)}")
    if not 0 <= site < len(perfect):
        raise ValueError(f"vacancy site {site} is out of range: the supercell {list(repeat)} has {len(perfect)} atoms")
    defect = perfect.copy()
    del defect[site]
    return perfect, defect


def fit_birch_murnaghan(volumes: Sequence[float], energies: Sequence[float]) -> BirchMurnaghanFit:
    """Fit E(V) with ASE's third-order Birch–Murnaghan equation.

    :param volumes: Å³ (per atom or per cell, as ``energies``).
    :param energies: eV.
    :raises ValueError: fewer than 5 points, non-finite data, or a fit that does not converge or is unphysical
        (non-positive volume or bulk modulus, or a minimum farther from the sampled volumes than their span; a
        minimum just outside them is kept, with ``bracketed`` False).
    """
    volumes, energies = np.asarray(volumes, dtype=float), np.asarray(energies, dtype=float)
    if volumes.shape != energies.shape or volumes.size < 5:
        raise ValueError(f"a Birch–Murnaghan fit needs at least 5 (volume, energy) pairs, got {volumes.size}")
    if not (np.isfinite(volumes).all() and np.isfinite(energies).all()):
        raise ValueError("the volumes and energies of a Birch–Murnaghan fit must be finite")
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    try:
        with warnings.catch_warnings():  # curve_fit's covariance warning; bracketing is reported in the result
            warnings.simplefilter("ignore")
            v0, e0, b0 = eos.fit(warn=False)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ValueError(f"the Birch–Murnaghan fit did not converge: {exc}") from exc
    bp = float(eos.eos_parameters[2])
    if not (np.isfinite([v0, e0, b0, bp]).all() and v0 > 0 and b0 > 0):
        raise ValueError(f"the Birch–Murnaghan fit is unphysical: V0 = {v0:.4g} Å³, B0 = {b0 / units.GPa:.4g} GPa")
    low, high = volumes.min(), volumes.max()
    if not low - (high - low) <= v0 <= high + (high - low):
        raise ValueError(
            f"the Birch–Murnaghan minimum V0 = {v0:.4g} Å³ lies farther outside the sampled "
            f"volumes [{low:.4g}, {high:.4g}] Å³ than their span: no minimum near them"
        )
    return BirchMurnaghanFit(
        volume=float(v0),
        energy=float(e0),
        bulk_modulus=float(b0 / units.GPa),
        bulk_modulus_derivative=bp,
        bracketed=bool(volumes.min() < v0 < volumes.max()),
    )


def vacancy_formation_energy(energy_perfect: float, n_atoms: int, energy_defect: float) -> float:
    """``E_f = E(N−1) − (N−1)/N · E(N)`` in eV, for the perfect cell of ``n_atoms`` atoms and the cell without one."""
    if n_atoms < 2:
        raise ValueError(f"a vacancy needs at least 2 atoms, got {n_atoms}")
    return float(energy_defect - (n_atoms - 1) / n_atoms * energy_perfect)


def energy_drift(times: Sequence[float], energies: Sequence[float]) -> float:
    """Slope of the least-squares line through (``times``, ``energies``): energy units per time unit.

    :raises ValueError: fewer than 2 distinct times.
    """
    times, energies = np.asarray(times, dtype=float), np.asarray(energies, dtype=float)
    if times.size < 2 or np.ptp(times) == 0.0:
        raise ValueError(f"a drift needs at least 2 distinct times, got {times.size} sample(s)")
    slope, _ = np.polyfit(times, energies, 1)
    return float(slope)


def md_stability(
    frames: Sequence[Atoms], timestep: float, completed: bool, max_drift: float, min_distance: float
) -> dict:
    """Energy drift and closest approach of recorded NVE frames, and the verdict.

    Each frame carries the potential energy in ``info["energy"]``, its MD step in ``info["step"]``, the smallest
    interatomic distance in ``info["min_distance"]`` and momenta (as ``annpot explore`` records them); the total
    energy is the potential plus the kinetic energy.

    :param timestep: fs per MD step.
    :param completed: the trajectory ran all its steps.
    :param max_drift: meV/atom/ps, largest acceptable |drift|.
    :param min_distance: Å, closest acceptable approach.
    :returns: ``times_ps`` and ``total_energy_per_atom_eV`` (arrays), ``energy_drift_meV_per_atom_per_ps``,
        ``min_distance_A``, ``duration_ps`` and ``stable``.
    """
    times = np.array([frame.info["step"] * timestep / 1000.0 for frame in frames], dtype=float)
    total = np.array([(frame.info["energy"] + frame.get_kinetic_energy()) / len(frame) for frame in frames])
    distances = np.array([frame.info["min_distance"] for frame in frames], dtype=float)
    drift = 1000.0 * energy_drift(times, total) if len(frames) >= 2 and np.isfinite(total).all() else math.nan
    closest = float(distances.min()) if distances.size else math.nan
    stable = bool(completed and abs(drift) <= max_drift and closest >= min_distance)  # NaN compares False
    return {
        "times_ps": times,
        "total_energy_per_atom_eV": total,
        "energy_drift_meV_per_atom_per_ps": drift,
        "min_distance_A": closest,
        "duration_ps": float(times.max()) if times.size else 0.0,
        "stable": stable,
    }


def compare(dft: float | None, ann: float | None, relative: bool = False) -> dict:
    """``{"dft", "ann", "error"}`` with error = ANN − DFT (and ``relative_error`` = error / DFT when asked);
    None where a value is missing or not finite."""

    def finite(value):
        return float(value) if value is not None and math.isfinite(value) else None

    dft, ann = finite(dft), finite(ann)
    error = ann - dft if dft is not None and ann is not None else None
    entry = {"dft": dft, "ann": ann, "error": error}
    if relative:
        entry["relative_error"] = error / dft if error is not None and dft != 0 else None
    return entry
