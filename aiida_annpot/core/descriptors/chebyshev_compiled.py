"""Compiled (numba) loops for the Chebyshev descriptor at inference: features, and the force contraction
∂E/∂G ↦ ∂E/∂r_p, one atom and its pairs at a time.

The tensor path (:mod:`.chebyshev`) builds per-pair arrays and contracts them in a few dozen tensor operations; on
a few hundred atoms their fixed costs are most of a model call. Here each atom's pairs are visited twice: once for
the features (radial sums and the angular moments S_m, kept with the pairs' cutoff functions for the second
visit), once for the contraction, where each pair's Chebyshev terms and monomials are recomputed (cheaper than
storing them) and contracted with the atom's ∂E/∂G member by member. Per-pair values are rows over the atom's
pairs, so the inner loops run over pairs and vectorise. The formulas are those of :mod:`.chebyshev`'s docstring; in
the moment form the angular contraction is, with H_m = S_m Σ_a Q_ma g_a and G = Σ_a g_a,

    ∂E/∂r_p = [w' Σ_m H_m u^m - (w/r) Σ_m |m| H_m u^m - G w w'] u + (w/r) Σ_m H_m ∇_u u^m,

the first two sums collected by degree |m| and the last from tables of H_{m'+e_α} over the monomials of lower
degree.

Inference only: no autograd, CPU arrays, pairs grouped by central atom (as
:class:`~aiida_annpot.core.geometry.NeighborSearch` returns them; others take the tensor path). Results equal the
tensor path's to rounding (tests/core/test_chebyshev_compiled.py, test_model.py). numba compiles each loop once per
dtype and caches it on disk, next to this file or in the user's cache (``NUMBA_CACHE_DIR`` overrides both). With
torch on one thread the loops run on the calling thread and wake no thread pool; with more, on as many of numba's
threads, each atom on one thread, so the results do not depend on the thread count.
"""

from __future__ import annotations

import math
import threading

import numba
import numpy as np
import torch

from .chebyshev import _Monomials

#: Each kernel is compiled once per dtype; float32 stays float32 throughout (every constant comes from
#: :class:`KernelTables` in the inputs' dtype: a float64 literal would widen the arithmetic and stop vectorisation).
_HELPER = {"cache": True, "fastmath": True, "error_model": "numpy"}
_DRIVER = {**_HELPER, "nogil": True}

# indices into KernelTables.scalars
_ZERO, _ONE, _HALF, _TWO, _X_SCALE, _RADIAL_PI, _ANGULAR_PI, _RADIAL_CUTOFF, _ANGULAR_CUTOFF = range(9)


class KernelTables:
    """The descriptor's constants in the dtype of a call: scalars, Q, the monomial exponents and derivative slopes."""

    def __init__(self, descriptor, dtype: np.dtype):
        config = descriptor.config
        rc, ac = config.radial_cutoff, config.angular_cutoff
        scalars = [0.0, 1.0, 0.5, 2.0, 2.0 / rc, math.pi / rc, math.pi / ac, rc, ac]
        self.scalars = np.array(scalars, dtype=dtype)
        self.radial_slope = descriptor.radial_slope.numpy().astype(dtype)  # (2/R_c) a
        self.square = descriptor.angular_square.numpy().astype(dtype)  # Q (M, A+1)
        self.type_weight = descriptor.type_weight.numpy().astype(dtype)  # t_Z of each element
        monomials = _Monomials(config.angular_order)
        self.level_of = monomials.degree  # (M,) |m|
        self.degree_value = np.arange(config.angular_order + 1).astype(dtype)  # (A+1,) l
        self.raised = monomials.raised  # (3, M') index of m' + e_α
        exponents = monomials.exponents[: monomials.raised.shape[1]]
        self.raised_weight = (exponents.T + 1).astype(dtype)  # (3, M') m'_α + 1
        self.radial_order, self.angular_order = config.radial_order, config.angular_order
        self.contraction = (
            self.radial_order,
            self.scalars,
            self.radial_slope,
            self.square,
            self.level_of,
            self.degree_value,
            self.raised,
            self.raised_weight,
        )  # as :func:`_atom_contraction` takes them


@numba.njit(**_HELPER)
def _cutoff(r, cutoff, pi_over_cutoff, scalars):
    """f_c(r) and f_c'(r) of :func:`.base.cosine_cutoff`."""
    if r >= cutoff:
        return scalars[_ZERO], scalars[_ZERO]
    arg = pi_over_cutoff * r
    half = scalars[_HALF]
    return half * (math.cos(arg) + scalars[_ONE]), -half * pi_over_cutoff * math.sin(arg)


@numba.njit(**_HELPER)
def _pair_rows(vectors, p0, n, length, unit):
    """|r| and u (3, n) of the n pairs from p0, in pair-contiguous rows."""
    for q in range(n):
        x, y, z = vectors[p0 + q, 0], vectors[p0 + q, 1], vectors[p0 + q, 2]
        r = math.sqrt(x * x + y * y + z * z)
        length[q] = r
        unit[0, q], unit[1, q], unit[2, q] = x / r, y / r, z / r


@numba.njit(**_HELPER)
def _cutoff_rows(length, p0, n, scalars, cutoffs):
    """f_c, f_c' of the radial and f_c, f_c' of the angular cutoff of the n pairs from p0 into ``cutoffs`` (4, P),
    which :func:`contraction` reads back instead of evaluating the sines and cosines again."""
    for q in range(n):
        r = length[q]
        cutoffs[0, p0 + q], cutoffs[1, p0 + q] = _cutoff(r, scalars[_RADIAL_CUTOFF], scalars[_RADIAL_PI], scalars)
        cutoffs[2, p0 + q], cutoffs[3, p0 + q] = _cutoff(r, scalars[_ANGULAR_CUTOFF], scalars[_ANGULAR_PI], scalars)


@numba.njit(**_HELPER)
def _chebyshev_rows(length, n, order, scalars, values):
    """T_a (order+1, n) at x = 2r/R_c - 1 of n pairs, by the three-term recurrence."""
    one = scalars[_ONE]
    for q in range(n):
        values[0, q], values[1, q] = one, scalars[_X_SCALE] * length[q] - one
    for a in range(2, order + 1):
        for q in range(n):
            values[a, q] = scalars[_TWO] * values[1, q] * values[a - 1, q] - values[a - 2, q]


@numba.njit(**_HELPER)
def _radial_slopes(values, radial, n, radial_slope, scalars, second_kind, slopes):
    """dφ_a/dr = T_a f_c' + (2/R_c) a U_{a-1} f_c (order+1, n) from the rows T_a and ``radial`` (f_c, f_c');
    ``second_kind`` holds U_{a-1} (the same recurrence as T, from U_{-1} = 0 and U_0 = 1)."""
    for q in range(n):
        second_kind[0, q], second_kind[1, q] = scalars[_ZERO], scalars[_ONE]
    for a in range(2, values.shape[0]):
        for q in range(n):
            second_kind[a, q] = scalars[_TWO] * values[1, q] * second_kind[a - 1, q] - second_kind[a - 2, q]
    for a in range(values.shape[0]):
        for q in range(n):
            slopes[a, q] = values[a, q] * radial[1, q] + radial_slope[a] * second_kind[a, q] * radial[0, q]


@numba.njit(**_HELPER)
def _monomial_rows(unit, n, order, out, scalars):
    """u^m (M, n) of n pairs in the order of :class:`.chebyshev._Monomials`: degree l is [deg(l-1)·u_x, (last l of
    deg(l-1))·u_y, (last of deg(l-1))·u_z]."""
    for q in range(n):
        out[0, q] = scalars[_ONE]
    start, end = 0, 1
    for level in range(1, order + 1):
        k = end
        for row in range(start, end):
            for q in range(n):
                out[k, q] = out[row, q] * unit[0, q]
            k += 1
        for row in range(end - level, end):
            for q in range(n):
                out[k, q] = out[row, q] * unit[1, q]
            k += 1
        for q in range(n):
            out[k, q] = out[end - 1, q] * unit[2, q]
        start, end = end, k + 1


@numba.njit(**_HELPER)
def _angular_pairs(n, p0, unit, cutoffs, pair_weight, two_channels, index, angular_unit, typed, scalars):
    """The pairs within the angular cutoff, compacted to the front: their count; ``index`` their position among the
    atom's pairs, ``angular_unit`` their u, ``typed`` their type weights (1 for one channel)."""
    count = 0
    for q in range(n):
        if cutoffs[2, p0 + q] != scalars[_ZERO]:
            index[count] = q
            angular_unit[0, count], angular_unit[1, count], angular_unit[2, count] = unit[0, q], unit[1, q], unit[2, q]
            typed[count] = pair_weight[p0 + q] if two_channels else scalars[_ONE]
            count += 1
    return count


@numba.njit(**_HELPER)
def _width(offsets):
    width = 0
    for i in range(offsets.shape[0] - 1):
        width = max(width, offsets[i + 1] - offsets[i])
    return width


@numba.njit(**_HELPER)
def _scratch(width, n_radial, n_mono, n_angular, dtype):
    """Per-thread work rows for one atom's pairs (at most ``width``)."""
    return (
        np.empty(width, dtype),  # |r|
        np.empty((3, width), dtype),  # u
        np.empty((3, width), dtype),  # u of the angular pairs
        np.empty((n_radial, width), dtype),  # T_a
        np.empty((n_radial, width), dtype),  # U_{a-1}
        np.empty((n_radial, width), dtype),  # dφ_a/dr
        np.empty((n_mono, width), dtype),  # u^m of the angular pairs
        np.empty(width, np.int64),  # the angular pairs among the atom's pairs
        np.empty(width, dtype),  # their type weights
        np.empty(width, dtype),  # a per-pair row
        np.empty((n_angular + 3, width), dtype),  # D_l, then Σ_m H_m ∂_α u^m
        np.empty(n_mono, dtype),  # H_m
    )


@numba.njit(**_HELPER)
def _atom_features(i, vectors, offsets, pair_weight, radial_order, angular_order, scalars, square, results, scratch):
    """Atom i's features and moments, and its pairs' cutoff functions, into ``results`` (see :func:`features`)."""
    out, moments, cutoffs = results
    length, unit, angular_unit, values, _, _, mono, index, typed, w, _, _ = scratch
    n_channels, n_mono = moments.shape[1], moments.shape[2]
    n_radial, n_angular = radial_order + 1, angular_order + 1
    n_block = n_radial + n_angular
    zero, half = scalars[_ZERO], scalars[_HALF]
    p0, n = offsets[i], offsets[i + 1] - offsets[i]
    _pair_rows(vectors, p0, n, length, unit)
    _cutoff_rows(length, p0, n, scalars, cutoffs)
    _chebyshev_rows(length, n, radial_order, scalars, values)
    for c in range(n_channels):
        for q in range(n):
            w[q] = cutoffs[0, p0 + q] * pair_weight[p0 + q] if c else cutoffs[0, p0 + q]
        for a in range(n_radial):
            total = zero
            for q in range(n):
                total += w[q] * values[a, q]
            out[i, c * n_block + a] = total
    count = _angular_pairs(n, p0, unit, cutoffs, pair_weight, n_channels == 2, index, angular_unit, typed, scalars)
    _monomial_rows(angular_unit, count, angular_order, mono, scalars)
    for c in range(n_channels):
        self_term = zero
        for q in range(count):
            w[q] = cutoffs[2, p0 + index[q]] * typed[q] if c else cutoffs[2, p0 + index[q]]
            self_term += w[q] * w[q]
        for m in range(n_mono):
            total = zero
            for q in range(count):
                total += w[q] * mono[m, q]
            moments[i, c, m] = total
        for a in range(n_angular):
            total = zero
            for m in range(n_mono):
                total += square[m, a] * moments[i, c, m] * moments[i, c, m]
            out[i, c * n_block + n_radial + a] = half * (total - self_term)


@numba.njit(**_HELPER)
def _atom_contraction(i, gradient, moments, cutoffs, vectors, offsets, pair_weight, tables, out, scratch):
    """∂E/∂r_p of atom i's pairs into ``out`` (see :func:`contraction`)."""
    radial_order, scalars, radial_slope, square, level_of, degree_value, raised, raised_weight = tables
    length, unit, angular_unit, values, second_kind, slopes, mono, index, typed, along, sums, held = scratch
    n_channels, n_mono = moments.shape[1], moments.shape[2]
    n_members = gradient.shape[2]
    n_radial, n_angular = radial_order + 1, square.shape[1]
    n_block, n_lower = n_radial + n_angular, raised.shape[1]
    zero = scalars[_ZERO]
    p0, n = offsets[i], offsets[i + 1] - offsets[i]
    _pair_rows(vectors, p0, n, length, unit)
    _chebyshev_rows(length, n, radial_order, scalars, values)
    _radial_slopes(values, cutoffs[:2, p0 : p0 + n], n, radial_slope, scalars, second_kind, slopes)
    count = _angular_pairs(n, p0, unit, cutoffs, pair_weight, n_channels == 2, index, angular_unit, typed, scalars)
    _monomial_rows(angular_unit, count, n_angular - 1, mono, scalars)
    for k in range(n_members):
        # radial: (Σ_a g_a dφ_a/dr) u, in channel 1 times t_j
        for q in range(n):
            along[q] = zero
        for a in range(n_radial):
            g = gradient[i, a, k]
            for q in range(n):
                along[q] += g * slopes[a, q]
        if n_channels == 2:
            for q in range(n):
                typed_sum = zero
                for a in range(n_radial):
                    typed_sum += gradient[i, n_block + a, k] * slopes[a, q]
                along[q] += typed_sum * pair_weight[p0 + q]
        for q in range(n):
            out[p0 + q, k, 0] = along[q] * unit[0, q]
            out[p0 + q, k, 1] = along[q] * unit[1, q]
            out[p0 + q, k, 2] = along[q] * unit[2, q]
        # angular: [w' Σ H u^m - (w/r) Σ |m| H u^m - G w w'] u + (w/r) Σ H ∇_u u^m, the first two sums by degree
        # (D_l = Σ_{|m|=l} H_m u^m) and the last from the tables (m'_α + 1) H_{m'+e_α} of degree < A
        for c in range(n_channels):
            start = c * n_block + n_radial
            g_sum = zero
            for a in range(n_angular):
                g_sum += gradient[i, start + a, k]
            for m in range(n_mono):
                weighted = zero
                for a in range(n_angular):
                    weighted += square[m, a] * gradient[i, start + a, k]
                held[m] = moments[i, c, m] * weighted  # H_m
            for row in range(n_angular + 3):
                for q in range(count):
                    sums[row, q] = zero
            for m in range(n_mono):
                h, level = held[m], level_of[m]
                for q in range(count):
                    sums[level, q] += h * mono[m, q]
            for m in range(n_lower):
                hx = raised_weight[0, m] * held[raised[0, m]]
                hy = raised_weight[1, m] * held[raised[1, m]]
                hz = raised_weight[2, m] * held[raised[2, m]]
                for q in range(count):
                    sums[n_angular, q] += hx * mono[m, q]
                    sums[n_angular + 1, q] += hy * mono[m, q]
                    sums[n_angular + 2, q] += hz * mono[m, q]
            for q in range(count):
                pair = index[q]
                w, dw = cutoffs[2, p0 + pair], cutoffs[3, p0 + pair]
                if c:
                    w, dw = w * typed[q], dw * typed[q]
                w_over_r = w / length[pair]
                along_q = -g_sum * w * dw
                for level in range(n_angular):
                    along_q += (dw - w_over_r * degree_value[level]) * sums[level, q]
                out[p0 + pair, k, 0] += along_q * angular_unit[0, q] + w_over_r * sums[n_angular, q]
                out[p0 + pair, k, 1] += along_q * angular_unit[1, q] + w_over_r * sums[n_angular + 1, q]
                out[p0 + pair, k, 2] += along_q * angular_unit[2, q] + w_over_r * sums[n_angular + 2, q]


@numba.njit(**_HELPER)
def _feature_arrays(vectors, offsets, n_channels, radial_order, angular_order, n_mono):
    """The outputs of :func:`features`, allocated."""
    n_atoms, n_block, dtype = offsets.shape[0] - 1, radial_order + angular_order + 2, vectors.dtype
    return (
        np.empty((n_atoms, n_channels * n_block), dtype),
        np.empty((n_atoms, n_channels, n_mono), dtype),
        np.empty((4, vectors.shape[0]), dtype),
    )


# The drivers: one loop over atoms on the calling thread (no thread pool is woken: a one-thread run stays on one
# core), and one over chunks of atoms on numba's threads, each chunk with its own work rows.


@numba.njit(**_DRIVER)
def _features_serial(vectors, offsets, pair_weight, n_channels, radial_order, angular_order, scalars, square, _):
    results = _feature_arrays(vectors, offsets, n_channels, radial_order, angular_order, square.shape[0])
    scratch = _scratch(_width(offsets), radial_order + 1, square.shape[0], angular_order + 1, vectors.dtype)
    for i in range(offsets.shape[0] - 1):
        _atom_features(i, vectors, offsets, pair_weight, radial_order, angular_order, scalars, square, results, scratch)
    return results


@numba.njit(parallel=True, **_DRIVER)
def _features_parallel(vectors, offsets, pair_weight, n_channels, radial_order, angular_order, scalars, square, chunks):
    results = _feature_arrays(vectors, offsets, n_channels, radial_order, angular_order, square.shape[0])
    width, n_atoms = _width(offsets), offsets.shape[0] - 1
    for chunk in numba.prange(chunks):
        scratch = _scratch(width, radial_order + 1, square.shape[0], angular_order + 1, vectors.dtype)
        for i in range(chunk * n_atoms // chunks, (chunk + 1) * n_atoms // chunks):
            _atom_features(
                i, vectors, offsets, pair_weight, radial_order, angular_order, scalars, square, results, scratch
            )
    return results


@numba.njit(**_DRIVER)
def _contraction_serial(gradient, moments, cutoffs, vectors, offsets, pair_weight, tables, _):
    out = np.empty((vectors.shape[0], gradient.shape[2], 3), dtype=vectors.dtype)
    square = tables[3]
    scratch = _scratch(_width(offsets), tables[0] + 1, square.shape[0], square.shape[1], vectors.dtype)
    for i in range(offsets.shape[0] - 1):
        _atom_contraction(i, gradient, moments, cutoffs, vectors, offsets, pair_weight, tables, out, scratch)
    return out


@numba.njit(parallel=True, **_DRIVER)
def _contraction_parallel(gradient, moments, cutoffs, vectors, offsets, pair_weight, tables, chunks):
    out = np.empty((vectors.shape[0], gradient.shape[2], 3), dtype=vectors.dtype)
    square, width, n_atoms = tables[3], _width(offsets), offsets.shape[0] - 1
    for chunk in numba.prange(chunks):
        scratch = _scratch(width, tables[0] + 1, square.shape[0], square.shape[1], vectors.dtype)
        for i in range(chunk * n_atoms // chunks, (chunk + 1) * n_atoms // chunks):
            _atom_contraction(i, gradient, moments, cutoffs, vectors, offsets, pair_weight, tables, out, scratch)
    return out


def features(vectors, offsets, pair_weight, n_channels, radial_order, angular_order, scalars, square):
    """Features (N, C·(R+A+2)), the angular moments S (N, C, M) and the cutoff functions (4, P) for
    :func:`contraction`, on as many threads as torch uses.

    :param vectors: (P, 3) pair vectors, grouped by central atom; atom i's pairs are offsets[i]:offsets[i+1].
    :param pair_weight: (P,) type weight t_j of each pair's neighbour for two channels (unread for one).
    :param scalars, square: from :class:`KernelTables`.
    """
    kernel, chunks = _driver(_features_serial, _features_parallel, offsets.shape[0] - 1)
    return kernel(vectors, offsets, pair_weight, n_channels, radial_order, angular_order, scalars, square, chunks)


def contraction(gradient, moments, cutoffs, vectors, offsets, pair_weight, tables: KernelTables):
    """∂E/∂r_p (P, K, 3) from ∂E/∂G (N, D, K) and the moments S (N, C, M) and cutoffs (4, P) of :func:`features`;
    the other arguments as there."""
    kernel, chunks = _driver(_contraction_serial, _contraction_parallel, offsets.shape[0] - 1)
    return kernel(gradient, moments, cutoffs, vectors, offsets, pair_weight, tables.contraction, chunks)


#: Chunks of atoms per thread: more than one balances uneven neighbour counts.
CHUNKS_PER_THREAD = 4


def _driver(serial, parallel, n_atoms: int):
    """The serial driver on one thread (or for a handful of atoms), else the parallel one and its chunk count."""
    threads = min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    if threads == 1 or n_atoms < 2 * threads:
        return serial, 1
    numba.set_num_threads(threads)
    return parallel, threads * CHUNKS_PER_THREAD


@numba.njit(cache=True)
def atom_offsets(first, n_atoms):
    """Where each atom's pairs start, (N+1,), for pairs grouped by central atom in order; (0,) if they are not, or
    if an index is not an atom's (the tensor path then raises)."""
    offsets = np.zeros(n_atoms + 1, np.int64)
    for p in range(first.shape[0]):
        if (p and first[p] < first[p - 1]) or first[p] < 0 or first[p] >= n_atoms:
            return np.zeros(0, np.int64)
        offsets[first[p] + 1] += 1
    for i in range(n_atoms):
        offsets[i + 1] += offsets[i]
    return offsets


#: numba's workqueue thread pool must not be entered from two threads at once.
_launch = threading.Lock()


def features_and_gradients(descriptor, species: torch.Tensor, pairs) -> tuple[torch.Tensor, CompiledGradients] | None:
    """Features (N, D) and the force contraction operator of a :class:`.chebyshev.ChebyshevDescriptor`, compiled,
    with the contract of its ``features_and_gradients``; None where the loops do not apply: pairs off the CPU, in
    another dtype than float32 or float64, followed by autograd, or not grouped by central atom."""
    vectors = pairs.vectors
    if (
        vectors.device.type != "cpu"
        or vectors.dtype not in (torch.float32, torch.float64)
        or (torch.is_grad_enabled() and vectors.requires_grad)
    ):
        return None
    offsets = atom_offsets(pairs.first.numpy(), pairs.n_atoms)
    if offsets.shape[0] == 0:
        return None
    dtype = np.dtype(str(pairs.vectors.dtype).removeprefix("torch."))
    tables = descriptor.kernel_tables(dtype)
    vectors = vectors.detach().numpy()
    n_channels = 2 if descriptor.typed else 1
    pair_weight = tables.type_weight[species.numpy()[pairs.second.numpy()]] if n_channels == 2 else np.zeros(0, dtype)
    with _launch:
        values, moments, cutoffs = features(
            vectors,
            offsets,
            pair_weight,
            n_channels,
            tables.radial_order,
            tables.angular_order,
            tables.scalars,
            tables.square,
        )
    return torch.from_numpy(values), CompiledGradients(tables, (moments, cutoffs, vectors, offsets, pair_weight))


class CompiledGradients:
    """∂E/∂G (K, N, D) ↦ ∂E/∂r_p (K, P, 3) by :func:`contraction`, from the state of :func:`features`."""

    def __init__(self, tables: KernelTables, state: tuple):
        self.tables, self.state = tables, state

    def __call__(self, dE_dG: torch.Tensor) -> torch.Tensor:
        gradient = dE_dG.detach().permute(1, 2, 0).contiguous().numpy()  # (N, D, K): members innermost
        with _launch:
            per_pair = contraction(gradient, *self.state, self.tables)
        return torch.from_numpy(per_pair).transpose(0, 1)  # (K, P, 3) view of (P, K, 3)
