"""``merge_dataset``: reference labels become frames of an AtomisticDataset, with provenance.

Per label two inputs with one suffix: ``structure_<k>`` (the labelled structure) and ``label_<k>`` (its
:class:`~aiida_annpot.data.label.LabelData`: energy eV, forces eV/Å, stress eV/Å³ with ASE's sign, whatever code
made it). A frame whose structure is already in the dataset (or came earlier in the same call) is dropped as a
duplicate, and one that fails the dataset's checks (overlapping atoms, for instance) is rejected alone, never the
whole merge. Every rejected label is listed with its reason. Each frame keeps its label suffix as its name
(``AtomisticDataset.names``) and the UUID of the calculation behind its label as its source. No torch, no code
specific outputs: this runs in the daemon.
"""

from __future__ import annotations

import hashlib

import numpy as np
from aiida.engine import calcfunction
from aiida.orm import Dict, StructureData
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ..data.dataset import AtomisticDataset
from ..data.label import LabelData

__all__ = ["label_to_frame", "merge_dataset", "structure_key"]

_LABEL_PARTS = ("structure", "label")
#: Positions and cells are compared after rounding to this many decimals (Å) to detect duplicate structures.
_DECIMALS = 6


def structure_key(atoms: Atoms) -> str:
    """A hash of numbers, cell, periodicity and positions (rounded to 1e-6 Å): equal for the same structure."""
    digest = hashlib.sha256()
    for array in (
        atoms.numbers.astype(np.int64),
        atoms.pbc.astype(np.int8),
        np.round(atoms.cell.array, _DECIMALS) + 0.0,
        np.round(atoms.positions, _DECIMALS) + 0.0,
    ):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def label_to_frame(structure: StructureData, label: LabelData) -> Atoms:
    """One labelled frame from a structure and its label.

    :raises ValueError: the label is for a different number of atoms.
    """
    atoms = structure.get_ase()
    forces = label.forces
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"forces of shape {forces.shape} for {len(atoms)} atoms")
    results = {"energy": float(label.energy), "free_energy": float(label.energy), "forces": forces}
    if label.stress is not None:
        results["stress"] = label.stress
    atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _labels(kwargs: dict) -> dict[str, dict]:
    labels: dict[str, dict] = {}
    for key, node in kwargs.items():
        part, _, suffix = key.partition("_")
        if part not in _LABEL_PARTS or not suffix:
            raise ValueError(f"unexpected input {key!r}: expected structure_<k> and label_<k>")
        labels.setdefault(suffix, {})[part] = node
    for suffix, parts in labels.items():
        missing = [part for part in _LABEL_PARTS if part not in parts]
        if missing:
            raise ValueError(f"label {suffix} lacks {', '.join(f'{part}_{suffix}' for part in missing)}")
    return dict(sorted(labels.items()))


@calcfunction
def merge_dataset(dataset: AtomisticDataset | None = None, **labels) -> dict:
    """Append labels to ``dataset`` (or start a new one); outputs ``dataset`` and ``rejected``.

    ``rejected`` maps the label suffix to ``{"structure": uuid, "reason": str}``. With no usable frame at all (no
    previous dataset and every label rejected) there is no ``dataset`` output.
    """
    from ..core.frames import validate_labelled  # torch-free: this runs in the daemon

    frames = dataset.to_frames() if dataset is not None else []
    sources = dataset.sources if dataset is not None else []
    names = dataset.names if dataset is not None else []
    seen = {structure_key(frame) for frame in frames}
    rejected = {}
    for suffix, parts in _labels(labels).items():
        reason = None
        try:
            frame = label_to_frame(parts["structure"], parts["label"])
            validate_labelled([frame], source=f"label {suffix}")  # one bad frame must not sink the others
        except ValueError as exc:  # InputDataError is a ValueError
            reason = str(exc)
        if reason is None:
            key = structure_key(frame)
            if key in seen:
                reason = "duplicate of a structure already in the dataset"
            else:
                seen.add(key)
                frames.append(frame)
                sources.append(parts["label"].calculation_uuid)
                names.append(suffix)
        if reason is not None:
            rejected[suffix] = {"structure": parts["structure"].uuid, "reason": reason}
    outputs = {"rejected": Dict(rejected)}
    if frames:
        outputs["dataset"] = AtomisticDataset.from_frames(frames, sources, names)
    return outputs
