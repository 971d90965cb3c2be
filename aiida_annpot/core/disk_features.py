"""Training features kept on disk, for datasets whose features and pair Jacobians do not fit in memory.

:class:`DiskFeatureSet` computes what :class:`~.dataset.FeatureSet` computes, structure by structure, and writes it
once to a scratch folder: one flat binary file per array (species, features and forces per atom; pair indices,
pair vectors and Jacobians per pair), the structures one after another. Only per-structure offsets and scalar
labels stay in memory. A batch reads its structures' rows with explicit reads into fresh tensors, so the process
holds one batch at a time; the operating system's page cache, which the kernel reclaims under pressure and which is
not the process's memory, serves the rows read recently. :meth:`DiskFeatureSet.batches` reads the next batch in a
background thread while the caller trains on the current one (reads release the GIL). Batches are bitwise identical
to those of a FeatureSet of the same frames.

The folder is removed by :meth:`DiskFeatureSet.close`, or when the object is collected or the interpreter exits; a
run killed outright leaves it behind, and the next store built in the same folder replaces it.
"""

from __future__ import annotations

import math
import shutil
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from ase import Atoms

from .dataset import Batch, compute_features
from .geometry import NeighborPairs

#: Atoms per chunk that :meth:`DiskFeatureSet.feature_chunks` reads (a few tens of MB of features).
CHUNK_ATOMS = 1 << 18
#: The arrays with one row per neighbour pair; the others have one row per atom.
PER_PAIR = ("first", "second", "vectors", "jacobian")


class _FlatArray:
    """One array stored row after row in a binary file: appended while the store is written, then read by row
    ranges into new tensors (plain reads, not a memory map, so nothing read stays mapped into the process)."""

    def __init__(self, path: Path, dtype: torch.dtype, row_shape: tuple[int, ...]):
        self.path, self.dtype, self.row_shape = path, dtype, row_shape
        self.row_bytes = math.prod(row_shape) * dtype.itemsize
        self._file = path.open("wb")

    def append(self, rows: torch.Tensor) -> None:
        assert rows.dtype == self.dtype and rows.shape[1:] == self.row_shape, (rows.dtype, rows.shape)
        self._file.write(rows.contiguous().numpy().data)

    def seal(self) -> None:
        """End of writing: reopen the file unbuffered for reading."""
        self._file.close()
        self._file = self.path.open("rb", buffering=0)

    def read(self, ranges: list[tuple[int, int]]) -> torch.Tensor:
        """Rows ``start:start + count`` for each ``(start, count)`` of ``ranges``, concatenated."""
        out = torch.empty((sum(count for _, count in ranges), *self.row_shape), dtype=self.dtype, device="cpu")
        buffer = memoryview(out.numpy()).cast("B")
        position = 0
        for start, count in ranges:
            end = position + count * self.row_bytes
            self._read_into(buffer[position:end], start * self.row_bytes)
            position = end
        return out

    def _read_into(self, buffer: memoryview, offset: int) -> None:
        self._file.seek(offset)
        while buffer:
            n = self._file.readinto(buffer)
            if not n:
                raise OSError(f"{self.path} is shorter than its index: the feature store was changed while in use")
            buffer = buffer[n:]

    def close(self) -> None:
        self._file.close()


class DiskFeatureSet:
    """Features, Jacobians and labels of ``frames`` in flat files under ``folder`` (created, and emptied first).

    :param potential: provides the descriptor, the element lookup and the device batches go to, as for
        :class:`~.dataset.FeatureSet`; the files stay on disk whatever the device.
    """

    def __init__(
        self,
        frames: list[Atoms],
        potential,
        folder: str | Path,
        dtype: torch.dtype = torch.float32,
        chunk_pairs: int = 200_000,
    ):
        self.dtype, self.folder, self.device = dtype, Path(folder), potential.device
        shutil.rmtree(self.folder, ignore_errors=True)  # a store left behind by a killed run
        self.folder.mkdir(parents=True)
        self._remove = weakref.finalize(self, shutil.rmtree, str(self.folder), True)
        n_features = potential.descriptor.n_features
        shapes = {
            "species": (torch.long, ()),
            "features": (dtype, (n_features,)),
            "forces": (dtype, (3,)),
            "first": (torch.long, ()),
            "second": (torch.long, ()),
            "vectors": (dtype, (3,)),
            "jacobian": (dtype, (n_features, 3)),
        }
        self._arrays = {name: _FlatArray(self.folder / f"{name}.bin", *shape) for name, shape in shapes.items()}
        self.n_atoms: list[int] = []
        self.n_pairs: list[int] = []
        self.volumes: list[float] = []
        self.energies: list[float] = []
        stresses, self.has_stress = [], []
        for item in compute_features(frames, potential, dtype, chunk_pairs):
            n_atoms = item.species.shape[0]
            forces = item.forces
            if forces is None:
                forces = torch.full((n_atoms, 3), float("nan"), dtype=dtype, device="cpu")
            for name, rows in (
                ("species", item.species),
                ("features", item.features),
                ("forces", forces),
                ("first", item.pairs.first),
                ("second", item.pairs.second),
                ("vectors", item.pairs.vectors),
                ("jacobian", item.jacobian),
            ):
                self._arrays[name].append(rows)
            self.n_atoms.append(n_atoms)
            self.n_pairs.append(item.pairs.first.shape[0])
            self.volumes.append(item.volume)
            self.energies.append(item.energy)
            self.has_stress.append(item.stress is not None and math.isfinite(item.volume))
            stress = item.stress
            stresses.append(
                stress if stress is not None else torch.full((3, 3), float("nan"), dtype=dtype, device="cpu")
            )
        for array in self._arrays.values():
            array.seal()
        self.stress = torch.stack(stresses) if stresses else torch.zeros((0, 3, 3), dtype=dtype, device="cpu")
        self.atom_start = _starts(self.n_atoms)
        self.pair_start = _starts(self.n_pairs)

    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def nbytes(self) -> int:
        """Size of the files in bytes."""
        return sum(array.path.stat().st_size for array in self._arrays.values())

    def batch(self, indices) -> Batch:
        """The structures at ``indices`` as one :class:`~.dataset.Batch`, read from the files and moved to the
        model's device (in the reader thread of :meth:`batches`, so the copy overlaps training too)."""
        index = [int(i) for i in indices]
        atom_ranges = [(self.atom_start[i], self.n_atoms[i]) for i in index]
        pair_ranges = [(self.pair_start[i], self.n_pairs[i]) for i in index]
        sizes = torch.tensor([self.n_atoms[i] for i in index], device="cpu")
        offsets = torch.repeat_interleave(
            torch.cumsum(sizes, 0) - sizes, torch.tensor([self.n_pairs[i] for i in index], device="cpu")
        )
        read = {
            name: array.read(pair_ranges if name in PER_PAIR else atom_ranges) for name, array in self._arrays.items()
        }
        has_stress = all(self.has_stress[i] for i in index)
        return Batch(
            species=read["species"],
            features=read["features"],
            jacobian=read["jacobian"],
            pairs=NeighborPairs(read["first"] + offsets, read["second"] + offsets, read["vectors"], int(sizes.sum())),
            structure_index=torch.repeat_interleave(torch.arange(len(index), device="cpu"), sizes),
            n_atoms=sizes,
            volumes=torch.tensor([self.volumes[i] for i in index], dtype=self.dtype, device="cpu"),
            energy=torch.tensor([self.energies[i] for i in index], dtype=self.dtype, device="cpu"),
            forces=read["forces"],
            stress=self.stress[index] if has_stress else None,
        ).to(self.device)

    def batches(self, groups: Iterable) -> Iterator[Batch]:
        """:meth:`batch` of each group of indices in turn, the next group read ahead by a background thread: two
        batches in memory at most, and the reads overlap the caller's work on the current one."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-reader") as reader:
            pending = None
            for group in groups:
                following = reader.submit(self.batch, group)  # the only reader of the files meanwhile
                if pending is not None:
                    yield pending.result()
                pending = following
            if pending is not None:
                yield pending.result()

    def feature_chunks(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Species (n,) and features (n, D) of every atom, :data:`CHUNK_ATOMS` atoms at a time."""
        total = sum(self.n_atoms)
        for start in range(0, total, CHUNK_ATOMS):
            rows = [(start, min(CHUNK_ATOMS, total - start))]
            yield self._arrays["species"].read(rows), self._arrays["features"].read(rows)

    def close(self) -> None:
        """Close and delete the files; the store cannot be read afterwards."""
        for array in self._arrays.values():
            array.close()
        self._remove()


def _starts(counts: list[int]) -> list[int]:
    """Offset of each structure's first row: the running sum of the counts before it."""
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += count
    return starts
