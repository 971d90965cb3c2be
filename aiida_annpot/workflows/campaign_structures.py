"""The structures of a campaign and their cells: generated training and test structures, exploration start cells,
and which ideal cell each structure to label is a copy of.

A labeller may fix inputs per ideal cell (Quantum ESPRESSO's k-point mesh, see
:mod:`~aiida_annpot.workflows.labelling.quantumespresso`): copies of a cell (strained, rattled, hot MD frames of it)
share them, so their energies differ only through the structure. This module only keeps track of which cell each
structure belongs to; what is fixed per cell is the labeller's business.
"""

from __future__ import annotations

from aiida.orm import List, StructureData

from ..calcfunctions import structures as generate
from ..common.config import GenerationConfig
from .generation import VACANCY_CELL, generate_copies, kind_of

__all__ = ["CampaignStructures", "start_key"]


def start_key(key: str, repeat: list[int]) -> str:
    """Name of the exploration start cell that repeats input structure ``key``'s supercell ``repeat`` times."""
    return key if list(repeat) == [1, 1, 1] else f"{key}_x{''.join(str(n) for n in repeat)}"


class CampaignStructures:
    """Bookkeeping of generated structures and their cells over two plain dicts that the work chain keeps in its
    context (so they are checkpointed); make one of these around them whenever needed.

    :param cells: cell key → the ideal cell's StructureData, updated in place.
    :param cell_of: structure label (or start cell) → cell key, updated in place.
    """

    def __init__(self, cells: dict, cell_of: dict):
        self.cells = cells
        self.cell_of = cell_of

    def _cell(self, cell_key: str, cell: StructureData) -> None:
        self.cells.setdefault(cell_key, cell)

    def generate(self, cell: StructureData, key: str, settings: GenerationConfig, prefix: str = "") -> dict:
        """Generated copies of ``cell`` labelled ``<prefix><key>_<name>``; returns label → (structure, kind)."""
        made = generate_copies(cell, key, settings)
        for cell_key, ideal in made.cells.items():
            self._cell(f"{prefix}{cell_key}", ideal)
        labelled = {}
        for name, structure in made.structures.items():
            label = f"{prefix}{key}_{name}"
            labelled[label] = (structure, kind_of(name))
            if name in made.cell_of:
                self.cell_of[label] = f"{prefix}{made.cell_of[name]}"
        return labelled

    def start_cells(self, cell: StructureData, key: str, repeats: list[list[int]]) -> dict[str, StructureData]:
        """Exploration start cells: ``cell`` repeated as each entry of ``repeats`` says, each a cell of its own."""
        starts = {}
        for repeat in repeats:
            name = start_key(key, repeat)
            starts[name] = (
                cell
                if list(repeat) == [1, 1, 1]
                else generate.supercell_structure(
                    cell, List(list(repeat)), metadata={"call_link_label": f"start_{name}"}
                )
            )
            self._cell(name, starts[name])
        return starts

    def vacancy_start(self, labelled: dict, key: str) -> tuple[str, StructureData] | None:
        """The first unrattled vacancy structure of input ``key`` as an exploration start (a copy of its cell)."""
        for label, (structure, kind) in sorted(labelled.items()):
            if kind == "vacancy" and label.startswith(f"{key}_"):
                name = f"{key}_{VACANCY_CELL}start"
                self.cell_of[name] = self.cell_of[label]
                return name, structure
        return None

    def follow(self, label: str, start: str) -> None:
        """A frame explored from start cell ``start`` is a copy of that start's cell."""
        if start in self.cell_of:
            self.cell_of[label] = self.cell_of[start]
        elif start in self.cells:
            self.cell_of[label] = start

    def cells_of(self, labels) -> dict[str, StructureData]:
        """Label → its ideal cell, for every label among ``labels`` that is a copy of one."""
        return {
            label: self.cells[self.cell_of[label]]
            for label in labels
            if label in self.cell_of and self.cell_of[label] in self.cells
        }
