"""``annpot.label``: one structure's reference label (energy, forces, stress) in the engine's units, whatever code
made it.

This is the output every labeller of :mod:`aiida_annpot.workflows.labelling` yields, so the campaign, the dataset
merge, validation and the CLI never read a code's own outputs: energy in eV (attribute), forces in eV/Å (array
``forces``), stress in eV/Å³ with ASE's sign (array ``stress``, 3×3, absent for a non-periodic structure), and the
UUID of the calculation that computed them (attribute ``calculation_uuid``), which the dataset keeps per frame.
"""

from __future__ import annotations

import math

import numpy as np
from aiida.orm import ArrayData

__all__ = ["LabelData"]


class LabelData(ArrayData):
    """Energy (eV), forces (eV/Å) and optional stress (eV/Å³, ASE sign) of one structure, with their calculation."""

    @classmethod
    def build(cls, energy: float, forces, stress=None, *, calculation_uuid: str, code: str) -> LabelData:
        """A new (unstored) label.

        :param forces: (N, 3) array-like.
        :param stress: (3, 3) or Voigt (6,) array-like, or None.
        :raises ValueError: a non-finite energy, forces or stress, or arrays of the wrong shape.
        """
        if energy is None or not math.isfinite(float(energy)):
            raise ValueError(f"no finite total energy (energy = {energy})")
        forces = np.asarray(forces, dtype=float)
        if forces.ndim != 2 or forces.shape[1] != 3 or not np.isfinite(forces).all():
            raise ValueError(f"forces of shape {forces.shape} or not finite")
        label = cls()
        label.set_array("forces", forces)
        if stress is not None:
            stress = np.asarray(stress, dtype=float)
            if stress.shape == (6,):  # Voigt xx yy zz yz xz xy
                xx, yy, zz, yz, xz, xy = stress
                stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
            if stress.shape != (3, 3) or not np.isfinite(stress).all():
                raise ValueError(f"stress of shape {stress.shape} or not finite")
            label.set_array("stress", stress)
        label.base.attributes.set("energy", float(energy))
        label.base.attributes.set("calculation_uuid", str(calculation_uuid))
        label.base.attributes.set("code", str(code))
        label.base.attributes.set("n_atoms", int(forces.shape[0]))
        return label

    @property
    def energy(self) -> float:
        """Total energy, eV."""
        return self.base.attributes.get("energy")

    @property
    def forces(self) -> np.ndarray:
        """(N, 3) forces, eV/Å."""
        return self.get_array("forces")

    @property
    def stress(self) -> np.ndarray | None:
        """(3, 3) stress, eV/Å³ with ASE's sign (positive under tension), or None."""
        return self.get_array("stress") if "stress" in self.get_arraynames() else None

    @property
    def calculation_uuid(self) -> str:
        """UUID of the calculation that computed the label."""
        return self.base.attributes.get("calculation_uuid")

    @property
    def code(self) -> str:
        """The labeller that made it (``quantumespresso``, ``cp2k``, ...)."""
        return self.base.attributes.get("code")
