"""``annpot.potential``: a committee of model files (safetensors + JSON metadata) as one AiiDA node.

The member files are stored verbatim in the node's repository (``member_0.safetensors``, …), so exporting a potential
gives back exactly the files ``annpot train`` wrote. Queryable attributes: ``elements``, ``descriptor``,
``network``, ``baseline`` (delta learning; None without), ``committee_size``, and per member the ``metrics`` and
``dataset_hash`` of its training run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiida.orm import Data


class AnnPotential(Data):
    """K ≥ 1 model files of one architecture (elements, descriptor, network), usable as an ASE calculator."""

    @classmethod
    def from_files(cls, paths: list[str | Path]) -> AnnPotential:
        """A new (unstored) potential from member model files.

        :raises aiida_annpot.core.errors.ModelFileError: unreadable files or members of different architectures.
        """
        from ..core.modelfile import load_potential, read_metadata

        paths = [Path(p) for p in paths]
        load_potential(paths)  # validates every file and that the members fit together
        metadata = [read_metadata(p) for p in paths]
        node = cls()
        for index, path in enumerate(paths):
            with path.open("rb") as handle:
                node.base.repository.put_object_from_filelike(handle, cls.member_name(index))
        first = metadata[0]
        node.base.attributes.set_many(
            {
                "elements": first["elements"],
                "descriptor": first["descriptor"],
                "network": first["network"],
                "baseline": first.get("baseline"),
                "committee_size": len(paths),
                "metrics": [m.get("metrics") for m in metadata],
                "dataset_hash": [m.get("dataset_hash") for m in metadata],
                "versions": first.get("versions", {}),
            }
        )
        return node

    @staticmethod
    def member_name(index: int) -> str:
        return f"member_{index}.safetensors"

    @property
    def committee_size(self) -> int:
        return self.base.attributes.get("committee_size")

    @property
    def elements(self) -> list[str]:
        return self.base.attributes.get("elements")

    def member_bytes(self, index: int) -> bytes:
        """The model file of member ``index`` as stored."""
        if not 0 <= index < self.committee_size:
            raise IndexError(f"member {index} of a committee of {self.committee_size}")
        return self.base.repository.get_object_content(self.member_name(index), mode="rb")

    def export(self, directory: str | Path) -> list[Path]:
        """Write the member files to ``directory``; returns their paths in member order."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for index in range(self.committee_size):
            target = directory / self.member_name(index)
            target.write_bytes(self.member_bytes(index))
            paths.append(target)
        return paths

    def calculator(self, dtype: str = "float64", skin: float = 0.0, trusted_baselines=()):
        """An :class:`~aiida_annpot.core.calculator.AnnCalculator` for the whole committee.

        :param trusted_baselines: import-path baselines to build (see ``AnnCalculator``); registered ones need none.
        """
        from ..core.calculator import AnnCalculator

        with tempfile.TemporaryDirectory() as folder:  # weights are read into memory; the files can go
            paths = [str(p) for p in self.export(folder)]
            return AnnCalculator(paths, dtype=dtype, skin=skin, trusted_baselines=trusted_baselines)
