"""Behler–Parrinello atom-centred symmetry functions G2 (radial) and G4 (angular), resolved by neighbour species.

References: J. Behler and M. Parrinello, PRL 98, 146401 (2007); J. Behler, J. Chem. Phys. 134, 074106 (2011);
N. Artrith and A. Urban, Comput. Mater. Sci. 114, 135 (2016) (aenet).

    G2_i[e]       = Σ_{j: Z_j = e} exp(-η (r_ij - r_s)²) f_c(r_ij)
    G4_i[e1, e2]  = 2^{1-ζ} Σ_{j≠k, {Z_j, Z_k} = {e1, e2}} (1 + λ cos θ_ijk)^ζ
                    · exp(-η (r_ij² + r_ik² + r_jk²)) f_c(r_ij) f_c(r_ik) f_c(r_jk)

The G4 sum runs over all *ordered* pairs of distinct neighbours (j, k), i.e. twice the unordered sum over j < k:
Behler's (2011) double sum with the 2^{1-ζ} prefactor. aenet (symmfunc.f90) and n2p2 sum each unordered pair once
with the same prefactor, so their G4 values are half of these; the networks see features standardised per element,
which removes a constant factor, so a model does not depend on the choice. f_c is the cosine cutoff with each
function's own R_c (by default the descriptor's). Neighbours are pair entries, so periodic images of one atom are
distinct neighbours and r_jk = r_ik - r_ij uses the pair vectors.

Each element has a list of functions, each naming its neighbour element (G2) or unordered element pair (G4): the
configuration's shared ``g2``/``g4`` (the same for every element) or its ``per_element`` sets (aenet's setup files).
A function that names no neighbours stands for one function per element (G2) or element pair (G4). Feature columns
of an atom of element c: its G2 functions, then its G4 functions, in list order; unnamed functions expand block-wise:
[G2 blocks, one per neighbour element e (sorted), each n_g2 long; G4 blocks, one per unordered element pair (e1 ≤ e2,
row-major: (0,0), (0,1), ..., (1,1), ...), each n_g4 long], so D = n_g2 · n_el + n_g4 · n_el (n_el + 1) / 2.
Elements with fewer functions than D (= the most of any element) have zeros in their last columns.

Internally every pair (i, j) contributes to K2 slots of the group (Z_i, Z_j) and every triplet to K4 slots of the
group (Z_i, {Z_j, Z_k}), K = the largest group; one gather per central element then maps the slots to its columns
(the identity for shared sets without neighbour names). ``forward`` is differentiable by autograd; the Jacobian
(:meth:`BehlerParrinelloDescriptor.features_and_jacobian`) is analytic and agrees with the autograd default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...common.config import G2, G4, BehlerParrinelloConfig
from ..errors import ElementMismatchError
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


@dataclass(frozen=True)
class _Term:
    """One feature column of a central element: a function with its neighbour group resolved to an index."""

    group: int  # G2: neighbour element index; G4: element-pair block index
    parameters: tuple[float, ...]  # G2: (η, r_s); G4: (η, ζ, λ)
    cutoff: float


def _element_index(elements: list[str], name: str, where: str) -> int:
    if name not in elements:
        raise ElementMismatchError(
            f"{where} names neighbour element {name}, which the model does not cover (elements: {', '.join(elements)})"
        )
    return elements.index(name)


def _terms(elements: list[str], g2: list[G2], g4: list[G4], cutoff: float, pair_block, where: str):
    """The G2 and G4 columns of one function set, in column order (unnamed functions expanded block-wise)."""
    n_el = len(elements)
    radial = [_Term(e, (g.eta, g.r_s), g.cutoff or cutoff) for e in range(n_el) for g in g2 if g.neighbour is None]
    radial += [
        _Term(_element_index(elements, g.neighbour, where), (g.eta, g.r_s), g.cutoff or cutoff)
        for g in g2
        if g.neighbour is not None
    ]
    blocks = sorted({int(b) for b in pair_block.flatten()})
    angular = [
        _Term(b, (g.eta, g.zeta, float(g.lambda_)), g.cutoff or cutoff)
        for b in blocks
        for g in g4
        if g.neighbours is None
    ]
    for g in g4:
        if g.neighbours is not None:
            e1, e2 = (_element_index(elements, name, where) for name in g.neighbours)
            angular.append(_Term(int(pair_block[e1, e2]), (g.eta, g.zeta, float(g.lambda_)), g.cutoff or cutoff))
    return radial, angular


def _slots(terms: list[list[_Term]], n_groups: int) -> tuple[list[list[int]], int]:
    """Per central element, the slot of each term within its group, and K (the most slots any group needs)."""
    slots, size = [], 0
    for element_terms in terms:
        filled = [0] * n_groups
        own = []
        for term in element_terms:
            own.append(filled[term.group])
            filled[term.group] += 1
        slots.append(own)
        size = max(size, *filled) if filled else size
    return slots, size


class BehlerParrinelloDescriptor(Descriptor):
    """Species-resolved G2/G4 descriptor of :class:`~aiida_annpot.common.config.BehlerParrinelloConfig`.

    :raises ElementMismatchError: per-element sets that miss or add elements, or functions that name neighbour
        elements the model does not cover.
    """

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
        if config.per_element is None:
            # the buffers of the shared sets, as before per-element sets: checkpoints written then still resume
            self.register_buffer("g2_eta", torch.tensor([g.eta for g in config.g2], dtype=torch.float64))
            self.register_buffer("g2_rs", torch.tensor([g.r_s for g in config.g2], dtype=torch.float64))
            self.register_buffer("g4_eta", torch.tensor([g.eta for g in config.g4], dtype=torch.float64))
            self.register_buffer("g4_zeta", torch.tensor([g.zeta for g in config.g4], dtype=torch.float64))
            self.register_buffer("g4_lambda", torch.tensor([float(g.lambda_) for g in config.g4], dtype=torch.float64))
        self._build_tables(self._function_sets(config), pair_block)

    def _function_sets(self, config: BehlerParrinelloConfig) -> list[tuple[list[G2], list[G4], str]]:
        """(g2, g4, where) of every element in :attr:`elements` order."""
        if config.per_element is None:
            return [(config.g2, config.g4, "the descriptor's g2/g4")] * len(self.elements)
        missing = [e for e in self.elements if e not in config.per_element]
        extra = sorted(set(config.per_element) - set(self.elements))
        if missing or extra:
            problems = ([f"no function set for {', '.join(missing)}"] if missing else []) + (
                [f"function sets for {', '.join(extra)}, which the model does not cover"] if extra else []
            )
            raise ElementMismatchError(
                f"the descriptor's per-element sets ({', '.join(sorted(config.per_element))}) do not match the "
                f"elements {', '.join(self.elements)}: {'; '.join(problems)}"
            )
        return [(config.per_element[e].g2, config.per_element[e].g4, f"the function set of {e}") for e in self.elements]

    def _build_tables(self, sets, pair_block: torch.Tensor) -> None:
        """Slot tables of the groups and the slot → column map of every central element (module docstring)."""
        n_el, n_pb, cutoff = len(self.elements), self.n_pair_blocks, self.config.cutoff
        terms = [_terms(self.elements, g2, g4, cutoff, pair_block, where) for g2, g4, where in sets]
        radial, angular = [t[0] for t in terms], [t[1] for t in terms]
        radial_slots, self.n_g2 = _slots(radial, n_el)
        angular_slots, self.n_g4 = _slots(angular, n_pb)
        self._features_per_element = [len(r) + len(a) for r, a in terms]
        self._n_features = max(self._features_per_element)
        # parameter tables (central element, group, slot); unused slots get harmless values and are never read out
        g2 = torch.zeros((n_el, n_el, self.n_g2, 3), dtype=torch.float64)
        g2[..., 2] = cutoff
        g4 = torch.zeros((n_el, n_pb, self.n_g4, 4), dtype=torch.float64)
        g4[..., 1:3], g4[..., 3] = 1.0, cutoff
        source = torch.zeros((n_el, self._n_features), dtype=torch.int64)
        present = torch.zeros((n_el, self._n_features), dtype=torch.bool)
        for c in range(n_el):
            column = 0
            for term, slot in zip(radial[c], radial_slots[c], strict=True):
                g2[c, term.group, slot] = torch.tensor([*term.parameters, term.cutoff], dtype=torch.float64)
                source[c, column], present[c, column] = term.group * self.n_g2 + slot, True
                column += 1
            for term, slot in zip(angular[c], angular_slots[c], strict=True):
                g4[c, term.group, slot] = torch.tensor([*term.parameters, term.cutoff], dtype=torch.float64)
                source[c, column] = n_el * self.n_g2 + term.group * self.n_g4 + slot
                present[c, column] = True
                column += 1
        self.identity_layout = bool(present.all()) and bool((source == torch.arange(self._n_features)).all())
        self.uniform_cutoff = bool((g2[..., 2] == cutoff).all()) and bool((g4[..., 3] == cutoff).all())
        # identical for every central element and group (shared sets): broadcast one row instead of gathering
        self.shared_g2 = bool((g2 == g2[:1, :1]).all())
        self.shared_g4 = bool((g4 == g4[:1, :1]).all())
        self.register_buffer("g2_table", g2, persistent=False)
        self.register_buffer("g4_table", g4, persistent=False)
        self.register_buffer("column_source", source, persistent=False)
        self.register_buffer("column_present", present, persistent=False)

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def features_per_element(self) -> list[int]:
        return list(self._features_per_element)

    @property
    def cutoff(self) -> float:
        return self.config.cutoff

    def forward(self, species: torch.Tensor, pairs: NeighborPairs) -> torch.Tensor:
        """Features (N, D); differentiable with respect to ``pairs.vectors`` (see module docstring for layout)."""
        return self.features_and_jacobian(species, pairs, jacobian=False)[0]

    @staticmethod
    def _table_rows(table: torch.Tensor, shared: bool, group: torch.Tensor, dtype) -> list[torch.Tensor]:
        """Columns of a (n_el, n_groups, K, n) table: (K,) rows if shared, else (X, K) rows of each entry's group."""
        table = table.to(dtype)
        rows = table[0, 0] if shared else table.flatten(0, 1)[group]
        return list(rows.unbind(-1))

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
        central = species[first]  # (P',) element index of i
        r = torch.linalg.vector_norm(vectors, dim=1)  # (P',)
        u = vectors / r[:, None]  # (P', 3)
        fc, dfc = cosine_cutoff(r, cutoff)  # (P',)
        n_pairs = r.shape[0]
        features, jacs = [], []

        if self.n_g2:
            # G2: (P', K2) terms scattered into (N * n_el, K2), row i * n_el + Z_j
            eta2, rs2, rc2 = self._table_rows(self.g2_table, self.shared_g2, central * n_el + neighbour, dtype)
            gauss = torch.exp(-eta2 * (r[:, None] - rs2) ** 2)  # (P', K2)
            fc2, dfc2 = (fc[:, None], dfc[:, None]) if self.uniform_cutoff else cosine_cutoff(r[:, None], rc2)
            g2 = vectors.new_zeros((n_atoms * n_el, self.n_g2)).index_add(0, first * n_el + neighbour, gauss * fc2)
            features.append(g2.reshape(n_atoms, n_el * self.n_g2))
            if jacobian:
                d_g2 = gauss * (dfc2 - 2.0 * eta2 * (r[:, None] - rs2) * fc2)  # (P', K2)
                jac_g2 = vectors.new_zeros((n_pairs, n_el, self.n_g2, 3))  # (P', n_el, K2, 3)
                jac_g2[torch.arange(n_pairs, device=r.device), neighbour] = d_g2[:, :, None] * u[:, None, :]
                jacs.append(jac_g2.reshape(n_pairs, n_el * self.n_g2, 3))

        if self.n_g4:
            # G4 over triplets t = (p, q): a = r_ij = vectors[p], b = r_ik = vectors[q], c = r_jk = b - a
            p, q = triplet_indices(first, n_atoms)  # (T,), (T,)
            block = self.pair_block[neighbour[p], neighbour[q]]  # (T,)
            eta4, zeta, lam, rc4 = self._table_rows(self.g4_table, self.shared_g4, central[p] * n_pb + block, dtype)
            a_vec, b_vec = vectors[p], vectors[q]  # (T, 3)
            a, b = r[p], r[q]  # (T,)
            c_vec = b_vec - a_vec  # (T, 3) exact image vector, no minimum-image convention needed
            c = torch.linalg.vector_norm(c_vec, dim=1)  # (T,)
            cos = (a_vec * b_vec).sum(dim=1) / (a * b)  # (T,)
            # cut-off factors (T, 1) for one R_c, else (T, K4) per function
            if self.uniform_cutoff:
                fc_c, dfc_c = cosine_cutoff(c, cutoff)
                fa, fb, fcc, dfa, dfcc = fc[p, None], fc[q, None], fc_c[:, None], dfc[p, None], dfc_c[:, None]
            else:
                (fa, dfa), (fb, _), (fcc, dfcc) = (cosine_cutoff(x[:, None], rc4) for x in (a, b, c))
            # 1 + λ cos ≥ 0 analytically; clamp away rounding below 0 and keep (·)^ζ differentiable at 0
            base = (1.0 + lam * cos[:, None]).clamp_min(torch.finfo(dtype).tiny)  # (T, K4)
            angular = torch.pow(2.0, 1.0 - zeta) * base**zeta  # (T, K4)
            gauss4 = torch.exp(-eta4 * (a**2 + b**2 + c**2)[:, None])  # (T, K4)
            cut = fa * fb * fcc  # (T, 1) or (T, K4)
            row = first[p] * n_pb + block  # (T,) row in (N * n_pb)
            g4 = vectors.new_zeros((n_atoms * n_pb, self.n_g4)).index_add(0, row, angular * gauss4 * cut)
            features.append(g4.reshape(n_atoms, n_pb * self.n_g4))
            if jacobian:
                # the summand is symmetric in (j, k), so ∂G/∂r_p = 2 Σ_q ∂_a term(p, q)
                d_cos = b_vec / (a * b)[:, None] - (cos / a**2)[:, None] * a_vec  # (T, 3)
                d_angular = torch.pow(2.0, 1.0 - zeta) * zeta * lam * base ** (zeta - 1.0)  # (T, K4) per d cos
                d_cut = (dfa * fb * fcc / a[:, None])[..., None] * a_vec[:, None, :] - (fa * fb * dfcc / c[:, None])[
                    ..., None
                ] * c_vec[:, None, :]  # (T, 1 or K4, 3)
                term = gauss4 * (angular * cut)  # (T, K4)
                d_term = (
                    (gauss4 * d_angular * cut)[:, :, None] * d_cos[:, None, :]
                    - (2.0 * eta4)[..., None] * term[:, :, None] * (a_vec - c_vec)[:, None, :]
                    + (angular * gauss4)[:, :, None] * d_cut
                )  # (T, K4, 3)
                jac_row = p * n_pb + block  # (T,) row in (P' * n_pb)
                jac_g4 = vectors.new_zeros((n_pairs * n_pb, self.n_g4, 3)).index_add(0, jac_row, 2.0 * d_term)
                jacs.append(jac_g4.reshape(n_pairs, n_pb * self.n_g4, 3))

        features = torch.cat(features, dim=1)
        if not self.identity_layout:  # slots → each central element's columns, zeros past its last function
            present = self.column_present[species]
            features = features.gather(1, self.column_source[species]) * present
        if not jacobian:
            return features, None
        jac = torch.cat(jacs, dim=1)
        if not self.identity_layout:
            source = self.column_source[central]  # (P', D)
            jac = jac.gather(1, source[:, :, None].expand(-1, -1, 3)) * self.column_present[central][:, :, None]
        full = pairs.vectors.new_zeros((pairs.vectors.shape[0], self.n_features, 3))
        full[keep] = jac
        return features, full
