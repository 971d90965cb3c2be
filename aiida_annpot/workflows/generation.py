"""The first DFT set of a campaign: copies of each ideal supercell, every one made by a calcfunction (provenance)."""

from __future__ import annotations

from aiida.orm import Bool, Float, Int, List, StructureData

from ..calcfunctions import structures as generate
from ..common.config import GenerationConfig

__all__ = ["generate_copies"]


def generate_copies(cell: StructureData, key: str, settings: GenerationConfig) -> dict[str, StructureData]:
    """The ideal ``cell`` (if asked) and its strained, rattled, defective and slab copies, each a calcfunction step."""
    made = {"ideal": cell} if settings.include_ideal else {}
    seed, strain = Int(settings.seed), Float(settings.max_strain)

    def add(kind: str, outputs: dict) -> None:
        made.update({f"{kind}_{name.split('_')[-1]}": node for name, node in sorted(outputs.items())})

    def label(kind: str) -> dict:
        return {"call_link_label": f"{kind}_{key}"}

    if settings.isotropic_strains:
        add("isotropic", generate.strain_structures(cell, Int(settings.isotropic_strains), strain, Bool(False), seed,
                                                    metadata=label("isotropic")))  # fmt: skip
    if settings.anisotropic_strains:
        add("anisotropic", generate.strain_structures(cell, Int(settings.anisotropic_strains), strain, Bool(True),
                                                      seed, metadata=label("anisotropic")))  # fmt: skip
    if settings.rattles:
        add("rattled", generate.rattle_structures(cell, Int(settings.rattles), Float(settings.rattle_stdev), seed,
                                                  metadata=label("rattle")))  # fmt: skip
    if settings.vacancies:
        add("vacancy", generate.vacancy_structures(cell, Int(settings.vacancies), seed, metadata=label("vacancy")))
    if settings.slab_miller:
        add("slab", generate.slab_structures(cell, List(settings.slab_miller), Int(settings.slab_layers),
                                             Float(settings.slab_vacuum), metadata=label("slab")))  # fmt: skip
    return made
