"""Chebyshev radial and angular descriptor (Artrith, Urban & Ceder, PRB 96, 014112, 2017) with analytic Jacobian.

Radial: c_a = Σ_j T_a(2 r_ij/R_c - 1) f_c(r_ij).
Angular: d_a = Σ_{j<k} T_a(cos θ_ijk) f_c(r_ij) f_c(r_ik).

The angular sum is evaluated through moments, linear in the number of pairs instead of quadratic: with
u = r/|r| and the multinomial expansion (u_j·u_k)^n = Σ_{|m|=n} μ_m u_j^m u_k^m,

    Σ_{j,k} w_j w_k (u_j·u_k)^n = Σ_{|m|=n} μ_m S_m²,   S_m = Σ_j w_j u_j^m,

and the j = k terms are Σ_j w_j² because u·u = 1. T_a(x) = Σ_n C_an x^n then gives d_a. For several species a
second copy of both expansions weights each neighbour by its element's type weight t_Z (pairs by t_j t_k).
Chebyshev polynomials use the three-term recurrence (torch.special's version has no gradient).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from ...common.config import ChebyshevConfig
from ..geometry import NeighborPairs
from .base import Descriptor, cosine_cutoff, typespin_weights


def chebyshev_series(x: torch.Tensor, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """T_0..T_order at ``x`` (shape (..., order+1)) and their derivatives dT_a/dx, by the recurrence."""
    values = [torch.ones_like(x), x]
    slopes = [torch.zeros_like(x), torch.ones_like(x)]
    for _ in range(2, order + 1):
        values.append(2.0 * x * values[-1] - values[-2])
        slopes.append(2.0 * values[-2] + 2.0 * x * slopes[-1] - slopes[-2])
    return torch.stack(values[: order + 1], dim=-1), torch.stack(slopes[: order + 1], dim=-1)


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
    """Index tables for the monomials u^m = u_x^m1 u_y^m2 u_z^m3 with |m| ≤ order, ordered by degree."""

    def __init__(self, order: int):
        exponents = [m for n in range(order + 1) for m in itertools.product(range(n + 1), repeat=3) if sum(m) == n]
        self.exponents = np.array(exponents, dtype=np.int64)  # (M, 3)
        self.degree = self.exponents.sum(axis=1)
        factorial = np.vectorize(math.factorial)
        self.multinomial = factorial(self.degree) / factorial(self.exponents).prod(axis=1)
        lookup = {tuple(m): k for k, m in enumerate(exponents)}
        # index of m - e_alpha (any valid index where m_alpha = 0: its coefficient m_alpha is zero then)
        self.lowered = np.array(
            [[lookup.get(tuple(np.array(m) - np.eye(3, dtype=np.int64)[a]), 0) for a in range(3)] for m in exponents]
        )
        self.degree_matrix = np.eye(order + 1)[self.degree]  # (M, order+1) sums monomials of equal degree


class ChebyshevDescriptor(Descriptor):
    """Chebyshev descriptor of :class:`~aiida_annpot.common.config.ChebyshevConfig`.

    Feature layout: [radial (R+1), angular (A+1)] for one species; for several species the same block again,
    type-weighted. D = (R + A + 2) × (1 or 2).
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
        mono = _Monomials(config.angular_order)
        self.register_buffer("mono_exponents", torch.from_numpy(mono.exponents))
        self.register_buffer("mono_lowered", torch.from_numpy(mono.lowered))
        self.register_buffer("mono_multinomial", torch.from_numpy(mono.multinomial))
        self.register_buffer("mono_degree", torch.from_numpy(mono.degree).to(torch.float64))
        self.register_buffer("degree_matrix", torch.from_numpy(mono.degree_matrix))
        self.register_buffer("power_to_chebyshev", torch.from_numpy(chebyshev_power_coefficients(config.angular_order)))

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
        dtype = pairs.vectors.dtype
        r = pairs.distances
        u = pairs.vectors / r.unsqueeze(1)
        channels = [torch.ones_like(r)]
        if self.typed:
            channels.append(self.type_weight.to(dtype)[species[pairs.second]])

        radial = self._radial(r, u, pairs, channels, jacobian)
        angular_pairs = r < self.config.angular_cutoff
        angular = self._angular(r[angular_pairs], u[angular_pairs], pairs.first[angular_pairs], pairs.n_atoms,
                                [w[angular_pairs] for w in channels], jacobian)
        features = torch.cat([block for c in range(len(channels)) for block in (radial[0][c], angular[0][c])], dim=1)
        if not jacobian:
            return features, None
        jac = r.new_zeros((r.shape[0], self.n_features, 3))
        start = 0
        for c in range(len(channels)):
            jac[:, start : start + radial[1][c].shape[1]] = radial[1][c]
            start += radial[1][c].shape[1]
            jac[angular_pairs, start : start + angular[1][c].shape[1]] = angular[1][c]
            start += angular[1][c].shape[1]
        return features, jac

    def _radial(self, r, u, pairs, channels, jacobian):
        """Per channel: features (N, R+1) and Jacobian (P, R+1, 3)."""
        cutoff = self.config.radial_cutoff
        fc, dfc = cosine_cutoff(r, cutoff)
        T, dT = chebyshev_series(2.0 * r / cutoff - 1.0, self.config.radial_order)
        phi = T * fc.unsqueeze(1)  # (P, R+1)
        dphi = dT * (2.0 / cutoff) * fc.unsqueeze(1) + T * dfc.unsqueeze(1)
        features, jacobians = [], []
        for weight in channels:
            features.append(r.new_zeros((pairs.n_atoms, phi.shape[1])).index_add_(0, pairs.first, phi * weight[:, None]))
            if jacobian:
                jacobians.append((dphi * weight[:, None]).unsqueeze(2) * u.unsqueeze(1))
        return features, jacobians

    def _angular(self, r, u, first, n_atoms, channels, jacobian):
        """Per channel: features (N, A+1) and Jacobian (P_ang, A+1, 3), by moments (see module docstring)."""
        dtype = r.dtype
        fc, dfc = cosine_cutoff(r, self.config.angular_cutoff)
        exponents = self.mono_exponents
        order = self.config.angular_order
        powers = torch.stack([u**n for n in range(order + 1)], dim=1)  # (P, A+1, 3)
        monomials = powers[:, exponents[:, 0], 0] * powers[:, exponents[:, 1], 1] * powers[:, exponents[:, 2], 2]
        multinomial = self.mono_multinomial.to(dtype)
        degree_matrix = self.degree_matrix.to(dtype)
        to_chebyshev = self.power_to_chebyshev.to(dtype)
        features, jacobians = [], []
        for weight in channels:
            w, dw = fc * weight, dfc * weight
            moments = r.new_zeros((n_atoms, monomials.shape[1])).index_add_(0, first, w[:, None] * monomials)
            self_terms = r.new_zeros(n_atoms).index_add_(0, first, w * w)
            full = (moments * moments * multinomial) @ degree_matrix  # Σ_{j,k} w_j w_k cos^n, (N, A+1)
            features.append(0.5 * (full - self_terms[:, None]) @ to_chebyshev.T)
            if not jacobian:
                continue
            # d(full_n)/dr_p = (w' - n w/r) A_pn u + (w/r) B_pn with
            # A_pn = 2 Σ_{|m|=n} μ_m S_m u^m and B_pn = 2 Σ_{|m|=n} μ_m S_m ∇_u(u^m)
            weighted = 2.0 * multinomial * moments[first]  # (P, M)
            a_term = (weighted * monomials) @ degree_matrix  # (P, A+1)
            b_term = torch.stack(
                [(weighted * exponents[:, k].to(dtype) * monomials[:, self.mono_lowered[:, k]]) @ degree_matrix
                 for k in range(3)],
                dim=2,
            )  # (P, A+1, 3)
            n = torch.arange(order + 1, dtype=dtype)
            radial_part = (dw[:, None] - n * (w / r)[:, None]) * a_term - 2.0 * (w * dw)[:, None]
            d_power = 0.5 * (radial_part.unsqueeze(2) * u.unsqueeze(1) + (w / r)[:, None, None] * b_term)
            jacobians.append(torch.einsum("an,pnk->pak", to_chebyshev, d_power))
        return features, jacobians
