"""Labelled frames: reading and validating extxyz data, content hashes, and precomputed features for training.

Frames are ASE ``Atoms`` whose calculator holds energy (eV), forces (eV/Å) and optionally stress (eV/Å³, ASE
convention). Training uses :class:`FeatureSet`: descriptors and their pair Jacobians computed once per structure,
since they have no trainable parameters; each optimisation step then only runs the element networks.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from .errors import InputDataError
from .geometry import MIN_ALLOWED_DISTANCE, NeighborPairs, NeighborSearch


def read_frames(path: str | Path) -> list[Atoms]:
    """All frames of an extxyz (or any ASE-readable) file; an unreadable or empty file is an input error."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"structure file {path} does not exist")
    try:
        frames = ase.io.read(path, index=":")
    except Exception as exc:  # ASE raises many types for malformed files
        raise InputDataError(f"cannot read structures from {path}: {exc}") from exc
    if not frames:
        raise InputDataError(f"{path} holds no structures")
    return frames


def _label(frame: Atoms, name: str):
    try:
        return frame.calc.get_property(name, allow_calculation=False) if frame.calc is not None else None
    except Exception:  # PropertyNotImplementedError and friends: the label is simply absent
        return None


def validate_labelled(frames: list[Atoms], source: str = "dataset", require_forces: bool = True) -> None:
    """Reject unusable training data with a message that names the frame and the problem.

    Checks: at least one frame; energy present and finite; forces present (if required), of shape (N, 3) and
    finite; stress finite when present; positions finite; no zero-volume periodic cell; no atoms closer than
    :data:`~aiida_annpot.core.geometry.MIN_ALLOWED_DISTANCE`.
    """
    if not frames:
        raise InputDataError(f"{source} is empty: no labelled frames to train on")
    search = NeighborSearch(MIN_ALLOWED_DISTANCE)
    for index, frame in enumerate(frames):
        where = f"{source} frame {index}"
        energy = _label(frame, "energy")
        if energy is None:
            raise InputDataError(f"{where} has no energy label")
        if not np.isfinite(energy):
            raise InputDataError(f"{where} has a non-finite energy ({energy})")
        forces = _label(frame, "forces")
        if forces is None and require_forces:
            raise InputDataError(f"{where} has no force labels")
        if forces is not None:
            if np.shape(forces) != (len(frame), 3):
                raise InputDataError(f"{where} has forces of shape {np.shape(forces)}, expected ({len(frame)}, 3)")
            if not np.all(np.isfinite(forces)):
                raise InputDataError(f"{where} has non-finite forces")
        stress = _label(frame, "stress")
        if stress is not None and not np.all(np.isfinite(stress)):
            raise InputDataError(f"{where} has a non-finite stress")
        search(frame.positions, frame.cell.array, frame.pbc, label=where)


def dataset_hash(frames: list[Atoms]) -> str:
    """SHA-256 over structures and labels (float64 bytes): identical data, identical hash."""
    digest = hashlib.sha256()
    for frame in frames:
        for array in (frame.numbers, frame.positions, frame.cell.array, frame.pbc):
            digest.update(np.ascontiguousarray(array).tobytes())
        for name in ("energy", "forces", "stress"):
            value = _label(frame, name)
            if value is not None:
                digest.update(name.encode() + np.ascontiguousarray(value, dtype=np.float64).tobytes())
    return digest.hexdigest()


def elements_of(frames: list[Atoms]) -> list[str]:
    """Sorted element symbols present in the frames."""
    return sorted({symbol for frame in frames for symbol in frame.get_chemical_symbols()})


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


class FeatureSet:
    """Descriptor features and Jacobians of a list of frames, computed once with the model's descriptor.

    :param potential: provides the descriptor and the element lookup (features do not depend on weights).
    """

    def __init__(self, frames: list[Atoms], potential, dtype: torch.dtype = torch.float32, chunk_pairs: int = 200_000):
        self.dtype = dtype
        search = NeighborSearch(potential.descriptor.cutoff)
        self.items: list[StructureFeatures] = []
        chunk: list[tuple[Atoms, torch.Tensor, NeighborPairs]] = []
        for index, frame in enumerate(frames):
            species = potential.species(frame.numbers)
            pairs = search(frame.positions, frame.cell.array, frame.pbc, dtype=torch.float64, label=f"frame {index}")
            chunk.append((frame, species, pairs))
            if sum(p.first.shape[0] for _, _, p in chunk) >= chunk_pairs or index == len(frames) - 1:
                self._add_chunk(chunk, potential)
                chunk = []

    def _add_chunk(self, chunk, potential) -> None:
        """One descriptor call for many structures (per-call overhead dominates for small cells)."""
        species = torch.cat([s for _, s, _ in chunk])
        atom_counts = [s.shape[0] for _, s, _ in chunk]
        pair_counts = [p.first.shape[0] for _, _, p in chunk]
        offsets = torch.cumsum(torch.tensor([0, *atom_counts[:-1]]), 0)
        joined = NeighborPairs(
            torch.cat([p.first + off for (_, _, p), off in zip(chunk, offsets, strict=True)]),
            torch.cat([p.second + off for (_, _, p), off in zip(chunk, offsets, strict=True)]),
            torch.cat([p.vectors for _, _, p in chunk]),
            int(sum(atom_counts)),
        )
        with torch.no_grad():
            features, jacobian = potential.descriptor.features_and_jacobian(species, joined)
        features = features.detach().to(self.dtype).split(atom_counts)
        jacobian = jacobian.detach().to(self.dtype).split(pair_counts)
        for (frame, species_i, pairs), g, j in zip(chunk, features, jacobian, strict=True):
            stress, forces = _label(frame, "stress"), _label(frame, "forces")
            self.items.append(StructureFeatures(
                species=species_i,
                features=g,
                jacobian=j,
                pairs=NeighborPairs(pairs.first, pairs.second, pairs.vectors.to(self.dtype), pairs.n_atoms),
                volume=float(frame.get_volume()) if frame.pbc.all() else float("nan"),
                energy=_label(frame, "energy"),
                forces=None if forces is None else torch.as_tensor(forces, dtype=self.dtype),
                stress=None if stress is None else torch.as_tensor(_stress_matrix(stress), dtype=self.dtype),
            ))  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, indices) -> Batch:
        """Concatenate the structures at ``indices`` into one :class:`Batch`."""
        items = [self.items[int(i)] for i in indices]
        sizes = torch.tensor([it.species.shape[0] for it in items])
        offsets = torch.cumsum(sizes, 0) - sizes
        first = torch.cat([it.pairs.first + off for it, off in zip(items, offsets, strict=True)])
        second = torch.cat([it.pairs.second + off for it, off in zip(items, offsets, strict=True)])
        has_stress = all(it.stress is not None and np.isfinite(it.volume) for it in items)
        return Batch(
            species=torch.cat([it.species for it in items]),
            features=torch.cat([it.features for it in items]),
            jacobian=torch.cat([it.jacobian for it in items]),
            pairs=NeighborPairs(first, second, torch.cat([it.pairs.vectors for it in items]), int(sizes.sum())),
            structure_index=torch.repeat_interleave(torch.arange(len(items)), sizes),
            n_atoms=sizes,
            volumes=torch.tensor([it.volume for it in items], dtype=self.dtype),
            energy=torch.tensor([it.energy for it in items], dtype=self.dtype),
            forces=torch.cat([it.forces if it.forces is not None else torch.full((n, 3), float("nan"), dtype=self.dtype)
                              for it, n in zip(items, sizes.tolist(), strict=True)]),
            stress=torch.stack([it.stress for it in items]) if has_stress else None,
        )  # fmt: skip


def _stress_matrix(stress) -> np.ndarray:
    """(3, 3) stress from ASE's Voigt 6-vector (or an already full matrix)."""
    stress = np.asarray(stress, dtype=np.float64)
    return stress if stress.shape == (3, 3) else voigt_6_to_full_3x3_stress(stress)
