"""Behler–Parrinello atom-centred symmetry functions G2 (radial) and G4 (angular), resolved by neighbour species.

References: J. Behler and M. Parrinello, PRL 98, 146401 (2007); J. Behler, J. Chem. Phys. 134, 074106 (2011);
N. Artrith and A. Urban, Comput. Mater. Sci. 114, 135 (2016) (aenet).

    G2_i[e]       = Σ_{j: Z_j = e} exp(-η (r_ij - r_s)²) f_c(r_ij)
    G4_i[e1, e2]  = 2^{1-ζ} Σ_{j≠k, {Z_j, Z_k} = {e1, e2}} (1 + λ cos θ_ijk)^ζ
                    · exp(-η (r_ij² + r_ik² + r_jk²)) f_c(r_ij) f_c(r_ik) f_c(r_jk)

The G4 sum runs over all *ordered* pairs of distinct neighbours (j, k), i.e. twice the unordered sum over j < k:
this is Behler's (2011) convention together with the 2^{1-ζ} prefactor. f_c is the cosine cutoff. Neighbours are
pair entries, so periodic images of one atom are distinct neighbours and r_jk = r_ik - r_ij uses the pair vectors.

Feature layout: [G2 blocks, one per neighbour element e (sorted), each n_g2 long;
G4 blocks, one per unordered element pair (e1 ≤ e2, row-major: (0,0), (0,1), ..., (1,1), ...), each n_g4 long].
D = n_g2 · n_el + n_g4 · n_el (n_el + 1) / 2. ``forward`` is differentiable by autograd; the Jacobian
(:meth:`BehlerParrinelloDescriptor.features_and_jacobian`) is analytic and agrees with the autograd default.
"""

from __future__ import annotations

import torch

from ...common.config import BehlerParrinelloConfig
from ..geometry import NeighborPairs
from .base import Descriptor, cosine_cutoff


def triplet_indices(first: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All ordered pairs (p, q), p ≠ q, of pair indices sharing the central atom ``first[p] == first[q]``.

    Vectorized: pairs are sorted by central atom, and each pair p of an atom with n pairs is repeated n - 1 times,
    paired with the atom's other n - 1 pairs (local index k skips p's own local index). Returns two (T,) tensors,
    T = Σ_i n_i (n_i - 1).
    """
    device = first.device
    order = torch.argsort(first, stable=True)  # (P,) sorted position -> pair index
    counts = torch.bincount(first, minlength=n_atoms)  # (N,)
    starts = torch.cumsum(counts, 0) - counts  # (N,) first sorted position of each atom
    atom = first[order]  # (P,) central atom at each sorted position
    local = torch.arange(first.shape[0], device=device) - starts[atom]  # (P,) index within the atom's block
    partners = counts[atom] - 1  # (P,) number of triplets each sorted pair starts
    p_sorted = torch.repeat_interleave(torch.arange(first.shape[0], device=device), partners)  # (T,)
    offsets = torch.cumsum(partners, 0) - partners  # (P,) first triplet of each sorted pair
    k = torch.arange(p_sorted.shape[0], device=device) - offsets[p_sorted]  # (T,) 0..n-2
    k = k + (k >= local[p_sorted]).long()  # skip q == p
    q_sorted = starts[atom[p_sorted]] + k  # (T,)
    return order[p_sorted], order[q_sorted]


class BehlerParrinelloDescriptor(Descriptor):
    """Species-resolved G2/G4 descriptor of :class:`~aiida_annpot.common.config.BehlerParrinelloConfig`."""

    def __init__(self, elements: list[str], config: BehlerParrinelloConfig):
        super().__init__(elements)
        self.config = config
        n_el = len(self.elements)
        # (n_el, n_el) symmetric map from an element pair to its G4 block index, row-major over e1 ≤ e2
        pair_block = torch.zeros((n_el, n_el), dtype=torch.int64)
        index = 0
        for e1 in range(n_el):
            for e2 in range(e1, n_el):
                pair_block[e1, e2] = pair_block[e2, e1] = index
                index += 1
        self.n_pair_blocks = index
        self.register_buffer("pair_block", pair_block)
        self.register_buffer("g2_eta", torch.tensor([g.eta for g in config.g2], dtype=torch.float64))
        self.register_buffer("g2_rs", torch.tensor([g.r_s for g in config.g2], dtype=torch.float64))
        self.register_buffer("g4_eta", torch.tensor([g.eta for g in config.g4], dtype=torch.float64))
        self.register_buffer("g4_zeta", torch.tensor([g.zeta for g in config.g4], dtype=torch.float64))
        self.register_buffer("g4_lambda", torch.tensor([float(g.lambda_) for g in config.g4], dtype=torch.float64))

    @property
    def n_g2(self) -> int:
        return len(self.config.g2)

    @property
    def n_g4(self) -> int:
        return len(self.config.g4)

    @property
    def n_features(self) -> int:
        return self.n_g2 * len(self.elements) + self.n_g4 * self.n_pair_blocks

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    def forward(self, species: torch.Tensor, pairs: NeighborPairs) -> torch.Tensor:
        """Features (N, D); differentiable with respect to ``pairs.vectors`` (see module docstring for layout)."""
        return self.features_and_jacobian(species, pairs, jacobian=False)[0]

    def features_and_jacobian(
        self, species: torch.Tensor, pairs: NeighborPairs, jacobian: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (N, D) and, if asked, the analytic Jacobian (P, D, 3); cheaper than the autograd default,
        whose batched backward would hold a (D, T, n_g4) tensor over all T triplets."""
        vectors = pairs.vectors  # (P, 3)
        dtype, n_atoms, n_el, n_pb = vectors.dtype, pairs.n_atoms, len(self.elements), self.n_pair_blocks
        cutoff = self.config.cutoff
        keep = torch.linalg.vector_norm(vectors.detach(), dim=1) < cutoff  # beyond R_c nothing contributes
        first, vectors = pairs.first[keep], vectors[keep]  # (P',), (P', 3)
        neighbour = species[pairs.second[keep]]  # (P',) element index of j
        r = torch.linalg.vector_norm(vectors, dim=1)  # (P',)
        u = vectors / r[:, None]  # (P', 3)
        fc, dfc = cosine_cutoff(r, cutoff)  # (P',)

        # G2: (P', n_g2) terms scattered into (N * n_el, n_g2), row i * n_el + Z_j
        eta2, rs2 = self.g2_eta.to(dtype), self.g2_rs.to(dtype)
        gauss = torch.exp(-eta2 * (r[:, None] - rs2) ** 2)  # (P', n_g2)
        g2 = vectors.new_zeros((n_atoms * n_el, self.n_g2)).index_add(0, first * n_el + neighbour, gauss * fc[:, None])
        features = [g2.reshape(n_atoms, n_el * self.n_g2)]
        if jacobian:
            d_g2 = gauss * (dfc[:, None] - 2.0 * eta2 * (r[:, None] - rs2) * fc[:, None])  # (P', n_g2)
            jac_g2 = vectors.new_zeros((r.shape[0], n_el, self.n_g2, 3))  # (P', n_el, n_g2, 3)
            jac_g2[torch.arange(r.shape[0]), neighbour] = d_g2[:, :, None] * u[:, None, :]
            jacs = [jac_g2.reshape(r.shape[0], n_el * self.n_g2, 3)]

        if self.n_g4:
            # G4 over triplets t = (p, q): a = r_ij = vectors[p], b = r_ik = vectors[q], c = r_jk = b - a
            p, q = triplet_indices(first, n_atoms)  # (T,), (T,)
            a_vec, b_vec = vectors[p], vectors[q]  # (T, 3)
            a, b = r[p], r[q]  # (T,)
            c_vec = b_vec - a_vec  # (T, 3) exact image vector, no minimum-image convention needed
            c = torch.linalg.vector_norm(c_vec, dim=1)  # (T,)
            fc_c, dfc_c = cosine_cutoff(c, cutoff)
            cos = (a_vec * b_vec).sum(dim=1) / (a * b)  # (T,)
            eta4, zeta, lam = self.g4_eta.to(dtype), self.g4_zeta.to(dtype), self.g4_lambda.to(dtype)
            # 1 + λ cos ≥ 0 analytically; clamp away rounding below 0 and keep (·)^ζ differentiable at 0
            base = (1.0 + lam * cos[:, None]).clamp_min(torch.finfo(dtype).tiny)  # (T, n_g4)
            angular = torch.pow(2.0, 1.0 - zeta) * base**zeta  # (T, n_g4)
            gauss4 = torch.exp(-eta4 * (a**2 + b**2 + c**2)[:, None])  # (T, n_g4)
            cut = fc[p] * fc[q] * fc_c  # (T,)
            block = first[p] * n_pb + self.pair_block[neighbour[p], neighbour[q]]  # (T,) row in (N * n_pb)
            g4 = vectors.new_zeros((n_atoms * n_pb, self.n_g4)).index_add(0, block, angular * gauss4 * cut[:, None])
            features.append(g4.reshape(n_atoms, n_pb * self.n_g4))
            if jacobian:
                # the summand is symmetric in (j, k), so ∂G/∂r_p = 2 Σ_q ∂_a term(p, q)
                d_cos = b_vec / (a * b)[:, None] - (cos / a**2)[:, None] * a_vec  # (T, 3)
                d_angular = torch.pow(2.0, 1.0 - zeta) * zeta * lam * base ** (zeta - 1.0)  # (T, n_g4) per d cos
                d_cut = (dfc[p] * fc[q] * fc_c / a)[:, None] * a_vec - (fc[p] * fc[q] * dfc_c / c)[:, None] * c_vec
                term = gauss4 * (angular * cut[:, None])  # (T, n_g4)
                d_term = (
                    (gauss4 * d_angular * cut[:, None])[:, :, None] * d_cos[:, None, :]
                    - (2.0 * eta4)[None, :, None] * term[:, :, None] * (a_vec - c_vec)[:, None, :]
                    + (angular * gauss4)[:, :, None] * d_cut[:, None, :]
                )  # (T, n_g4, 3)
                row = p * n_pb + self.pair_block[neighbour[p], neighbour[q]]  # (T,) row in (P' * n_pb)
                jac_g4 = vectors.new_zeros((r.shape[0] * n_pb, self.n_g4, 3)).index_add(0, row, 2.0 * d_term)
                jacs.append(jac_g4.reshape(r.shape[0], n_pb * self.n_g4, 3))

        features = torch.cat(features, dim=1)
        if not jacobian:
            return features, None
        full = pairs.vectors.new_zeros((pairs.vectors.shape[0], self.n_features, 3))
        full[keep] = torch.cat(jacs, dim=1)
        return features, full
