"""The descriptor contract: per-atom features G (N, D) and their per-pair Jacobian J (P, D, 3).

Descriptors are functions of the pair vectors r_ij of each central atom i only, so G_i depends on r_ij for the
pairs (i, j) and nothing else. The Jacobian J[p] = ∂G_{i_p}/∂r_p is then all that forces, stress and committee
deviations need: dE/dr_p = Σ_d (∂E/∂G_{i_p,d}) J[p, d]. Training precomputes (G, J) once per structure.

A new descriptor subclasses :class:`Descriptor` and implements :meth:`Descriptor.forward`; the base class gives
it a Jacobian by autograd. Fast descriptors override :meth:`Descriptor.features_and_jacobian` analytically.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..geometry import NeighborPairs
from ..pair_gradients import JacobianGradients


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """f_c(r) = ½[cos(π r/R_c) + 1] inside the cutoff, 0 outside, and its derivative. Shapes follow ``r``."""
    inside = r < cutoff
    arg = (math.pi / cutoff) * r
    value = torch.where(inside, 0.5 * (torch.cos(arg) + 1.0), torch.zeros_like(r))
    slope = torch.where(inside, (-0.5 * math.pi / cutoff) * torch.sin(arg), torch.zeros_like(r))
    return value, slope


def typespin_weights(elements: list[str]) -> dict[str, float]:
    """aenet's default type weights: 0, ±1, ±2, … over the sorted elements (0 skipped for an even count)."""
    n = len(elements)
    values = list(range(-(n // 2), n // 2 + 1))
    if n % 2 == 0:
        values.remove(0)
    return {element: float(v) for element, v in zip(sorted(elements), values, strict=True)}


class Descriptor(torch.nn.Module):
    """Base class: maps an atom's neighbourhood to a fixed-length, invariant feature vector.

    :param elements: the elements the model covers, sorted; ``species`` tensors index into this list.
    """

    def __init__(self, elements: list[str]):
        super().__init__()
        self.elements = sorted(elements)

    @property
    def n_features(self) -> int:
        raise NotImplementedError

    @property
    def features_per_element(self) -> list[int]:
        """How many features the atoms of each element (in :attr:`elements` order) have: their first that many
        columns, zeros after them. All :attr:`n_features` unless the descriptor has per-element function sets."""
        return [self.n_features] * len(self.elements)

    @property
    def cutoff(self) -> float:
        """Largest distance (Å) at which a neighbour contributes; the neighbour search uses it."""
        raise NotImplementedError

    def forward(self, species: torch.Tensor, pairs: NeighborPairs) -> torch.Tensor:
        """Features (N, D), differentiable with respect to ``pairs.vectors``.

        :param species: (N,) element index of each atom (into :attr:`elements`).
        """
        raise NotImplementedError

    def features_and_gradients(self, species: torch.Tensor, pairs: NeighborPairs) -> tuple[torch.Tensor, Callable]:
        """Features (N, D) and the force contraction ∂E/∂G (K, N, D) ↦ ∂E/∂r_p (K, P, 3), for inference (no
        autograd graph). Here through the full Jacobian; a descriptor may contract its factors instead."""
        features, jacobian = self.features_and_jacobian(species, pairs)
        return features, JacobianGradients(jacobian, pairs.first)

    def features_and_jacobian(
        self, species: torch.Tensor, pairs: NeighborPairs, jacobian: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Features (N, D) and Jacobian (P, D, 3), here by D batched backward passes through :meth:`forward`.

        Summing G over atoms before differentiating is exact because r_p influences only G_{i_p}.

        :param jacobian: False for the features alone (Jacobian None).
        """
        if not jacobian:
            return self.forward(species, pairs), None
        vectors = pairs.vectors.detach().requires_grad_(True)
        local = NeighborPairs(pairs.first, pairs.second, vectors, pairs.n_atoms)
        with torch.enable_grad():
            features = self.forward(species, local)
            n_features = features.shape[1]
            if vectors.shape[0] == 0:
                return features.detach(), vectors.new_zeros((0, n_features, 3))
            basis = (
                torch.eye(n_features, dtype=features.dtype, device=features.device)
                .unsqueeze(1)
                .expand(-1, features.shape[0], -1)
            )
            (jacobian,) = torch.autograd.grad(features, vectors, grad_outputs=basis, is_grads_batched=True)
        return features.detach(), jacobian.permute(1, 0, 2).contiguous()
