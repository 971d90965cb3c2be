"""ASE calculator for one ænet-style model or a committee of them.

Follows ASE's calculator contract: eV, eV/Å, Voigt stress in eV/Å³ (xx, yy, zz, yz, xz, xy), ``super().calculate``
first. A committee returns the mean, plus ``energy_std`` (eV/atom), ``forces_std`` (N,) and ``max_force_std``
(eV/Å), and on request (``get_property('fingerprint')``) a per-element mean of standardised features for
diversity selection.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .committee import committee_statistics
from .geometry import NeighborSearch, raise_allocator_thresholds
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
        self._last = None  # the latest Prediction, kept for a fingerprint asked for later
        raise_allocator_thresholds()  # MD calls this thousands of times: keep freed buffers mapped

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if not system_changes and self._last is not None and set(properties) <= {*self.results, "fingerprint"}:
            self.results["fingerprint"] = self._fingerprint()  # only the fingerprint is new: no re-evaluation
            return
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        pairs = self.neighbors(self.atoms.positions, self.atoms.cell.array, self.atoms.pbc,
                               dtype=self.potential.dtype)  # fmt: skip
        prediction = self.potential(self.atoms.numbers, pairs, volume=self.atoms.get_volume() if periodic else None)
        self._last = prediction
        stats = committee_statistics(prediction)
        self.results = {
            "energy": stats.energy,
            "free_energy": stats.energy,
            "forces": stats.forces.double().numpy(),
            "energies": prediction.atomic_energies.detach().mean(0).double().numpy(),
            "energy_std": stats.energy_std,
            "forces_std": stats.forces_std.double().numpy(),
            "max_force_std": stats.max_force_std,
        }
        if stats.stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(stats.stress.double().numpy())
        if "fingerprint" in properties:
            self.results["fingerprint"] = self._fingerprint()

    def reset(self):
        super().reset()
        self._last = None

    def _fingerprint(self) -> np.ndarray:
        """Computed on request only: MD needs it for sampled frames, not for every step."""
        species = self.potential.species(self.atoms.numbers)
        return self.potential.fingerprint(self._last.features, species).double().numpy()
