"""The force contraction ∂E_k/∂r_p = Σ_d ∂E_k/∂G_{i_p d} J_{p d}: from a stored Jacobian, or from a descriptor's
factors of it.

Training stores J (P, D, 3) once per structure and contracts it every epoch, under autograd
(:func:`pair_gradients`). Inference needs the contraction once per evaluation and no graph, so a descriptor may hand
out an operator instead (:class:`JacobianGradients` wraps a stored J; the Chebyshev descriptor has one of its own
that never forms J). Either way the result is (K, P, 3) for K committee members.

A pair-by-pair product, (K, D) @ (D, 3) per pair, is too small for the matrix library. :func:`contract_by_atom`
makes one product per atom instead, its pairs' rows padded to the largest count: six times faster for a committee
of 4 on 2048 Cu atoms.
"""

from __future__ import annotations

import torch

__all__ = ["PADDING_LIMIT", "JacobianGradients", "contract_by_atom", "pair_gradients"]

#: Padding the pairs of every atom to the largest count may at most double the rows of a product.
PADDING_LIMIT = 2.0


def pair_gradients(dE_dG: torch.Tensor, jacobian: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """∂E_k/∂r_p from a stored Jacobian: (K, N, D), (P, D, 3), (P,) → (K, P, 3), differentiable in both.

    Pair-major: rows of the (N, K, D) gradient are gathered per pair (fast on dim 0) and contracted in one batched
    product (P, K, D) @ (P, D, 3); the result is a (K, P, 3) view of that (P, K, 3) tensor.
    """
    per_pair = dE_dG.transpose(0, 1).contiguous().index_select(0, first)  # (P, K, D)
    return torch.bmm(per_pair, jacobian).transpose(0, 1)


class JacobianGradients:
    """The contraction operator of a stored Jacobian: ``operator(dE_dG)`` is :func:`pair_gradients`."""

    def __init__(self, jacobian: torch.Tensor, first: torch.Tensor):
        self.jacobian, self.first = jacobian, first

    def __call__(self, dE_dG: torch.Tensor) -> torch.Tensor:
        return pair_gradients(dE_dG, self.jacobian, self.first)


def contract_by_atom(rows: torch.Tensor, first: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_f rows[p, x, f] · weights[first[p], f, k]: (P, X, F), (P,), (N, F, K) → (P, X, K).

    One product per atom, (X·n_i, F) @ (F, K), with n_i padded to the largest count, when the pairs are grouped by
    central atom in order (as neighbour searches return them) and padding stays within :data:`PADDING_LIMIT`;
    otherwise one product per pair. No autograd graph is kept through the padding (inference only).
    """
    n_pairs, n_rows, n_features = rows.shape
    n_atoms, n_members = weights.shape[0], weights.shape[2]
    layout = _padding(first, n_atoms) if n_pairs else None
    if layout is None:
        return torch.bmm(rows, weights.index_select(0, first))
    width, slot, source = layout
    padded = rows.reshape(n_pairs, n_rows * n_features).index_select(0, source)  # padding repeats pair 0: unread
    products = torch.bmm(padded.view(n_atoms, width * n_rows, n_features), weights)  # (N, width·X, K)
    return products.view(n_atoms * width, n_rows, n_members).index_select(0, slot)


def _padding(first: torch.Tensor, n_atoms: int) -> tuple[int, torch.Tensor, torch.Tensor] | None:
    """(width, each pair's padded row (P,), each padded row's pair (N·width,)); None for unordered pairs or too
    much padding."""
    if bool((first[1:] < first[:-1]).any()):
        return None
    counts = torch.bincount(first, minlength=n_atoms)
    width = int(counts.max())
    if n_atoms * width > PADDING_LIMIT * first.shape[0]:
        return None
    pair_index = torch.arange(first.shape[0], device=first.device)
    slot = first * width + (pair_index - (torch.cumsum(counts, 0) - counts)[first])
    source = torch.zeros(n_atoms * width, dtype=torch.long, device=first.device).index_copy_(0, slot, pair_index)
    return width, slot, source
