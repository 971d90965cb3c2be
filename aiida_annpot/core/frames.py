"""Labelled frames without torch: reading and validating extxyz data, and content hashes.

Frames are ASE ``Atoms`` whose calculator holds energy (eV), forces (eV/Å) and optionally stress (eV/Å³, ASE
convention). This module, with :mod:`.errors`, is all the AiiDA daemon needs of the engine to merge and store
labels (``merge_dataset``, :class:`~aiida_annpot.data.dataset.AtomisticDataset`): it imports numpy and ASE, and
vesin only when a neighbour list is made (:func:`half_neighbor_list`): vesin imports torch where it is installed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from .errors import InputDataError

__all__ = [
    "MIN_ALLOWED_DISTANCE",
    "MIN_CELL_VOLUME",
    "check_distances",
    "check_structure",
    "dataset_hash",
    "elements_of",
    "half_neighbor_list",
    "read_frames",
    "validate_labelled",
]

#: Atoms closer than this are treated as bad input (nuclei on top of each other), in Å.
MIN_ALLOWED_DISTANCE = 0.5
#: Cells whose volume is below this (Å³) count as degenerate.
MIN_CELL_VOLUME = 1e-6


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, label: str = "structure") -> None:
    """Reject non-finite coordinates and degenerate periodic cells before any neighbour search."""
    if positions.shape[0] == 0:
        raise InputDataError(f"{label} has no atoms")
    if not np.all(np.isfinite(positions)):
        raise InputDataError(f"{label} has non-finite atomic positions")
    if np.any(pbc):
        volume = abs(np.linalg.det(cell))
        if not np.isfinite(volume) or volume < MIN_CELL_VOLUME:
            raise InputDataError(f"{label} is periodic but its cell has zero volume ({volume:.3g} Å³)")


def half_neighbor_list(cutoff: float):
    """vesin's neighbour list (each pair once) for ``cutoff`` Å, imported on first use: vesin imports torch, which
    the daemon's workers would otherwise load (seconds and hundreds of MB each) for configurations they only check."""
    import vesin

    return vesin.NeighborList(cutoff=cutoff, full_list=False)


def check_distances(frame: Atoms, label: str = "structure") -> None:
    """Reject a frame with two atoms (or an atom and a periodic image) closer than :data:`MIN_ALLOWED_DISTANCE`."""
    positions = np.ascontiguousarray(frame.positions, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(frame.pbc, dtype=bool), (3,))
    cell = np.asarray(frame.cell.array, dtype=np.float64).reshape(3, 3)
    check_structure(positions, cell, pbc, label)
    if not np.any(pbc):
        cell = np.zeros((3, 3))
    search = half_neighbor_list(MIN_ALLOWED_DISTANCE)
    first, second, distances = search.compute(points=positions, box=cell, periodic=pbc, quantities="ijd")
    if len(distances):
        k = int(np.argmin(distances))
        i, j = sorted((int(first[k]), int(second[k])))
        raise InputDataError(
            f"{label}: atoms {i} and {j} are {float(distances[k]):.3f} Å apart (below {MIN_ALLOWED_DISTANCE} Å)"
        )


def read_frames(path: str | Path | list | tuple) -> list[Atoms]:
    """All frames of an extxyz (or any ASE-readable) file; an unreadable or empty file is an input error.

    aenet's XSF training files (``*.xsf``: one structure each, energy in a comment, forces in eV/Å) are read by
    :func:`~aiida_annpot.core.aenet.xsf.read_xsf`, a folder by reading all its XSF files, and a list of paths (as
    generate.in's FILES) by reading each in turn.
    """
    if isinstance(path, list | tuple):
        if not path:
            raise InputDataError("an empty list of structure files")
        return [frame for item in path for frame in read_frames(item)]
    path = Path(path)
    if path.is_dir() or path.suffix.lower() == ".xsf":
        from .aenet.xsf import read_xsf, read_xsf_folder  # its errors name the file and line

        if path.is_dir():
            return read_xsf_folder(path)
        if not path.is_file():
            raise InputDataError(f"structure file {path} does not exist")
        return [read_xsf(path)]
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
    :data:`MIN_ALLOWED_DISTANCE`.
    """
    if not frames:
        raise InputDataError(f"{source} is empty: no labelled frames to train on")
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
        check_distances(frame, where)


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
