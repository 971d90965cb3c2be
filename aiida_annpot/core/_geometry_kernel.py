"""The compiled loop of :class:`.geometry.NeighborSearch` (imported on first use: numba loads only where
neighbour lists are made)."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def pairs_within(positions, first, second, shifts, cutoff, template):
    """The listed pairs closer than ``cutoff``, in list order: (first, second, vectors in ``template``'s dtype,
    index of the closest kept pair or -1, its distance in float64), with r_ij = x_j - x_i + shift.

    One pass computes every listed vector; a Verlet list with a skin holds more pairs than it returns.
    """
    n_listed = first.shape[0]
    listed = np.empty((n_listed, 3))
    squares = np.empty(n_listed)
    kept = 0
    for p in range(n_listed):
        i, j = first[p], second[p]
        x = positions[j, 0] - positions[i, 0] + shifts[p, 0]
        y = positions[j, 1] - positions[i, 1] + shifts[p, 1]
        z = positions[j, 2] - positions[i, 2] + shifts[p, 2]
        listed[p, 0], listed[p, 1], listed[p, 2] = x, y, z
        squares[p] = x * x + y * y + z * z
        if squares[p] < cutoff * cutoff:
            kept += 1
    out_first, out_second = np.empty(kept, np.int64), np.empty(kept, np.int64)
    vectors = np.empty((kept, 3), template.dtype)
    closest, closest_square, k = -1, np.inf, 0
    for p in range(n_listed):
        if squares[p] < cutoff * cutoff:
            out_first[k], out_second[k] = first[p], second[p]
            vectors[k, 0], vectors[k, 1], vectors[k, 2] = listed[p, 0], listed[p, 1], listed[p, 2]
            if squares[p] < closest_square:
                closest, closest_square = k, squares[p]
            k += 1
    return out_first, out_second, vectors, closest, np.sqrt(closest_square)
