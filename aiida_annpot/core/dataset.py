"""Precomputed features of labelled frames for training (torch); reading, validating and hashing frames are in
:mod:`.frames` (torch-free) and re-exported here.

Training uses :class:`FeatureSet`: descriptors and their pair Jacobians computed once per structure,
since they have no trainable parameters; each optimisation step then only runs the element networks.

Features are computed on the model's device and kept on the CPU, in host memory that the memory budget measures (a
GPU's memory is smaller, and holds the batch being trained on); each batch moves to the model's device as it is
made.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from .frames import _label, dataset_hash, elements_of, read_frames, validate_labelled
from .geometry import NeighborPairs, NeighborSearch

__all__ = [
    "Batch",
    "FeatureSet",
    "StructureFeatures",
    "compute_features",
    "dataset_hash",
    "elements_of",
    "read_frames",
    "validate_labelled",
]


@dataclass
class StructureFeatures:
    """One structure, ready for the element networks: features, Jacobian and labels (labels may be None)."""

    species: torch.Tensor  # (N,)
    features: torch.Tensor  # (N, D)
    jacobian: torch.Tensor  # (P, D, 3)
    pairs: NeighborPairs
    volume: float
    energy: float | None
    forces: torch.Tensor | None  # (N, 3)
    stress: torch.Tensor | None  # (3, 3)


@dataclass
class Batch:
    """Structures concatenated along the atom axis, with pair indices offset accordingly."""

    species: torch.Tensor
    features: torch.Tensor
    jacobian: torch.Tensor
    pairs: NeighborPairs
    structure_index: torch.Tensor  # (N,)
    n_atoms: torch.Tensor  # (S,)
    volumes: torch.Tensor  # (S,)
    energy: torch.Tensor  # (S,)
    forces: torch.Tensor  # (N, 3)
    stress: torch.Tensor | None  # (S, 3, 3), when every structure has one

    @property
    def n_structures(self) -> int:
        return int(self.n_atoms.shape[0])

    def to(self, device: torch.device) -> Batch:
        """This batch with every tensor on ``device`` (tensors already there are not copied)."""
        moved = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        pairs = self.pairs
        moved["pairs"] = NeighborPairs(
            pairs.first.to(device), pairs.second.to(device), pairs.vectors.to(device), pairs.n_atoms
        )
        return Batch(**moved)


def compute_features(
    frames: list[Atoms], potential, dtype: torch.dtype = torch.float32, chunk_pairs: int = 200_000
) -> Iterator[StructureFeatures]:
    """Each frame's :class:`StructureFeatures`, in order, with ``potential``'s descriptor, on the CPU.

    Frames are grouped into one descriptor call per ``chunk_pairs`` neighbour pairs (per-call overhead dominates for
    small cells), computed on the model's device; a group's features are released once its structures have been
    consumed.
    """
    search = NeighborSearch(potential.descriptor.cutoff)
    chunk: list[tuple[Atoms, torch.Tensor, NeighborPairs]] = []
    n_pairs = 0
    for index, frame in enumerate(frames):
        species = potential.species(frame.numbers)
        pairs = search(
            frame.positions,
            frame.cell.array,
            frame.pbc,
            dtype=torch.float64,
            device=potential.device,
            label=f"frame {index}",
        )
        chunk.append((frame, species, pairs))
        n_pairs += pairs.first.shape[0]
        if n_pairs >= chunk_pairs or index == len(frames) - 1:
            yield from _chunk_features(chunk, potential, dtype)
            chunk, n_pairs = [], 0


def _chunk_features(chunk, potential, dtype: torch.dtype) -> Iterator[StructureFeatures]:
    """One descriptor call for the structures of ``chunk``, split back into structures."""
    species = torch.cat([s for _, s, _ in chunk])
    atom_counts = [s.shape[0] for _, s, _ in chunk]
    pair_counts = [p.first.shape[0] for _, _, p in chunk]
    offsets = [0, *itertools.accumulate(atom_counts)][:-1]
    joined = NeighborPairs(
        torch.cat([p.first + off for (_, _, p), off in zip(chunk, offsets, strict=True)]),
        torch.cat([p.second + off for (_, _, p), off in zip(chunk, offsets, strict=True)]),
        torch.cat([p.vectors for _, _, p in chunk]),
        int(sum(atom_counts)),
    )
    with torch.no_grad():
        features, jacobian = potential.descriptor.features_and_jacobian(species, joined)
    cpu = torch.device("cpu")  # stored in host memory; batches move to the model's device (module docstring)
    features = features.detach().to(cpu, dtype).split(atom_counts)
    jacobian = jacobian.detach().to(cpu, dtype).split(pair_counts)
    for (frame, species_i, pairs), g, j in zip(chunk, features, jacobian, strict=True):
        stress, forces = _label(frame, "stress"), _label(frame, "forces")
        yield StructureFeatures(
            species=species_i.to(cpu),
            features=g,
            jacobian=j,
            pairs=NeighborPairs(pairs.first.to(cpu), pairs.second.to(cpu), pairs.vectors.to(cpu, dtype), pairs.n_atoms),
            volume=float(frame.get_volume()) if frame.pbc.all() else float("nan"),
            energy=_label(frame, "energy"),
            forces=None if forces is None else torch.as_tensor(forces, dtype=dtype, device=cpu),
            stress=None if stress is None else torch.as_tensor(_stress_matrix(stress), dtype=dtype, device=cpu),
        )


class FeatureSet:
    """Descriptor features and Jacobians of a list of frames, computed once with the model's descriptor and kept in
    memory (:class:`~.disk_features.DiskFeatureSet` keeps them on disk instead).

    :param potential: provides the descriptor and the element lookup (features do not depend on weights), and the
        device batches go to.
    """

    def __init__(self, frames: list[Atoms], potential, dtype: torch.dtype = torch.float32, chunk_pairs: int = 200_000):
        self.dtype, self.device = dtype, potential.device
        self.items: list[StructureFeatures] = list(compute_features(frames, potential, dtype, chunk_pairs))

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, indices) -> Batch:
        """Concatenate the structures at ``indices`` into one :class:`Batch`, on the model's device."""
        items = [self.items[int(i)] for i in indices]
        sizes = torch.tensor([it.species.shape[0] for it in items], device="cpu")
        offsets = torch.cumsum(sizes, 0) - sizes
        first = torch.cat([it.pairs.first + off for it, off in zip(items, offsets, strict=True)])
        second = torch.cat([it.pairs.second + off for it, off in zip(items, offsets, strict=True)])
        has_stress = all(it.stress is not None and np.isfinite(it.volume) for it in items)
        return Batch(
            species=torch.cat([it.species for it in items]),
            features=torch.cat([it.features for it in items]),
            jacobian=torch.cat([it.jacobian for it in items]),
            pairs=NeighborPairs(first, second, torch.cat([it.pairs.vectors for it in items]), int(sizes.sum())),
            structure_index=torch.repeat_interleave(torch.arange(len(items), device="cpu"), sizes),
            n_atoms=sizes,
            volumes=torch.tensor([it.volume for it in items], dtype=self.dtype, device="cpu"),
            energy=torch.tensor([it.energy for it in items], dtype=self.dtype, device="cpu"),
            forces=torch.cat(
                [
                    it.forces
                    if it.forces is not None
                    else torch.full((n, 3), float("nan"), dtype=self.dtype, device="cpu")
                    for it, n in zip(items, sizes.tolist(), strict=True)
                ]
            ),
            stress=torch.stack([it.stress for it in items]) if has_stress else None,
        ).to(self.device)

    def batches(self, groups: Iterable) -> Iterator[Batch]:
        """:meth:`batch` of each group of indices in turn."""
        return (self.batch(group) for group in groups)

    def feature_chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Species (N,) and features (N, D) of every atom, here in one chunk (statistics accumulate over chunks)."""
        if self.items:
            yield torch.cat([item.species for item in self.items]), torch.cat([item.features for item in self.items])

    def close(self) -> None:
        """Nothing to release: the features live as long as this object."""


def _stress_matrix(stress) -> np.ndarray:
    """(3, 3) stress from ASE's Voigt 6-vector (or an already full matrix)."""
    stress = np.asarray(stress, dtype=np.float64)
    return stress if stress.shape == (3, 3) else voigt_6_to_full_3x3_stress(stress)
