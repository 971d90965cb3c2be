"""Structure generation as calcfunctions: each generated structure is linked to its parent and to the seeded
parameters that made it. The work itself is done by :mod:`aiida_annpot.core.generate` (pure ASE, no AiiDA).

Several structures come back as outputs ``structure_000``, ``structure_001``, … of one calcfunction.
"""

from __future__ import annotations

from aiida.engine import calcfunction
from aiida.orm import Bool, Float, Int, List, StructureData

from ..core import generate, properties


def _outputs(frames) -> dict[str, StructureData]:
    return {f"structure_{index:03d}": StructureData(ase=frame) for index, frame in enumerate(frames)}


@calcfunction
def supercell_structure(structure: StructureData, repeat: List) -> StructureData:
    """``structure`` repeated along its cell vectors (``repeat``: three integers ≥ 1)."""
    return StructureData(ase=generate.supercell(structure.get_ase(), tuple(repeat.get_list())))


@calcfunction
def volume_series(structure: StructureData, points: Int, max_volume_strain: Float) -> dict:
    """An energy–volume series: ``points`` isotropically scaled copies, volumes evenly over V0·(1 ± strain)."""
    factors = properties.volume_factors(points.value, max_volume_strain.value)
    return _outputs(properties.scaled_cells(structure.get_ase(), factors))


@calcfunction
def strain_structures(structure: StructureData, count: Int, max_strain: Float, anisotropic: Bool, seed: Int) -> dict:
    """``count`` homogeneously strained copies (isotropic or full symmetric strain up to ``max_strain``)."""
    frames = generate.strained(structure.get_ase(), count.value, max_strain.value, anisotropic.value, seed.value)
    return _outputs(frames)


@calcfunction
def rattle_structures(
    structure: StructureData, count: Int, stdev: Float, seed: Int, min_distance_ratio: Float | None = None
) -> dict:
    """``count`` copies with Gaussian displacements of ``stdev`` Å on every coordinate; with ``min_distance_ratio``
    no two atoms come closer than that fraction of the structure's nearest-neighbour distance."""
    ratio = min_distance_ratio.value if min_distance_ratio is not None else 0.0
    return _outputs(generate.rattled(structure.get_ase(), count.value, stdev.value, seed.value, ratio))


@calcfunction
def vacancy_structures(structure: StructureData, count: Int, seed: Int) -> dict:
    """``count`` copies with one atom removed each, at distinct random sites."""
    return _outputs(generate.vacancies(structure.get_ase(), count.value, seed.value))


@calcfunction
def slab_structures(structure: StructureData, miller_indices: List, layers: Int, vacuum: Float) -> dict:
    """One slab per Miller index triple in ``miller_indices``, ``layers`` thick with ``vacuum`` Å each side."""
    slabs = [
        generate.slab(structure.get_ase(), tuple(m), layers.value, vacuum.value) for m in miller_indices.get_list()
    ]
    return _outputs(slabs)
