"""The energy model: E = Σ_i [ε_{Z_i} + s·NN_{Z_i}((G_i - μ_{Z_i}) / σ_{Z_i})], for K committee members at once.

One :class:`Potential` holds K ≥ 1 members that share a descriptor (so features and their Jacobian are computed
once) and differ in weights, standardisation and reference energies. A single model is a committee of one. Each
member's per-element network weights are stacked along a leading K axis so all members run as one batched matmul.

Forces and stress come from the descriptor Jacobian J = ∂G_i/∂r_ij: with g = ∂E/∂G from autograd through the small
networks, ∂E/∂r_p = g_{i_p}·J_p; forces scatter it to both atoms of each pair, and the virial Σ_p r_p ⊗ ∂E/∂r_p
over the volume is the strain derivative of the energy (ASE's stress sign convention).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from ase.data import atomic_numbers, chemical_symbols

from ..common.config import BaselineConfig, BehlerParrinelloConfig, ChebyshevConfig, NetworkConfig
from .descriptors import make_descriptor
from .errors import UnknownElementError
from .geometry import NeighborPairs
from .pair_gradients import JacobianGradients, pair_gradients
from .pair_scatter import scatter_pair_gradients

#: Smallest range width (feature units) a grade is measured in: a feature constant over the training set still
#: flags a departure, with a large but finite grade.
RANGE_WIDTH_FLOOR = 1e-6
#: A feature this many units in the last place (of the coarser of its and the range's dtype) beyond its bound still
#: counts as inside: inference and training compute features by different loops, and often in different
#: precisions, so a training structure's features at inference may differ from those the range was taken from in
#: the last bits.
ROUNDING_ULPS = 64
ACTIVATIONS = {
    "tanh": torch.tanh,
    "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
    "gelu": torch.nn.functional.gelu,
}


@dataclass
class Prediction:
    """Per-member results. K members, S structures, N atoms.

    :param energy: (K, S) eV.
    :param forces: (K, N, 3) eV/Å, or None.
    :param stress: (K, S, 3, 3) eV/Å³, or None.
    :param atomic_energies: (K, N) eV.
    :param features: (N, D) descriptor features, when computed from geometry.
    """

    energy: torch.Tensor
    forces: torch.Tensor | None
    stress: torch.Tensor | None
    atomic_energies: torch.Tensor
    features: torch.Tensor | None = None


class ElementNetworks(torch.nn.Module):
    """For every element, K feed-forward networks D_e → hidden… → 1 stored as stacked (K, in, out) weights.

    :param n_features: D_e of every element, or one D for all: an element reads the first D_e feature columns (its
        descriptor functions; the rest are zero padding for elements with fewer functions).
    """

    def __init__(self, n_members: int, n_elements: int, n_features: int | list[int], config: NetworkConfig):
        super().__init__()
        self.activation = ACTIVATIONS[config.activation]
        inputs = [n_features] * n_elements if isinstance(n_features, int) else list(n_features)
        self.n_inputs = inputs
        self.n_layers = len(config.hidden) + 1
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for n_in in inputs:
            for fan_in, fan_out in itertools.pairwise([n_in, *config.hidden, 1]):
                self.weights.append(torch.nn.Parameter(torch.empty(n_members, fan_in, fan_out)))
                self.biases.append(torch.nn.Parameter(torch.zeros(n_members, 1, fan_out)))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Xavier-normal hidden layers; a small output layer so training starts near the reference energies."""
        for index, weight in enumerate(self.weights):
            fan_in, fan_out = weight.shape[1:]
            std = (2.0 / (fan_in + fan_out)) ** 0.5
            if index % self.n_layers == self.n_layers - 1:
                std *= 0.1
            with torch.no_grad():
                # drawn where the generator is (the CPU): the same initial weights on every device
                draw = torch.randn(weight.shape, generator=generator, dtype=weight.dtype, device=generator.device)
                weight.copy_(draw * std)
                self.biases[index].zero_()

    def forward(self, x: torch.Tensor, element: int) -> torch.Tensor:
        """(K, n, D) standardised features of atoms of one element → (K, n) network outputs."""
        start = element * self.n_layers
        x = x[..., : self.n_inputs[element]]  # its own functions; a no-op unless elements have different sets
        for layer in range(self.n_layers):
            x = torch.baddbmm(self.biases[start + layer], x, self.weights[start + layer])
            if layer < self.n_layers - 1:
                x = self.activation(x)
        return x.squeeze(-1)


class Potential(torch.nn.Module):
    """A committee of K ænet-style models sharing one descriptor.

    :param elements: element symbols the model covers.
    :param descriptor_config: descriptor family and parameters.
    :param network_config: hidden layers and activation (the same for every element).
    :param n_members: committee size K.
    """

    def __init__(
        self,
        elements: list[str],
        descriptor_config: ChebyshevConfig | BehlerParrinelloConfig,
        network_config: NetworkConfig,
        n_members: int = 1,
    ):
        super().__init__()
        self.elements = sorted(elements)
        unknown = [e for e in self.elements if e not in atomic_numbers]
        if unknown:
            raise UnknownElementError(f"not chemical elements: {', '.join(unknown)}")
        self.descriptor_config = descriptor_config
        self.network_config = network_config
        self.n_members = n_members
        self.descriptor = make_descriptor(self.elements, descriptor_config)
        n_elements, n_features = len(self.elements), self.descriptor.n_features
        self.networks = ElementNetworks(n_members, n_elements, self.descriptor.features_per_element, network_config)
        self.register_buffer("feature_mean", torch.zeros(n_members, n_elements, n_features))
        self.register_buffer("feature_std", torch.ones(n_members, n_elements, n_features))
        self.register_buffer("reference_energy", torch.zeros(n_members, n_elements))
        self.register_buffer("energy_scale", torch.ones(n_members))
        # per-member training ranges of every feature (extrapolation detection); infinite = no range known
        self.register_buffer("feature_min", torch.full((n_members, n_elements, n_features), -torch.inf))
        self.register_buffer("feature_max", torch.full((n_members, n_elements, n_features), torch.inf))
        lookup = torch.full((len(chemical_symbols),), -1, dtype=torch.long)
        lookup[[atomic_numbers[e] for e in self.elements]] = torch.arange(n_elements)
        self.register_buffer("species_lookup", lookup, persistent=False)
        self.metadata: list[dict] = []  # one entry per member, filled when loaded from model files
        self.baseline_config: BaselineConfig | None = None  # delta learning: the calculator adds this baseline

    @property
    def dtype(self) -> torch.dtype:
        return self.feature_mean.dtype

    @property
    def device(self) -> torch.device:
        """Where the weights are (``Potential.to`` moves them); tensors built for the model are built there."""
        return self.feature_mean.device

    def species(self, numbers) -> torch.Tensor:
        """(N,) element indices for atomic numbers; raises for an element the model does not cover."""
        numbers = torch.as_tensor(numbers, dtype=torch.long, device=self.device)
        species = self.species_lookup[numbers]
        if bool((species < 0).any()):
            missing = sorted({chemical_symbols[int(z)] for z in numbers[species < 0]})
            raise UnknownElementError(
                f"element(s) {', '.join(missing)} not covered by this model (elements: {', '.join(self.elements)})"
            )
        return species

    def atomic_energies(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """(N, D) or per-member (K, N, D) features → (K, N) atomic energies."""
        if features.dim() == 2:
            features = features.unsqueeze(0).expand(self.n_members, -1, -1)
        energies = self.reference_energy[:, species].clone()
        for element in range(len(self.elements)):
            index = (species == element).nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            x = (features[:, index] - self.feature_mean[:, element, None]) / self.feature_std[:, element, None]
            output = self.networks(x, element) * self.energy_scale[:, None]
            energies = energies.index_add(1, index, output)
        return energies

    def predict_from_features(
        self,
        features: torch.Tensor,
        jacobian: torch.Tensor | JacobianGradients | None,
        species: torch.Tensor,
        pairs: NeighborPairs,
        structure_index: torch.Tensor,
        n_structures: int,
        volumes: torch.Tensor | None = None,
        create_graph: bool = False,
    ) -> Prediction:
        """Energies, forces and stress of a batch of structures from precomputed features.

        :param features: (N, D); ``jacobian`` (P, D, 3), or the descriptor's contraction operator
            (:meth:`~.descriptors.base.Descriptor.features_and_gradients`; no graph), or None for energies only.
        :param structure_index: (N,) which structure each atom belongs to.
        :param volumes: (S,) cell volumes; stress is returned when given.
        :param create_graph: keep the graph of the forces (training on forces).
        """
        per_member = features.unsqueeze(0).expand(self.n_members, -1, -1)
        if jacobian is not None:
            per_member = per_member.detach().requires_grad_(True)
        with torch.set_grad_enabled(torch.is_grad_enabled() or jacobian is not None):
            atomic = self.atomic_energies(per_member, species)
            energy = atomic.new_zeros((self.n_members, n_structures)).index_add(1, structure_index, atomic)
            if jacobian is None:
                return Prediction(energy, None, None, atomic)
            (dE_dG,) = torch.autograd.grad(atomic.sum(), per_member, create_graph=create_graph)
        stored = isinstance(jacobian, torch.Tensor)
        dE_dr = pair_gradients(dE_dG, jacobian, pairs.first) if stored else jacobian(dE_dG)  # (K, P, 3)
        per_pair = dE_dr.transpose(0, 1).reshape(-1, 3 * self.n_members)  # (P, 3K): rows scatter fast (dim 0)
        forces = scatter_pair_gradients(per_pair, pairs.first, pairs.second, pairs.n_atoms)
        forces = forces.view(-1, self.n_members, 3).transpose(0, 1).contiguous()  # (K, N, 3)
        stress = None
        if volumes is not None:  # virial Σ_p ∂E/∂r_p ⊗ r_p per structure, (S, 3K, 3)
            if n_structures == 1:
                virial = (per_pair.T @ pairs.vectors).unsqueeze(0)
            else:
                virial = per_pair.new_zeros((n_structures, per_pair.shape[1], 3)).index_add_(
                    0, structure_index[pairs.first], per_pair.unsqueeze(2) * pairs.vectors.unsqueeze(1)
                )
            stress = virial.view(n_structures, self.n_members, 3, 3).transpose(0, 1) / volumes[None, :, None, None]
        return Prediction(energy, forces, stress, atomic)

    def forward(self, numbers, pairs: NeighborPairs, volume: float | None = None, forces: bool = True) -> Prediction:
        """One structure: energies (K, 1), forces (K, N, 3), stress (K, 1, 3, 3) when ``volume`` is given."""
        return self.forward_many([(numbers, pairs, volume)], forces=forces)[0]

    def forward_many(self, structures: Sequence[tuple], forces: bool = True) -> list[Prediction]:
        """Several structures in one descriptor and network call: a :meth:`forward` result for each.

        Small cells leave the descriptor and networks idle between calls; their atoms and pairs concatenated
        (pair indices offset) make one call of the same results, to floating-point order.

        :param structures: (numbers, pairs, volume or None) of each structure.
        """
        species = torch.cat([self.species(numbers) for numbers, _, _ in structures])
        pairs, sizes = _concatenate([pairs for _, pairs, _ in structures], self.dtype, self.device)
        if forces:
            features, jacobian = self.descriptor.features_and_gradients(species, pairs)
        else:
            features, jacobian = self.descriptor(species, pairs), None
        n_structures = len(structures)
        structure_index = torch.repeat_interleave(
            torch.arange(n_structures, device=self.device), torch.tensor(sizes, device=self.device)
        )
        periodic = [volume is not None for _, _, volume in structures]
        volumes = None
        if forces and any(periodic):  # a non-periodic structure's stress is dropped: any volume will do
            volumes = [v if v is not None else 1.0 for _, _, v in structures]
            volumes = torch.tensor(volumes, dtype=self.dtype, device=self.device)
        batch = self.predict_from_features(features, jacobian, species, pairs, structure_index, n_structures, volumes)
        results, end = [], 0
        for index, size in enumerate(sizes):
            atoms = slice(end, end + size)
            end += size
            results.append(
                Prediction(
                    energy=batch.energy[:, index : index + 1],
                    forces=None if batch.forces is None else batch.forces[:, atoms],
                    stress=batch.stress[:, index : index + 1] if volumes is not None and periodic[index] else None,
                    atomic_energies=batch.atomic_energies[:, atoms],
                    features=features[atoms],
                )
            )
        return results

    def fingerprint(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Per-element mean of standardised features, concatenated over elements: (E·D,), zeros for absent ones.

        Standardisation uses the committee-mean statistics, so all members see one fingerprint space.
        """
        mean, std = self.feature_mean.mean(0), self.feature_std.mean(0)
        blocks = []
        for element in range(len(self.elements)):
            rows = features[species == element]
            blocks.append(((rows - mean[element]) / std[element]).mean(0) if rows.shape[0] else mean[element] * 0)
        return torch.cat(blocks).detach()

    def extrapolation_grade(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """(N,) per-atom extrapolation grade of (N, D) features of atoms of (N,) element indices (ænet's check).

        The grade is the largest excess of any feature over the committee's training range of the atom's element
        (the union over members: smallest minimum to largest maximum), in units of that feature's range width:
        ``max_d max(min_d - G_d, G_d - max_d, 0) / max(max_d - min_d, RANGE_WIDTH_FLOOR)``. It is 0 inside the
        range and wherever no range is known (infinite bounds, e.g. a model file written before ranges were stored).
        An excess within rounding of the bound (:data:`ROUNDING_ULPS`) counts as inside.
        """
        lower = self.feature_min.amin(0)[species]  # (N, D)
        upper = self.feature_max.amax(0)[species]
        eps = max(torch.finfo(features.dtype).eps, torch.finfo(lower.dtype).eps)
        features = features.detach().to(lower.dtype)
        excess = torch.maximum(lower - features, features - upper).clamp(min=0.0)
        rounding = ROUNDING_ULPS * eps * torch.maximum(lower.abs(), upper.abs())
        excess = torch.where(excess > rounding, excess, 0.0)
        width = (upper - lower).clamp(min=RANGE_WIDTH_FLOOR)
        grade = excess / width  # an infinite width (no range known) gives 0
        return grade.amax(1) if grade.shape[1] else grade.new_zeros(grade.shape[0])


def _concatenate(
    pairs: Sequence[NeighborPairs], dtype: torch.dtype, device: torch.device | None = None
) -> tuple[NeighborPairs, list[int]]:
    """The pairs of several structures as one structure of all their atoms, on ``device`` (a no-op for pairs
    already there, as :class:`~.geometry.NeighborSearch` makes them for the model; None: the first structure's);
    and each structure's atom count."""
    device = pairs[0].first.device if device is None else device
    sizes = [p.n_atoms for p in pairs]
    if len(pairs) == 1:
        (only,) = pairs
        first, second = only.first.to(device), only.second.to(device)
        return NeighborPairs(first, second, only.vectors.to(device=device, dtype=dtype), only.n_atoms), sizes
    offsets = [0, *itertools.accumulate(sizes)][:-1]
    first = torch.cat([p.first.to(device) + offset for p, offset in zip(pairs, offsets, strict=True)])
    second = torch.cat([p.second.to(device) + offset for p, offset in zip(pairs, offsets, strict=True)])
    vectors = torch.cat([p.vectors.to(device=device, dtype=dtype) for p in pairs])
    return NeighborPairs(first, second, vectors, sum(sizes)), sizes
