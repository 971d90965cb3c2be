"""Structure generation following the construction recipe of Miksch et al. (2021): supercells, strained cells,
rattled cells, vacancies and surface slabs. Pure ASE/numpy and seeded: the same inputs give the same structures.

The AiiDA side wraps each function in a calcfunction (:mod:`aiida_annpot.calcfunctions.structures`), so every
generated structure is a provenance step away from the structure it came from.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms
from ase.build import make_supercell, surface
from ase.data import covalent_radii

from .errors import InputDataError
from .frames import half_neighbor_list

#: Draws of one rattled copy before giving up on keeping atoms at least ``min_distance`` apart.
MAX_RATTLE_DRAWS = 1000


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputDataError(message)


def min_distance(atoms: Atoms, cutoff: float) -> float:
    """Smallest interatomic distance in Å, periodic images included; ``inf`` when no pair is closer than ``cutoff``."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    box = atoms.cell.array if pbc.any() else np.zeros((3, 3))
    (distances,) = half_neighbor_list(cutoff).compute(
        points=np.ascontiguousarray(atoms.positions, dtype=np.float64), box=box, periodic=pbc.copy(), quantities="d"
    )
    return float(distances.min()) if distances.size else math.inf


#: Atoms closer than this share of the sum of their covalent radii overlap: such a structure is bad input.
OVERLAP_RATIO = 0.5


def overlapping_pair(atoms: Atoms, ratio: float = OVERLAP_RATIO) -> tuple[int, int, float, float] | None:
    """The closest pair (i, j, distance, limit) with distance < ``ratio`` × (r_cov,i + r_cov,j), periodic images
    included (i == j for an atom too close to its own image); None when no pair overlaps."""
    numbers = atoms.numbers
    if len(atoms) == 0:
        return None
    limits = ratio * (covalent_radii[numbers][:, None] + covalent_radii[numbers][None, :])
    pbc = np.asarray(atoms.pbc, dtype=bool)
    box = atoms.cell.array if pbc.any() else np.zeros((3, 3))
    first, second, distances = half_neighbor_list(float(limits.max())).compute(
        points=np.ascontiguousarray(atoms.positions, dtype=np.float64),
        box=box,
        periodic=pbc.copy(),
        quantities="ijd",
    )
    close = np.flatnonzero(distances < limits[first, second])
    if not close.size:
        return None
    k = close[np.argmin(distances[close])]
    return int(first[k]), int(second[k]), float(distances[k]), float(limits[first[k], second[k]])


def nearest_neighbour_distance(atoms: Atoms) -> float:
    """The smallest interatomic distance of ``atoms`` (searched up to the cell's longest vector)."""
    return min_distance(atoms, float(max(atoms.cell.lengths().max(), 3.0)))


def supercell(atoms: Atoms, repeat: tuple[int, int, int]) -> Atoms:
    """``atoms`` repeated ``repeat`` times along its cell vectors."""
    _require(len(repeat) == 3 and all(int(n) >= 1 for n in repeat), f"repeat must be three integers ≥ 1: {repeat}")
    return make_supercell(atoms, np.diag([int(n) for n in repeat]))


def strained(atoms: Atoms, count: int, max_strain: float, anisotropic: bool, seed: int) -> list[Atoms]:
    """``count`` copies under random homogeneous strain, atoms scaled with the cell.

    Isotropic: the cell scaled by 1 + ε, ε uniform in [-max_strain, max_strain]. Anisotropic: a symmetric strain
    tensor with every component uniform in that range (shear included), so the cell shape changes too.
    """
    _require(count >= 1, f"count must be at least 1, got {count}")
    _require(0.0 < max_strain < 0.5, f"max_strain must be in (0, 0.5), got {max_strain}")
    _require(bool(atoms.pbc.all()), "strain needs a cell periodic in all three directions")
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        if anisotropic:
            random = rng.uniform(-max_strain, max_strain, (3, 3))
            strain = 0.5 * (random + random.T)
        else:
            strain = rng.uniform(-max_strain, max_strain) * np.eye(3)
        copy = atoms.copy()
        copy.set_cell(atoms.cell.array @ (np.eye(3) + strain), scale_atoms=True)
        frames.append(copy)
    return frames


def rattled(atoms: Atoms, count: int, stdev: float, seed: int, min_distance_ratio: float = 0.0) -> list[Atoms]:
    """``count`` copies with every Cartesian coordinate displaced by a normal deviate of ``stdev`` Å.

    With ``min_distance_ratio`` > 0 a draw that brings two atoms closer than that fraction of ``atoms``'s
    nearest-neighbour distance is drawn again: independent Gaussian displacements of 0.2 Å put a pair at 1.6 Å in
    some draws, a contact that MD at the temperatures these amplitudes stand for never makes, and whose DFT forces
    (tens of eV/Å) would dominate any error measure.
    """
    _require(count >= 1, f"count must be at least 1, got {count}")
    _require(0.0 < stdev < 1.0, f"stdev must be in (0, 1) Å, got {stdev}")
    _require(0.0 <= min_distance_ratio < 1.0, f"min_distance_ratio must be in [0, 1), got {min_distance_ratio}")
    closest = min_distance_ratio * nearest_neighbour_distance(atoms) if min_distance_ratio else 0.0
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        for _ in range(MAX_RATTLE_DRAWS):
            copy = atoms.copy()
            copy.positions += rng.normal(0.0, stdev, atoms.positions.shape)
            if not closest or min_distance(copy, closest) >= closest:
                break
        else:
            raise InputDataError(
                f"no rattle of {stdev} Å in {MAX_RATTLE_DRAWS} draws keeps atoms {closest:.2f} Å apart: lower the "
                "amplitude or min_distance_ratio"
            )
        frames.append(copy)
    return frames


def vacancies(atoms: Atoms, count: int, seed: int) -> list[Atoms]:
    """``count`` copies, each missing one atom; the removed sites are distinct while there are sites left."""
    _require(count >= 1, f"count must be at least 1, got {count}")
    _require(len(atoms) >= 2, f"a vacancy needs at least 2 atoms, the structure has {len(atoms)}")
    rng = np.random.default_rng(seed)
    sites = rng.permutation(len(atoms))
    frames = []
    for index in range(count):
        copy = atoms.copy()
        del copy[int(sites[index % len(atoms)])]
        frames.append(copy)
    return frames


def slab(atoms: Atoms, miller: tuple[int, int, int], layers: int, vacuum: float) -> Atoms:
    """A surface slab of ``layers`` layers with ``vacuum`` Å on each side, periodic in all directions (for DFT)."""
    _require(len(miller) == 3 and any(int(h) != 0 for h in miller), f"invalid Miller indices {miller}")
    _require(layers >= 1, f"layers must be at least 1, got {layers}")
    _require(vacuum > 0.0, f"vacuum must be positive, got {vacuum}")
    result = surface(atoms, tuple(int(h) for h in miller), int(layers), vacuum=float(vacuum), periodic=True)
    result.pbc = True
    return result
