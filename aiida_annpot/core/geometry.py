"""Atomic geometry for the engine: neighbour pairs from vesin, as torch tensors, with input checks.

A :class:`NeighborPairs` holds every ordered pair (i, j) with |r_ij| below the cutoff, the pair vector
r_ij = x_j - x_i + S·cell, and the lattice shift S. Descriptors and forces are written in terms of pair vectors:
the derivative of the energy with respect to r_ij gives forces (scattered to i and j) and the virial, which makes
stress the strain derivative without a second graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import vesin

from .errors import InputDataError

#: Atoms closer than this are treated as bad input (nuclei on top of each other), in Å.
MIN_ALLOWED_DISTANCE = 0.5
#: Cells whose volume is below this (Å³) count as degenerate.
MIN_CELL_VOLUME = 1e-6


@dataclass
class NeighborPairs:
    """Ordered neighbour pairs of one structure (or a batch of structures, with offset indices).

    :param first: (P,) index of the central atom i.
    :param second: (P,) index of the neighbour j.
    :param vectors: (P, 3) r_ij in Å.
    :param n_atoms: number of atoms the indices refer to.
    """

    first: torch.Tensor
    second: torch.Tensor
    vectors: torch.Tensor
    n_atoms: int

    @property
    def distances(self) -> torch.Tensor:
        """(P,) |r_ij|."""
        return torch.linalg.vector_norm(self.vectors, dim=1)

    def within(self, cutoff: float) -> NeighborPairs:
        """The subset of pairs closer than ``cutoff`` (used for a shorter angular cutoff)."""
        keep = self.distances < cutoff
        return NeighborPairs(self.first[keep], self.second[keep], self.vectors[keep], self.n_atoms)


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, label: str = "structure") -> None:
    """Reject non-finite coordinates and degenerate periodic cells before any neighbour search."""
    if positions.shape[0] == 0:
        raise InputDataError(f"{label} has no atoms")
    if not np.all(np.isfinite(positions)):
        raise InputDataError(f"{label} has non-finite atomic positions")
    if np.any(pbc):
        volume = abs(np.linalg.det(cell))
        if not np.isfinite(volume) or volume < MIN_CELL_VOLUME:
            raise InputDataError(f"{label} is periodic but its cell has zero volume ({volume:.3g} Å³)")


class NeighborSearch:
    """Vesin neighbour lists, optionally with a Verlet skin that reuses the list across MD steps.

    :param cutoff: pairs up to this distance (Å) are returned.
    :param skin: Verlet skin in Å (0 disables caching; MD benefits from ~0.5).
    """

    def __init__(self, cutoff: float, skin: float = 0.0):
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self._list = vesin.NeighborList(cutoff=self.cutoff, full_list=True, skin=self.skin)

    def __call__(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        pbc: np.ndarray | bool,
        *,
        dtype: torch.dtype = torch.float64,
        label: str = "structure",
        check_distance: bool = True,
    ) -> NeighborPairs:
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        check_structure(positions, cell, pbc, label)
        if not np.any(pbc):
            cell = np.zeros((3, 3))
        first, second, shifts, vectors = self._list.compute(
            points=positions, box=cell, periodic=pbc.copy(), quantities="ijSD"
        )
        distances = np.linalg.norm(vectors, axis=1)
        if self.skin > 0.0:  # the cached list holds pairs up to cutoff + skin
            keep = distances < self.cutoff
            first, second, vectors, distances = first[keep], second[keep], vectors[keep], distances[keep]
        if check_distance and distances.size and distances.min() < MIN_ALLOWED_DISTANCE:
            k = int(distances.argmin())
            raise InputDataError(
                f"{label}: atoms {first[k]} and {second[k]} are {distances[k]:.3f} Å apart "
                f"(below {MIN_ALLOWED_DISTANCE} Å)"
            )
        return NeighborPairs(
            first=torch.from_numpy(first.astype(np.int64)),
            second=torch.from_numpy(second.astype(np.int64)),
            vectors=torch.from_numpy(vectors).to(dtype),
            n_atoms=positions.shape[0],
        )
