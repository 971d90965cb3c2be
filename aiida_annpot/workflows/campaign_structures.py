"""The structures of a campaign and their k-point meshes: generated training and test structures, exploration
start cells, and which ideal cell's mesh each structure to label uses.

One mesh per ideal cell, fixed from the campaign's k-point distance: a distance-based mesh changes size as a
cell is strained, which shifts energies by far more than the potential's target error. Copies of a cell (strained,
rattled, hot MD frames of it) use its mesh; cells that are supercells of one another (the 8-atom cell and its
2×1×1 vacancy cell) then sample the Brillouin zone equivalently where the distance gives commensurate meshes.
"""

from __future__ import annotations

from aiida.orm import Bool, List, StructureData

from ..calcfunctions import structures as generate
from ..calcfunctions.kpoints import kpoints_mesh
from ..common.config import GenerationConfig
from .generation import VACANCY_CELL, generate_copies, kind_of

__all__ = ["CampaignStructures", "start_key"]


def start_key(key: str, repeat: list[int]) -> str:
    """Name of the exploration start cell that repeats input structure ``key``'s supercell ``repeat`` times."""
    return key if list(repeat) == [1, 1, 1] else f"{key}_x{''.join(str(n) for n in repeat)}"


class CampaignStructures:
    """Bookkeeping of generated structures, cells and meshes over two plain dicts that the work chain keeps in its
    context (so they are checkpointed); make one of these around them whenever needed.

    :param pw_base: the exposed PwBaseWorkChain inputs of the campaign's reference namespace.
    :param meshes: cell key → KpointsData, updated in place.
    :param cell_of: structure label (or start cell) → cell key, updated in place.
    :param offset: the reference's ``kpoints_offset`` (None: Γ-centred meshes).
    """

    def __init__(self, pw_base, meshes: dict, cell_of: dict, offset: List | None = None):
        self.distance = pw_base.get("kpoints_distance")
        self.parity = pw_base.get("kpoints_force_parity", Bool(False))
        self.offset = offset
        self.meshes = meshes
        self.cell_of = cell_of

    def _mesh(self, cell_key: str, cell: StructureData) -> None:
        if self.distance is not None and cell_key not in self.meshes:  # else an explicit mesh for every structure
            self.meshes[cell_key] = kpoints_mesh(cell, self.distance, self.parity, self.offset, cell_key)

    def generate(self, cell: StructureData, key: str, settings: GenerationConfig, prefix: str = "") -> dict:
        """Generated copies of ``cell`` labelled ``<prefix><key>_<name>``; returns label → (structure, kind)."""
        made = generate_copies(cell, key, settings)
        for cell_key, ideal in made.cells.items():
            self._mesh(f"{prefix}{cell_key}", ideal)
        labelled = {}
        for name, structure in made.structures.items():
            label = f"{prefix}{key}_{name}"
            labelled[label] = (structure, kind_of(name))
            if name in made.cell_of:
                self.cell_of[label] = f"{prefix}{made.cell_of[name]}"
        return labelled

    def start_cells(self, cell: StructureData, key: str, repeats: list[list[int]]) -> dict[str, StructureData]:
        """Exploration start cells: ``cell`` repeated as each entry of ``repeats`` says, each with its mesh."""
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
            self._mesh(name, starts[name])
        return starts

    def vacancy_start(self, labelled: dict, key: str) -> tuple[str, StructureData] | None:
        """The first unrattled vacancy structure of input ``key`` as an exploration start (its cell's mesh)."""
        for label, (structure, kind) in sorted(labelled.items()):
            if kind == "vacancy" and label.startswith(f"{key}_"):
                name = f"{key}_{VACANCY_CELL}start"
                self.cell_of[name] = self.cell_of[label]
                return name, structure
        return None

    def follow(self, label: str, start: str) -> None:
        """A frame explored from start cell ``start`` is labelled with that start cell's mesh."""
        if start in self.cell_of:
            self.cell_of[label] = self.cell_of[start]
        elif start in self.meshes:
            self.cell_of[label] = start

    def kpoints(self, labels) -> dict:
        """Label → mesh for every label among ``labels`` whose cell has a mesh (others use the distance)."""
        return {
            label: self.meshes[self.cell_of[label]]
            for label in labels
            if label in self.cell_of and self.cell_of[label] in self.meshes
        }
