"""Atomic geometry for the engine: neighbour pairs from vesin, as torch tensors, with input checks.

A :class:`NeighborPairs` holds every ordered pair (i, j) with |r_ij| below the cutoff, the pair vector
r_ij = x_j - x_i + S·cell, and the lattice shift S. Descriptors and forces are written in terms of pair vectors:
the derivative of the energy with respect to r_ij gives forces (scattered to i and j) and the virial, which makes
stress the strain derivative without a second graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import vesin

from .errors import InputDataError
from .frames import MIN_ALLOWED_DISTANCE, MIN_CELL_VOLUME, check_structure  # noqa: F401  (re-exported)

#: Size of the block :func:`raise_allocator_thresholds` frees once: just below glibc's 32 MiB cap for its dynamic
#: mmap threshold.
_ALLOCATOR_BLOCK = 31 << 20
_allocator_ready = False


def raise_allocator_thresholds() -> None:
    """Allocate and free one 31 MiB block, once per process.

    glibc returns large freed blocks to the OS (munmap, heap trimming) until it has freed one of that size: its mmap
    threshold then rises to the block size and its trim threshold to twice that. Below those thresholds each
    energy/force step re-faults the pages of its buffers (the Jacobian alone is 21 MB for 2000 atoms), which costs
    a third of the step in virtual machines. Elsewhere this is an allocation and nothing more.
    """
    global _allocator_ready
    if not _allocator_ready:
        _allocator_ready = True
        torch.empty(_ALLOCATOR_BLOCK, dtype=torch.uint8)  # freed at once; never touched, so no pages are faulted


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


@dataclass
class _VerletList:
    """Pairs within cutoff + skin of the reference positions, sorted by central atom (stable).

    :param shifts: (P, 3) lattice translations S·cell of the neighbours, in Å.
    """

    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    first: np.ndarray
    second: np.ndarray
    shifts: np.ndarray


#: Arrays of the dtypes the pair vectors may be asked in (the compiled loop writes that dtype directly).
_TEMPLATES = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64)}


class NeighborSearch:
    """Neighbour lists (vesin), optionally with a Verlet skin that reuses the list across MD steps.

    The list holds the pairs within cutoff + skin; it stays valid while no atom has moved more than skin/2 since it
    was built (and the cell is unchanged). Each call recomputes r_ij = x_j - x_i + S·cell for the listed pairs and
    keeps those within the cutoff (one compiled pass, :mod:`._geometry_kernel`), so the list is built only now and
    then. Pairs are returned sorted by central atom, so per-atom sums over pairs can be sparse row products.

    :param cutoff: pairs up to this distance (Å) are returned.
    :param skin: Verlet skin in Å (0 disables caching; MD benefits from ~0.5).
    """

    def __init__(self, cutoff: float, skin: float = 0.0):
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self._list = vesin.NeighborList(cutoff=self.cutoff + self.skin, full_list=True)
        self._verlet: _VerletList | None = None
        self.closest = math.inf  # distance (Å) of the closest pair the latest call returned; inf without pairs

    def __call__(
        self,
        positions: np.ndarray,
        cell: np.ndarray,
        pbc: np.ndarray | bool,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        label: str = "structure",
        check_distance: bool = True,
    ) -> NeighborPairs:
        """The pairs within the cutoff, as tensors of ``dtype`` on ``device`` (the model's): the search itself runs
        on the CPU (vesin works on numpy arrays), so on a GPU the pairs cross over once per call."""
        positions = np.ascontiguousarray(positions, dtype=np.float64)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        check_structure(positions, cell, pbc, label)
        if not np.any(pbc):
            cell = np.zeros((3, 3))
        if not self._valid(positions, cell, pbc):
            self._verlet = self._build(positions, cell, pbc)
        listed = self._verlet
        from ._geometry_kernel import pairs_within  # numba loads only where neighbour lists are made

        template = _TEMPLATES.get(dtype, _TEMPLATES[torch.float64])
        first, second, vectors, closest, self.closest = pairs_within(
            positions, listed.first, listed.second, listed.shifts, self.cutoff, template
        )
        if check_distance and self.closest < MIN_ALLOWED_DISTANCE:
            raise InputDataError(
                f"{label}: atoms {int(first[closest])} and {int(second[closest])} are {self.closest:.3f} Å apart "
                f"(below {MIN_ALLOWED_DISTANCE} Å)"
            )
        first, second, vectors = torch.from_numpy(first), torch.from_numpy(second), torch.from_numpy(vectors)
        return NeighborPairs(
            first=first.to(device),
            second=second.to(device),
            vectors=vectors.to(device=device, dtype=dtype),
            n_atoms=positions.shape[0],
        )

    def _valid(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> bool:
        """Whether the current list covers ``positions``: same cell, and no atom moved by more than skin/2."""
        listed = self._verlet
        if (
            listed is None
            or listed.positions.shape != positions.shape
            or not np.array_equal(listed.cell, cell)
            or not np.array_equal(listed.pbc, pbc)
        ):
            return False
        drift = positions - listed.positions
        return float(np.einsum("ij,ij->i", drift, drift).max(initial=0.0)) <= (0.5 * self.skin) ** 2

    def _build(self, positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> _VerletList:
        """Pairs within cutoff + skin (vesin), sorted by central atom: numpy's stable sort is a radix sort for
        16-bit keys."""
        ij, shifts = self._list.compute(points=positions, box=cell, periodic=pbc.copy(), quantities="PS", copy=False)
        ij = ij.view(np.int64)  # size_t indices, far below 2**63
        key = ij[:, 0].astype(np.uint16 if positions.shape[0] <= 1 << 16 else np.int64)
        order = np.argsort(key, kind="stable")
        return _VerletList(
            positions=positions.copy(),
            cell=cell.copy(),
            pbc=pbc.copy(),
            first=ij[:, 0].take(order),
            second=ij[:, 1].take(order),
            shifts=shifts.take(order, axis=0).astype(np.float64) @ cell,
        )
