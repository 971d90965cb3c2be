"""Chebyshev radial and angular descriptor (Artrith, Urban & Ceder, PRB 96, 014112, 2017) with analytic Jacobian.

Radial: c_a = Σ_j T_a(2 r_ij/R_c - 1) f_c(r_ij).
Angular: d_a = Σ_{j<k} T_a(cos θ_ijk) f_c(r_ij) f_c(r_ik).

The angular sum is evaluated through moments, linear in the number of pairs instead of quadratic: with
u = r/|r| and the multinomial expansion (u_j·u_k)^n = Σ_{|m|=n} μ_m u_j^m u_k^m,

    Σ_{j,k} w_j w_k (u_j·u_k)^n = Σ_{|m|=n} μ_m S_m²,   S_m = Σ_j w_j u_j^m,

and the j = k terms are Σ_j w_j² because u·u = 1. With T_a(x) = Σ_n C_an x^n and T_a(1) = 1,

    d_a = ½ Σ_m Q_ma S_m² - ½ Σ_j w_j²,   Q_ma = μ_m C_{a,|m|}.

For several species a second copy of both expansions (a "channel") weights each neighbour by its element's type
weight t_Z (pairs by t_j t_k).

Jacobian of the angular block with respect to the pair vector r_p of atom i (w = w_p, w' = dw/dr, r = |r_p|), from
∂u^m/∂r = (∇_u u^m - |m| u^m u)/r and μ_{m'+e_α} (m'_α + 1) = |m'+e_α| μ_{m'}:

    ∂d_a/∂r_p = [Σ_m (w' - |m| w/r) Q_ma S_{i,m} u_p^m - w w'] u_p + (w/r) CB_pa,
    CB_paα = Σ_{|m'|<A} C_{a,|m'|+1} (|m'| + 1) μ_{m'} S_{i,m'+e_α} u_p^{m'}.

S_m and S_{m'+e_α} are per-atom tables: each pair gathers its central atom's rows and contracts them with its own
monomials u_p^m by small matrix products, in blocks of pairs. Sums over the pairs of an atom are sparse (CSR/CSC)
products when the pairs are sorted by central atom, as :class:`~aiida_annpot.core.geometry.NeighborSearch` returns
them. The monomials are ordered so that each degree is built from the previous one with contiguous slices:
deg n = [deg(n-1)·u_x, (deg(n-1) without x)·u_y, z^(n-1)·u_z], the x-free monomials being the last n of degree n-1.
Chebyshev polynomials use the three-term recurrence (torch.special's version has no gradient), and
dT_a/dx = a U_{a-1}(x) with U the polynomials of the second kind.

Layout matters more than arithmetic here: per-pair arrays are pair-major for gathers and sparse sums, the radial
basis is order-major, small contractions write their long axis contiguously, and the Jacobian (P, D, 3) is filled
with 2-D operations, since TensorIterator is slow at broadcasting over short last axes.

Inference on the CPU (features and the force contraction, no autograd) runs the same formulas as compiled loops
over each atom's pairs instead (:mod:`.chebyshev_compiled`): on a few hundred atoms the tensor operations' fixed
costs are most of a call. Training, autograd and GPUs take the tensor operations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from ...common.config import ChebyshevConfig
from ..geometry import NeighborPairs
from ..pair_gradients import contract_by_atom
from .base import Descriptor, cosine_cutoff, typespin_weights


def _consume_sparse_beta_warning() -> None:
    """torch warns once per process that sparse compressed tensors are in beta (the products used here are long
    established): build one of each layout quietly, without touching the global warning filters."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        offsets, empty = torch.zeros(2, dtype=torch.long), torch.zeros(0, dtype=torch.long)
        torch.sparse_csr_tensor(offsets, empty, torch.zeros(0), (1, 1), check_invariants=False)
        torch.sparse_csc_tensor(offsets, empty, torch.zeros(0), (1, 1), check_invariants=False)


_consume_sparse_beta_warning()


def chebyshev_kinds(x: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T_a(x) and U_{a-1}(x) (second kind, U_{-1} = 0) for a = 0..order, each of shape (order+1, ...).

    Both obey V_a = 2x V_{a-1} - V_{a-2}, so one recurrence on stacked pairs gives both. The order axis leads: rows
    of contiguous values are far cheaper to write than an interleaved last axis.
    """
    ones = torch.ones_like(x)
    terms = [torch.stack([ones, torch.zeros_like(x)]), torch.stack([x, ones])]  # [T_a, U_{a-1}] for a = 0, 1
    twice = 2.0 * x
    for _ in range(2, order + 1):
        terms.append(twice * terms[-1] - terms[-2])
    both = torch.stack(terms[: order + 1], dim=1)  # (2, order+1, ...)
    return both[0], both[1]


def chebyshev_series(x: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T_0..T_order at ``x`` (shape (..., order+1)) and their derivatives dT_a/dx = a U_{a-1}(x)."""
    values, shifted = (t.movedim(0, -1) for t in chebyshev_kinds(x, order))
    return values.contiguous(), shifted * torch.arange(order + 1, dtype=x.dtype, device=x.device)


def chebyshev_power_coefficients(order: int) -> np.ndarray:
    """C (order+1, order+1) with T_a(x) = Σ_n C[a, n] x^n."""
    coefficients = np.zeros((order + 1, order + 1))
    coefficients[0, 0] = 1.0
    if order >= 1:
        coefficients[1, 1] = 1.0
    for a in range(2, order + 1):
        coefficients[a, 1:] += 2.0 * coefficients[a - 1, :-1]
        coefficients[a] -= coefficients[a - 2]
    return coefficients


class _Monomials:
    """Exponents m of the monomials u^m with |m| ≤ order in the recursive order of the module docstring.

    ``exponents`` (M, 3), ``degree`` (M,), ``multinomial`` μ_m (M,), and ``raised`` (3, M') with M' the number of
    monomials of degree < order: the index of m' + e_α.
    """

    def __init__(self, order: int):
        levels = [[(0, 0, 0)]]
        for n in range(1, order + 1):
            previous = levels[-1]
            levels.append(
                [(a + 1, b, c) for a, b, c in previous] + [(a, b + 1, c) for a, b, c in previous[-n:]] + [(0, 0, n)]
            )
        exponents = [m for level in levels for m in level]
        self.exponents = np.array(exponents, dtype=np.int64)
        self.degree = self.exponents.sum(axis=1)
        self.multinomial = np.array([math.factorial(sum(m)) / math.prod(map(math.factorial, m)) for m in exponents])
        lookup = {m: k for k, m in enumerate(exponents)}
        lower = exponents[: sum(1 for m in exponents if sum(m) < order)]
        unit = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
        self.raised = np.array([[lookup[tuple(np.add(m, e))] for m in lower] for e in unit], dtype=np.int64)
        self.raised = self.raised.reshape(3, len(lower))


def monomials(u: torch.Tensor, order: int) -> torch.Tensor:
    """(P, 3) unit vectors → (P, M) monomials u^m in :class:`_Monomials` order, degree by degree.

    Degree n is [deg(n-1)·u_x, (last n of deg(n-1))·u_y, (last of deg(n-1))·u_z]. Without autograd the pieces are
    written in place; with it they are concatenated.
    """
    x, y, z = u[:, 0:1], u[:, 1:2], u[:, 2:3]
    if torch.is_grad_enabled() and u.requires_grad:
        levels = [torch.ones_like(x)]
        for n in range(1, order + 1):
            previous = levels[-1]
            levels.append(torch.cat([previous * x, previous[:, -n:] * y, previous[:, -1:] * z], dim=1))
        return torch.cat(levels, dim=1)
    out = u.new_empty((u.shape[0], (order + 1) * (order + 2) * (order + 3) // 6))
    out[:, 0] = 1.0
    start, end = 0, 1  # the previous degree's columns
    for n in range(1, order + 1):
        size = end - start
        torch.mul(out[:, start:end], x, out=out[:, end : end + size])
        torch.mul(out[:, end - n : end], y, out=out[:, end + size : end + size + n])
        torch.mul(out[:, end - 1 : end], z, out=out[:, end + size + n : end + size + n + 1])
        start, end = end, end + size + n + 1
    return out


class _AtomSums:
    """Σ over the pairs of each central atom, weighted per pair: (P, F) → (N, F), or (F, P) → (F, N).

    On the CPU, a sparse CSR (CSC) product when ``first`` is sorted (pairs grouped by central atom), ``index_add``
    otherwise and under autograd (batched gradients do not support sparse tensors). On a GPU always ``index_add``:
    its atomic adds are fast there, and the sparse products would need cuSPARSE support for every layout used here.
    """

    def __init__(self, first: torch.Tensor, n_atoms: int):
        self.first, self.n_atoms = first, n_atoms
        on_cpu = first.device.type == "cpu"
        self.csr = on_cpu and (first.shape[0] < 2 or bool((first[1:] >= first[:-1]).all()))  # sorted, on the CPU
        if self.csr:
            self.offsets = torch.searchsorted(first, torch.arange(n_atoms + 1, dtype=first.dtype, device=first.device))
            self.columns = torch.arange(first.shape[0], dtype=first.dtype, device=first.device)

    def _sparse(self, values: torch.Tensor, weight: torch.Tensor) -> bool:
        return self.csr and not (torch.is_grad_enabled() and (values.requires_grad or weight.requires_grad))

    def __call__(self, values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(P, F) → (N, F)."""
        if not self._sparse(values, weight):
            summands = values * weight.unsqueeze(1)
            return values.new_zeros((self.n_atoms, values.shape[1])).index_add_(0, self.first, summands)
        shape = (self.n_atoms, values.shape[0])
        return (
            torch.sparse_csr_tensor(
                self.offsets, self.columns, weight, shape, check_invariants=False, device=weight.device
            )
            @ values
        )

    def transposed(self, values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(F, P) → (F, N)."""
        if not self._sparse(values, weight):
            summands = values * weight
            return values.new_zeros((values.shape[0], self.n_atoms)).index_add_(1, self.first, summands)
        shape = (values.shape[1], self.n_atoms)
        return values @ torch.sparse_csc_tensor(
            self.offsets, self.columns, weight, shape, check_invariants=False, device=weight.device
        )


#: Pairs per block in the angular Jacobian loop: bounds the temporaries (fresh memory pages are expensive) and keeps a
#: block's working set in cache.
PAIR_BLOCK = 16384


def _blocks(n_pairs: int) -> list[slice]:
    """Consecutive slices of at most :data:`PAIR_BLOCK` covering range(n_pairs) (one empty slice for no pairs)."""
    return [slice(start, min(start + PAIR_BLOCK, n_pairs)) for start in range(0, max(n_pairs, 1), PAIR_BLOCK)]


class ChebyshevDescriptor(Descriptor):
    """Chebyshev descriptor of :class:`~aiida_annpot.common.config.ChebyshevConfig`.

    Feature layout: [radial (R+1), angular (A+1)] for one species; for several species the same block again,
    type-weighted. D = (R + A + 2) × (1 or 2). The analytic Jacobian is computed without autograd history.
    """

    def __init__(self, elements: list[str], config: ChebyshevConfig):
        super().__init__(elements)
        self.config = config
        self.typed = len(self.elements) > 1
        weights = config.type_weights or typespin_weights(self.elements)
        missing = sorted(set(self.elements) - set(weights))
        if missing:
            raise ValueError(f"type_weights has no weight for {', '.join(missing)}")
        self.register_buffer("type_weight", torch.tensor([weights[e] for e in self.elements], dtype=torch.float64))
        order = config.angular_order
        mono = _Monomials(order)
        to_chebyshev = chebyshev_power_coefficients(order)  # (A+1, A+1)
        n_lower = mono.raised.shape[1]
        lower_degree = mono.degree[:n_lower]
        # tangential part (M', A+1): (|m'| + 1) μ_m' C_{a,|m'|+1}
        tangential = ((lower_degree + 1) * mono.multinomial[:n_lower])[:, None] * to_chebyshev.T[lower_degree + 1]
        tables = {
            "angular_square": mono.multinomial[:, None] * to_chebyshev.T[mono.degree],  # Q (M, A+1)
            "angular_tangential": tangential,
            "monomial_degree": mono.degree,
        }
        for name, table in tables.items():
            tensor = torch.from_numpy(np.ascontiguousarray(table, dtype=np.float64))
            self.register_buffer(name, tensor, persistent=False)
        self.register_buffer("angular_raised", torch.from_numpy(mono.raised.reshape(-1)), persistent=False)
        radial_slope = torch.arange(config.radial_order + 1, dtype=torch.float64) * (2.0 / config.radial_cutoff)
        self.register_buffer("radial_slope", radial_slope, persistent=False)  # d(2r/R_c - 1)/dr · a
        for part in ("radial", "angular"):  # the feature columns the contraction operator reads, channel by channel
            columns = [k for c in range(2 if self.typed else 1) for k in range(self.n_features)[self._columns(c, part)]]
            self.register_buffer(f"{part}_columns", torch.tensor(columns, dtype=torch.long), persistent=False)
        #: Inference on the CPU through the compiled loops (:mod:`.chebyshev_compiled`); False: the tensor operations.
        self.compiled = True
        self._kernel_tables = {}

    @property
    def n_block(self) -> int:
        return self.config.radial_order + self.config.angular_order + 2

    @property
    def n_features(self) -> int:
        return self.n_block * (2 if self.typed else 1)

    @property
    def cutoff(self) -> float:
        return self.config.radial_cutoff

    def forward(self, species: torch.Tensor, pairs: NeighborPairs) -> torch.Tensor:
        return self.features_and_jacobian(species, pairs, jacobian=False)[0]

    def features_and_jacobian(
        self, species: torch.Tensor, pairs: NeighborPairs, jacobian: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (N, D) and, if asked, the analytic Jacobian (P, D, 3) w.r.t. each pair vector."""
        return self._evaluate(species, pairs, "jacobian" if jacobian else None)

    def features_and_gradients(self, species: torch.Tensor, pairs: NeighborPairs) -> tuple[torch.Tensor, Callable]:
        """Features (N, D) and the force contraction from the factors of J, which is never formed: compiled loops
        on the CPU (:mod:`.chebyshev_compiled`, unless :attr:`compiled` is False), else :class:`_PairGradients`."""
        if self.compiled:
            from . import chebyshev_compiled  # numba loads only where a model is evaluated

            compiled = chebyshev_compiled.features_and_gradients(self, species, pairs)
            if compiled is not None:
                return compiled
        return self._evaluate(species, pairs, "gradients")

    def kernel_tables(self, dtype: np.dtype):
        """The compiled kernels' constants in ``dtype``, made once."""
        from .chebyshev_compiled import KernelTables

        if dtype not in self._kernel_tables:
            self._kernel_tables[dtype] = KernelTables(self, dtype)
        return self._kernel_tables[dtype]

    def _evaluate(self, species: torch.Tensor, pairs: NeighborPairs, want: str | None):
        """Features, and J (``want`` "jacobian"), its contraction operator ("gradients") or None."""
        r = pairs.distances
        u = pairs.vectors / r.unsqueeze(1)
        weights = self.type_weight.to(r.dtype)[species[pairs.second]] if self.typed else None  # (P,) t_j
        radial, slopes = self._radial(r, pairs.first, pairs.n_atoms, weights, want is not None)
        angular = (r < self.config.angular_cutoff).nonzero().squeeze(1)  # (P_ang,)
        per_pair = (r, u, pairs.first, weights)
        if angular.shape[0] == r.shape[0]:
            angular = None  # every pair is angular
        else:
            per_pair = tuple(None if x is None else x.index_select(0, angular) for x in per_pair)
        angular_features, angular_state = self._angular(*per_pair, pairs.n_atoms, want is not None)
        features = torch.cat([radial, angular_features], dim=2).flatten(1)  # (N, C·(R+A+2))
        if want is None:
            return features, None
        with torch.no_grad():
            if want == "jacobian":
                return features, self._jacobian(u, slopes, self._angular_blocks(*angular_state), angular)
            radial_rows = torch.cat(slopes).T.contiguous()  # (P, C·(R+1))
        return features, _PairGradients(self, pairs.first, u, radial_rows, angular_state, angular)

    def _jacobian(self, u, slopes, blocks, angular_pairs):
        """J (P, D, 3): radial columns dφ_a/dr u from the slopes, angular columns from the blocks (zero for pairs
        beyond the angular cutoff; ``angular_pairs`` are the others, None for all)."""
        jac = u.new_empty((u.shape[0], self.n_features, 3))
        for c, slope in enumerate(slopes):
            channel = slope.T
            for k in range(3):  # 2-D ops: broadcasting over a size-3 (or size-1) axis is several times slower
                torch.mul(channel, u[:, k, None], out=jac[:, self._columns(c, "radial"), k])
        columns = [self._columns(c, "angular") for c in range(len(slopes))]
        if angular_pairs is not None:
            for block_columns in columns:
                jac[:, block_columns] = 0.0
        for part, block in blocks:
            for c, block_columns in enumerate(columns):
                if angular_pairs is None:
                    jac[part, block_columns] = block[:, c]
                else:
                    jac[:, block_columns].index_copy_(0, angular_pairs[part], block[:, c])
        return jac

    def _columns(self, channel: int, part: str) -> slice:
        """The Jacobian/feature columns of the radial or angular block of one channel."""
        n_radial, n_angular = self.config.radial_order + 1, self.config.angular_order + 1
        start = channel * self.n_block + (0 if part == "radial" else n_radial)
        return slice(start, start + (n_radial if part == "radial" else n_angular))

    def _channels(self, values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        """(P, ...) per-pair values → (P, C, ...): as they are, and times the type weight t_j for several species."""
        if weights is None:
            return values.unsqueeze(1)
        return torch.stack([values, values * weights.view(-1, *[1] * (values.dim() - 1))], dim=1)

    def _radial(self, r, first, n_atoms, weights, slopes):
        """Radial features (N, C, R+1) and, if ``slopes``, dφ_a/dr of each channel, [(R+1, P)] (else None)."""
        cutoff = self.config.radial_cutoff
        fc, dfc = cosine_cutoff(r, cutoff)
        T, shifted = chebyshev_kinds((2.0 / cutoff) * r - 1.0, self.config.radial_order)  # T_a, U_{a-1}: (R+1, P)
        w = self._channels(fc, weights)  # (P, C)
        sums = _AtomSums(first, n_atoms)
        features = torch.stack([sums.transposed(T, w[:, c]) for c in range(w.shape[1])]).permute(2, 0, 1)
        if not slopes:
            return features, None
        with torch.no_grad():  # dφ_a/dr = T_a f_c' + (2/R_c) a U_{a-1} f_c
            slope = torch.addcmul(T * dfc, shifted, self.radial_slope.to(r.dtype).unsqueeze(1) * fc)  # (R+1, P)
        return features, [slope] if weights is None else [slope, slope * weights]

    def _angular(self, r, u, first, weights, n_atoms, jacobian):
        """Angular features (N, C, A+1) by moments, and, if ``jacobian``, what their Jacobian is made of
        (:class:`_AngularPairs`), else None."""
        fc, dfc = cosine_cutoff(r, self.config.angular_cutoff)
        w = self._channels(fc, weights)  # (P, C)
        powers = monomials(u, self.config.angular_order)  # (P, M)
        sums = _AtomSums(first, n_atoms)
        moments = torch.stack([sums(powers, w[:, c]) for c in range(w.shape[1])], dim=1)  # S (N, C, M)
        squares = w * w  # (P, C)
        self_terms = squares.new_zeros((n_atoms, w.shape[1])).index_add_(0, first, squares)  # Σ w² (N, C)
        square = self.angular_square.to(r.dtype)
        features = 0.5 * ((moments * moments) @ square - self_terms.unsqueeze(2))
        if not jacobian:
            return features, None
        return features, _AngularPairs(r, u, first, powers, moments, w, self._channels(dfc, weights))

    def _angular_blocks(self, r, u, first, powers, moments, w, dw):
        """The angular Jacobian in blocks of pairs (bounded temporaries): (slice, (p, C, A+1, 3)) each."""
        raised = moments[:, :, self.angular_raised].flatten(1)  # S_{m'+e_α}: (N, C·3M')
        moments = moments.flatten(1)  # S_m: (N, C·M)
        for part in _blocks(r.shape[0]):
            atoms = first[part]
            block = self._angular_jacobian(
                r[part],
                u[part],
                moments.index_select(0, atoms),
                raised.index_select(0, atoms),
                powers[part],
                w[part],
                dw[part],
            )
            yield part, block

    def _angular_vjp(self, dE_dG: torch.Tensor, r, u, first, powers, moments, w, dw) -> torch.Tensor:
        """Σ_a ∂E/∂d_a ∂d_a/∂r_p for the angular pairs without their Jacobian: (N, C, A+1, K) → (K, P_ang, 3).

        With g = ∂E/∂d of the pair's atom, the module docstring's Jacobian contracts to
        [w' Σ_m H_m u^m - (w/r) Σ_m |m| H_m u^m - w w' Σ_a g_a] u + (w/r) Σ_m' T_{α,m'} u^m' e_α, where
        H_m = S_m Σ_a Q_ma g_a and T_{α,m'} = S_{m'+e_α} Σ_a C^t_{m'a} g_a are per-atom tables: each pair multiplies
        its monomials with its atom's (M, 5·C·K) table, one batched product per atom. It reads no per-pair copy of
        the moments and writes no Jacobian rows: for 1 to 8 members it was faster than building the angular rows
        per pair and contracting them (a committee of 4 on 2048 Cu atoms: 57 against 70 ms per call, one thread).
        """
        dtype = r.dtype
        n_atoms, n_channels, n_mono = moments.shape
        n_lower, n_members = self.angular_tangential.shape[0], dE_dG.shape[-1]
        held = moments.unsqueeze(-1) * torch.einsum("ma,ncak->ncmk", self.angular_square.to(dtype), dE_dG)
        raised = moments[:, :, self.angular_raised].view(n_atoms, n_channels, 3, n_lower, 1)
        tangent = raised * torch.einsum("ma,ncak->ncmk", self.angular_tangential.to(dtype), dE_dG).unsqueeze(2)
        table = moments.new_zeros((n_atoms, n_mono, 5, n_channels, n_members))
        table[:, :, 0] = held.transpose(1, 2)
        table[:, :, 1] = (held * self.monomial_degree.to(dtype)[:, None]).transpose(1, 2)
        table[:, :n_lower, 2:] = tangent.permute(0, 3, 2, 1, 4)
        sums = contract_by_atom(powers.unsqueeze(1), first, table.view(n_atoms, n_mono, -1))
        sums = sums.view(-1, 5, n_channels, n_members)  # (P, 5, C, K): Σ H u^m, Σ |m| H u^m, Σ T_α u^m'
        w_over_r = (w / r.unsqueeze(1)).unsqueeze(2)  # (P, C, 1)
        g_sum = dE_dG.sum(2).index_select(0, first)  # (P, C, K)
        along = dw.unsqueeze(2) * sums[:, 0] - w_over_r * sums[:, 1] - (w * dw).unsqueeze(2) * g_sum  # (P, C, K)
        across = (w_over_r.unsqueeze(1) * sums[:, 2:]).sum(2)  # (P, 3, K)
        return (along.sum(1).unsqueeze(1) * u.unsqueeze(2) + across).permute(2, 0, 1)

    def _angular_jacobian(self, r, u, moments, raised, powers, w, dw):
        """(P, C, A+1, 3) as in the module docstring, from each pair's central-atom moments S_m (P, C·M) and
        S_{m'+e_α} (P, C·3M'), its monomials (P, M) and w, w' (P, C).

        The small contractions are written (A+1, ...)-major, the layout in which MKL is fastest.
        """
        dtype = r.dtype
        n_pairs, n_channels = w.shape
        n_mono, n_angular = self.angular_square.shape
        n_lower = self.angular_tangential.shape[0]
        w_over_r = w / r.unsqueeze(1)  # (P, C)
        scale = torch.addcmul(dw.unsqueeze(2), w_over_r.unsqueeze(2), self.monomial_degree.to(dtype), value=-1)
        radial = moments.view(n_pairs, n_channels, n_mono) * scale.mul_(powers.unsqueeze(1))  # (w' - |m|w/r) S u^m
        along_u = self.angular_square.to(dtype).T @ radial.view(n_pairs * n_channels, n_mono).T
        along_u = along_u.view(n_angular, n_pairs, n_channels) - w * dw  # (A+1, P, C)
        lower = powers[:, None, None, :n_lower] * w_over_r[:, :, None, None]  # (w/r) u^m', (P, C, 1, M')
        tangential = raised.view(n_pairs, n_channels, 3, n_lower) * lower  # (P, C, 3, M')
        jac = self.angular_tangential.to(dtype).T @ tangential.view(n_pairs * n_channels * 3, n_lower).T
        jac = jac.view(n_angular, n_pairs, n_channels, 3)  # (A+1, P, C, 3)
        return jac.addcmul_(along_u.unsqueeze(3), u[:, None, :]).permute(1, 2, 0, 3)


class _AngularPairs(NamedTuple):
    """The pairs within the angular cutoff and what their part of J is made of, in the order the methods that
    build (:meth:`ChebyshevDescriptor._angular_blocks`) or contract it (``_angular_vjp``) take them."""

    r: torch.Tensor  # (P_ang,) distances
    u: torch.Tensor  # (P_ang, 3) unit vectors
    first: torch.Tensor  # (P_ang,) central atoms
    powers: torch.Tensor  # (P_ang, M) monomials u^m
    moments: torch.Tensor  # (N, C, M) S_m of every atom
    w: torch.Tensor  # (P_ang, C) cutoff weights
    dw: torch.Tensor  # (P_ang, C) their derivatives


class _PairGradients:
    """∂E/∂G (K, N, D) ↦ ∂E/∂r_p (K, P, 3) from the factors of J, for inference.

    J's radial columns are a scalar per pair and function along the pair, dφ_a/dr · u_p, so their contraction is
    (Σ_a ∂E/∂G_{i_p a} dφ_a/dr) u_p: P·(R+1) values instead of 3·P·(R+1), contracted one atom at a time
    (:func:`~aiida_annpot.core.pair_gradients.contract_by_atom`). Its angular columns vanish beyond the angular
    cutoff; for the pairs within it the moments are contracted directly (:meth:`ChebyshevDescriptor._angular_vjp`).

    :param radial_rows: (P, C·(R+1)) dφ/dr per pair, in the order of the descriptor's ``radial_columns`` of G.
    :param angular_state: what the angular Jacobian is made of (:class:`_AngularPairs`).
    :param angular_pairs: (P_ang,) the pairs within the angular cutoff, None for all.
    """

    def __init__(self, descriptor, first, u, radial_rows, angular_state, angular_pairs):
        self.descriptor, self.first, self.u = descriptor, first, u
        self.radial_rows, self.angular_state, self.angular_pairs = radial_rows, angular_state, angular_pairs

    def __call__(self, dE_dG: torch.Tensor) -> torch.Tensor:
        descriptor, state = self.descriptor, self.angular_state
        per_atom = dE_dG.permute(1, 2, 0)  # (N, D, K)
        with torch.no_grad():
            along = contract_by_atom(self.radial_rows.unsqueeze(1), self.first, per_atom[:, descriptor.radial_columns])
            gradients = along.permute(2, 0, 1) * self.u  # (K, P, 1) · (P, 3)
            if state.r.shape[0] == 0:
                return gradients
            n_channels = state.w.shape[1]
            angular_g = per_atom[:, descriptor.angular_columns].unflatten(1, (n_channels, -1))  # (N, C, A+1, K)
            angular = descriptor._angular_vjp(angular_g, *state)  # (K, P_ang, 3)
            if self.angular_pairs is None:
                gradients += angular
            else:
                gradients.index_add_(1, self.angular_pairs, angular)
        return gradients
