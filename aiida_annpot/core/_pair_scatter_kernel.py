"""The compiled loop of :func:`.pair_scatter.scatter_pair_gradients` (imported on first use: numba loads only where
a model is evaluated)."""

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def scatter(per_pair, first, second, n_atoms):
    """(P, W), (P,), (P,) → (N, W): each row added at ``first`` and subtracted at ``second``."""
    out = np.zeros((n_atoms, per_pair.shape[1]), dtype=per_pair.dtype)
    for p in range(per_pair.shape[0]):
        i, j = first[p], second[p]
        if i < 0 or i >= n_atoms or j < 0 or j >= n_atoms:  # numba does not check bounds
            raise IndexError("a pair names an atom beyond the structure")
        for column in range(per_pair.shape[1]):
            out[i, column] += per_pair[p, column]
            out[j, column] -= per_pair[p, column]
    return out
