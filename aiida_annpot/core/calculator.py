"""ASE calculator for one ænet-style model or a committee of them.

Follows ASE's calculator contract: eV, eV/Å, Voigt stress in eV/Å³ (xx, yy, zz, yz, xz, xy), ``super().calculate``
first. A committee returns the mean, plus ``energy_std`` (eV/atom), ``forces_std`` (N,) and ``max_force_std``
(eV/Å), and every call a ``fingerprint`` (per-element mean of standardised features) for diversity selection.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from .committee import committee_statistics
from .geometry import NeighborSearch
from .model import Potential
from .modelfile import load_potential


class AnnCalculator(Calculator):
    """Energies, forces and stress from a :class:`~aiida_annpot.core.model.Potential`.

    :param model: a model file, a list of member files (a committee), or a loaded ``Potential``.
    :param dtype: ``"float32"`` (fast MD) or ``"float64"``.
    :param skin: Verlet skin in Å for the neighbour list (reuse across MD steps); 0 recomputes every call.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "energy_std",
                              "forces_std", "max_force_std", "fingerprint"]  # fmt: skip
    default_parameters = {"dtype": "float64", "skin": 0.0}

    def __init__(self, model, dtype: str = "float64", skin: float = 0.0, **kwargs):
        super().__init__(dtype=dtype, skin=skin, **kwargs)
        torch_dtype = getattr(torch, dtype)
        self.potential = model.to(torch_dtype) if isinstance(model, Potential) else load_potential(model, torch_dtype)
        self.potential.eval()
        self.neighbors = NeighborSearch(self.potential.descriptor.cutoff, skin=skin)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        pairs = self.neighbors(self.atoms.positions, self.atoms.cell.array, self.atoms.pbc,
                               dtype=self.potential.dtype)  # fmt: skip
        prediction = self.potential(self.atoms.numbers, pairs, volume=self.atoms.get_volume() if periodic else None)
        stats = committee_statistics(prediction)
        self.results = {
            "energy": stats.energy,
            "free_energy": stats.energy,
            "forces": stats.forces.detach().double().numpy(),
            "energies": prediction.atomic_energies.mean(0).detach().double().numpy(),
            "energy_std": stats.energy_std,
            "forces_std": stats.forces_std.detach().double().numpy(),
            "max_force_std": stats.max_force_std,
            "fingerprint": self.potential.fingerprint(prediction.features, self.potential.species(self.atoms.numbers))
            .double()
            .numpy(),
        }
        if stats.stress is not None:
            s = stats.stress.detach().double().numpy()
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
