"""``annpot.dataset``: labelled frames (structures with energy, forces, stress) as one AiiDA node.

Frames are stored as concatenated arrays in the node's repository (``.npy`` through :class:`ArrayData`), not as
one node per frame: a dataset of thousands of frames stays one cheap node. Per frame, the UUID of the calculation
that labelled it is kept (empty for frames from elsewhere), so provenance queries can go from a potential's
training data to the exact DFT calculations. Queryable attributes: ``n_frames``, ``n_atoms``, ``elements``,
``has_stress`` and ``content_hash`` (the engine's hash of structures and labels, as written to extxyz for training,
so it equals the ``dataset_hash`` of every model trained on the dataset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from aiida.orm import ArrayData
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

_UUID_LENGTH = 36


class AtomisticDataset(ArrayData):
    """Labelled atomic frames: units eV, eV/Å, eV/Å³ (ASE's stress convention, Voigt order)."""

    @classmethod
    def from_frames(
        cls, frames: list[Atoms], sources: list[str | None] | None = None, names: list[str | None] | None = None
    ) -> AtomisticDataset:
        """A new (unstored) dataset from ASE frames carrying energy and forces (stress optional).

        :param sources: per frame, the UUID of the calculation that produced the labels, or None.
        :param names: per frame, the name of its structure in the work chain that labelled it, or None.
        :raises aiida_annpot.core.errors.InputDataError: unusable frames (see ``validate_labelled``).
        """
        from ..core.frames import dataset_hash, elements_of, validate_labelled

        validate_labelled(frames, source="dataset")
        sources = list(sources) if sources is not None else [None] * len(frames)
        names = list(names) if names is not None else [None] * len(frames)
        for what, values in (("sources", sources), ("names", names)):
            if len(values) != len(frames):
                raise ValueError(f"{len(values)} {what} given for {len(frames)} frames")
        node = cls()
        counts = np.array([len(frame) for frame in frames], dtype=np.int64)
        stresses = [frame.calc.results.get("stress") for frame in frames]
        node.set_array("n_atoms", counts)
        node.set_array("numbers", np.concatenate([frame.numbers for frame in frames]).astype(np.int64))
        node.set_array("positions", np.concatenate([frame.positions for frame in frames]))
        node.set_array("forces", np.concatenate([frame.get_forces() for frame in frames]))
        node.set_array("cells", np.stack([frame.cell.array for frame in frames]))
        node.set_array("pbc", np.stack([frame.pbc for frame in frames]))
        node.set_array("energies", np.array([frame.get_potential_energy() for frame in frames]))
        node.set_array("stresses", np.stack([_voigt(s) for s in stresses]))
        node.set_array("sources", np.array([s or "" for s in sources], dtype=f"<U{_UUID_LENGTH}"))
        node.set_array("names", np.array([n or "" for n in names], dtype=str))
        node.base.attributes.set_many(
            {
                "n_frames": len(frames),
                "n_atoms": int(counts.sum()),
                "elements": elements_of(frames),
                "has_stress": all(s is not None for s in stresses),
                "content_hash": dataset_hash(_as_written(frames)),
            }
        )
        return node

    @classmethod
    def from_extxyz(cls, path: str | Path) -> AtomisticDataset:
        """A new dataset from an extxyz file of labelled frames (no calculation UUIDs)."""
        from ..core.frames import read_frames

        return cls.from_frames(read_frames(path))

    @property
    def n_frames(self) -> int:
        return self.base.attributes.get("n_frames")

    @property
    def elements(self) -> list[str]:
        return self.base.attributes.get("elements")

    @property
    def content_hash(self) -> str:
        return self.base.attributes.get("content_hash")

    @property
    def sources(self) -> list[str | None]:
        """Per frame, the UUID of the calculation that labelled it (None where unknown)."""
        return [s or None for s in self.get_array("sources").tolist()]

    @property
    def names(self) -> list[str | None]:
        """Per frame, the name of its structure where the labelling work chain gave one (None elsewhere)."""
        if "names" not in self.get_arraynames():  # datasets stored before frames had names
            return [None] * self.n_frames
        return [n or None for n in self.get_array("names").tolist()]

    def to_frames(self) -> list[Atoms]:
        """The frames as ASE ``Atoms`` with single-point results (energy, free_energy, forces, stress if known)."""
        counts = self.get_array("n_atoms")
        splits = np.cumsum(counts)[:-1]
        numbers = np.split(self.get_array("numbers"), splits)
        positions = np.split(self.get_array("positions"), splits)
        forces = np.split(self.get_array("forces"), splits)
        frames = []
        for index, (z, x, f) in enumerate(zip(numbers, positions, forces, strict=True)):
            atoms = Atoms(numbers=z, positions=x, cell=self.get_array("cells")[index], pbc=self.get_array("pbc")[index])
            stress = self.get_array("stresses")[index]
            energy = float(self.get_array("energies")[index])
            results = {"energy": energy, "free_energy": energy, "forces": f}
            if np.all(np.isfinite(stress)):
                results["stress"] = stress
            atoms.calc = SinglePointCalculator(atoms, **results)
            frames.append(atoms)
        return frames

    def write_extxyz(self, path: str | Path) -> Path:
        """Export the frames (with labels) to an extxyz file."""
        import ase.io  # here, not at the top: 0.4 s of every CLI command that loads a dataset node

        ase.io.write(path, self.to_frames(), format="extxyz")
        return Path(path)


def _as_written(frames: list[Atoms]) -> list[Atoms]:
    """The frames as ``annpot`` reads them back from the extxyz a calculation writes (8 decimals), so that
    ``content_hash`` equals the ``dataset_hash`` recorded in the models trained on this dataset."""
    import tempfile

    import ase.io

    from ..core.frames import read_frames

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "frames.extxyz"
        ase.io.write(path, frames, format="extxyz")
        return read_frames(path)


def _voigt(stress) -> np.ndarray:
    if stress is None:
        return np.full(6, np.nan)
    stress = np.asarray(stress, dtype=float)
    return full_3x3_to_voigt_6_stress(stress) if stress.shape == (3, 3) else stress.reshape(6)
