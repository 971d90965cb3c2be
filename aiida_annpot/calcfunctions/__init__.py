"""Cheap provenance steps as calcfunctions: structure generation, dataset merging, committee assembly, selection."""

from .committee import assemble_committee
from .dataset import merge_dataset
from .selection import select_candidates
from .structures import rattle_structures, slab_structures, strain_structures, supercell_structure, vacancy_structures

__all__ = [
    "assemble_committee",
    "merge_dataset",
    "rattle_structures",
    "select_candidates",
    "slab_structures",
    "strain_structures",
    "supercell_structure",
    "vacancy_structures",
]
