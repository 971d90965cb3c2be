"""Generated structures of a campaign (its training set's first DFT set, and its test set): copies of each ideal
supercell, every one made by a calcfunction (provenance).

Structures are named ``<kind>`` or ``<kind>_<index>``; the kind says how a structure was made (``ideal``,
``volume``, ``isotropic``, ``anisotropic``, ``rattle050`` for a rattle of 0.050 Å, ``vacancy``, ``vacancyhost`` for
the perfect vacancy cell, ``vacancyrattle050``, ``slab``), so errors can be reported per kind. Each structure also
belongs to a *cell*: the ideal cell whose k-point mesh it is labelled with (strained and rattled copies share the
mesh of their ideal cell, so their energies differ only through the structure).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from aiida.orm import Bool, Float, Int, List, StructureData

from ..calcfunctions import structures as generate
from ..common.config import GenerationConfig

__all__ = ["Generated", "generate_copies", "kind_of"]

#: Suffix of the cell of the vacancy structures (their own supercell, with its own k-point mesh).
VACANCY_CELL = "vacancy"


def kind_of(name: str) -> str:
    """The kind of a generated structure's name: the name without its trailing ``_<index>``."""
    return re.sub(r"_\d+$", "", name)


def _milli_angstrom(amplitude: float) -> str:
    return f"{round(amplitude * 1000):03d}"


@dataclass
class Generated:
    """Structures by name, and the ideal cell (by cell key) whose k-point mesh each structure uses.

    Slabs belong to no cell: their mesh comes from the campaign's k-point distance on the slab itself.
    """

    structures: dict[str, StructureData] = field(default_factory=dict)
    cells: dict[str, StructureData] = field(default_factory=dict)
    cell_of: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, node: StructureData, cell: str | None) -> None:
        self.structures[name] = node
        if cell is not None:
            self.cell_of[name] = cell


def generate_copies(cell: StructureData, key: str, settings: GenerationConfig) -> Generated:
    """The ideal ``cell`` (if asked) and its volume series, strained, rattled, defective and slab copies, each a
    calcfunction step; ``key`` names the input structure (cell keys are ``key`` and ``key_vacancy``)."""
    made = Generated(cells={key: cell})
    seed, strain, ratio = Int(settings.seed), Float(settings.max_strain), Float(settings.min_distance_ratio)

    def add(kind: str, outputs: dict, cell_key: str | None = key) -> None:
        for name, node in sorted(outputs.items()):
            made.add(f"{kind}_{name.split('_')[-1]}", node, cell_key)

    def label(kind: str) -> dict:
        return {"call_link_label": f"{kind}_{key}"}

    if settings.include_ideal:
        made.add("ideal", cell, key)
    if settings.volumes:
        series = generate.volume_series(
            cell, Int(settings.volumes), Float(settings.max_volume_strain), metadata=label("volume")
        )
        if settings.include_ideal:  # an odd series holds V0 itself: the ideal cell, labelled once
            volume = cell.get_cell_volume()
            series = {k: s for k, s in series.items() if not math.isclose(s.get_cell_volume(), volume, rel_tol=1e-9)}
        add("volume", series)
    if settings.isotropic_strains:
        add(
            "isotropic",
            generate.strain_structures(
                cell, Int(settings.isotropic_strains), strain, Bool(False), seed, metadata=label("isotropic")
            ),
        )
    if settings.anisotropic_strains:
        add(
            "anisotropic",
            generate.strain_structures(
                cell, Int(settings.anisotropic_strains), strain, Bool(True), seed, metadata=label("anisotropic")
            ),
        )
    for number, amplitude in enumerate(settings.rattle_amplitudes if settings.rattles else ()):
        kind = f"rattle{_milli_angstrom(amplitude)}"
        add(
            kind,
            generate.rattle_structures(
                cell, Int(settings.rattles), Float(amplitude), Int(settings.seed + number), ratio, metadata=label(kind)
            ),
        )
    if settings.vacancies:
        _add_vacancies(made, cell, key, settings)
    if settings.slab_miller:
        add(
            "slab",
            generate.slab_structures(
                cell,
                List(settings.slab_miller),
                Int(settings.slab_layers),
                Float(settings.slab_vacuum),
                metadata=label("slab"),
            ),
            None,
        )
    return made


def _add_vacancies(made: Generated, cell: StructureData, key: str, settings: GenerationConfig) -> None:
    """Vacancies in the vacancy supercell (its perfect cell too, when it is larger than ``cell``) and their rattled
    copies, all on the vacancy cell's mesh."""
    cell_key = key
    host = cell
    if settings.vacancy_supercell != [1, 1, 1]:
        cell_key = f"{key}_{VACANCY_CELL}"
        host = generate.supercell_structure(
            cell, List(settings.vacancy_supercell), metadata={"call_link_label": f"vacancyhost_{key}"}
        )
        made.cells[cell_key] = host
        made.add("vacancyhost", host, cell_key)
    defects = generate.vacancy_structures(
        host, Int(settings.vacancies), Int(settings.seed), metadata={"call_link_label": f"vacancy_{key}"}
    )
    for name, defect in sorted(defects.items()):
        index = name.split("_")[-1]
        made.add(f"vacancy_{index}", defect, cell_key)
        for number, amplitude in enumerate(settings.vacancy_rattles):
            kind = f"vacancyrattle{_milli_angstrom(amplitude)}"
            rattled = generate.rattle_structures(
                defect,
                Int(1),
                Float(amplitude),
                Int(settings.seed + 100 + 10 * int(index) + number),  # each defect and amplitude its own draw
                Float(settings.min_distance_ratio),
                metadata={"call_link_label": f"{kind}_{key}_{index}"},
            )
            made.add(f"{kind}_{index}", rattled["structure_000"], cell_key)
