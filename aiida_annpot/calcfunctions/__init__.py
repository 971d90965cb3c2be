"""Cheap provenance steps as calcfunctions: structure generation (and, later, dataset merging and selection)."""

from .structures import rattle_structures, slab_structures, strain_structures, supercell_structure, vacancy_structures

__all__ = ["rattle_structures", "slab_structures", "strain_structures", "supercell_structure", "vacancy_structures"]
