"""``assemble_committee``: single-model potentials from parallel trainings become one committee potential."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiida.engine import calcfunction

from ..data.potential import AnnPotential

__all__ = ["assemble_committee", "natural_order"]


def natural_order(key: str) -> tuple[str, int]:
    """Sort key that puts ``member_2`` before ``member_10`` (a trailing number compares as a number)."""
    stem, _, number = key.rpartition("_")
    return (stem, int(number)) if number.isdigit() else (key, -1)


@calcfunction
def assemble_committee(**members: AnnPotential) -> AnnPotential:
    """One AnnPotential holding every member of the inputs, in the order of their keys (``member_2`` before
    ``member_10``), so member k of the committee is the input ``member_k``.

    :raises aiida_annpot.core.errors.ModelFileError: members of different architectures or elements.
    """
    if not members:
        raise ValueError("assemble_committee needs at least one member potential")
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for key in sorted(members, key=natural_order):
            for index in range(members[key].committee_size):
                path = Path(folder) / f"{key}_{index}.safetensors"
                path.write_bytes(members[key].member_bytes(index))
                paths.append(path)
        return AnnPotential.from_files(paths)
