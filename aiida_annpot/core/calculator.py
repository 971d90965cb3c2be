"""ASE calculator for one ænet-style model or a committee of them.

Follows ASE's calculator contract: eV, eV/Å, Voigt stress in eV/Å³ (xx, yy, zz, yz, xz, xy), ``super().calculate``
first. A committee returns the mean, plus ``energy_std`` (eV/atom), ``forces_std`` (N,) and ``max_force_std``
(eV/Å), ``min_distance`` (Å: the closest pair of atoms within the cutoff, ``inf`` without one), and on request
(``get_property('fingerprint')``) a per-element mean of standardised features for diversity selection, and
``extrapolation`` (the structure's largest per-atom extrapolation grade) with ``extrapolation_atoms`` (N,): how far
descriptors leave the training ranges, in units of the range widths.
A delta-learning potential's baseline (:mod:`~aiida_annpot.core.baselines`) is added to the networks' energy,
forces, stress and, when the baseline has them, per-atom energies; the committee deviations are the networks'.
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes, equal
from ase.stress import full_3x3_to_voigt_6_stress

from .committee import committee_statistics
from .device import resolve_device
from .geometry import NeighborSearch, raise_allocator_thresholds
from .model import Potential
from .modelfile import build_baseline, load_potential


class AnnCalculator(Calculator):
    """Energies, forces and stress from a :class:`~aiida_annpot.core.model.Potential`.

    :param model: a model file, a list of member files (a committee), or a loaded ``Potential``.
    :param dtype: ``"float32"`` (fast MD) or ``"float64"``.
    :param skin: Verlet skin in Å for the neighbour list (reuse across MD steps); 0 recomputes every call.
    :param trusted_baselines: import paths of baselines the caller trusts. A model file may name only a registered
        baseline (:data:`~aiida_annpot.core.baselines.SHORT_NAMES`); one whose file names an import path loads only
        when that path is passed here, so a downloaded file never imports a module of its own choosing.
    :param evaluate: how the model is called, ``(numbers, pairs, volume) -> Prediction``; by default the potential
        itself. Exploration passes one that shares a model call among trajectories (:mod:`.lockstep`).
    :param device: ``"auto"``, ``"cpu"`` or ``"cuda"`` (:func:`~aiida_annpot.core.device.resolve_device`); None
        keeps a given ``Potential`` where it is and loads model files on the CPU. Results are numpy arrays either way.
    """

    implemented_properties = [
        "energy",
        "free_energy",
        "forces",
        "stress",
        "energies",
        "energy_std",
        "forces_std",
        "max_force_std",
        "min_distance",
        "fingerprint",
        "extrapolation",
        "extrapolation_atoms",
    ]
    #: Computed from the latest evaluation only when asked for: MD pays for them on sampled frames, not every step.
    on_request = ("fingerprint", "extrapolation", "extrapolation_atoms")
    default_parameters = {"dtype": "float64", "skin": 0.0}

    def __init__(
        self,
        model,
        dtype: str = "float64",
        skin: float = 0.0,
        trusted_baselines=(),
        evaluate=None,
        device: str | None = None,
        **kwargs,
    ):
        super().__init__(dtype=dtype, skin=skin, **kwargs)
        torch_dtype = getattr(torch, dtype)
        self.potential = model.to(torch_dtype) if isinstance(model, Potential) else load_potential(model, torch_dtype)
        if device is not None:
            self.potential.to(resolve_device(device))
        self.potential.eval()
        self.baseline = build_baseline(self.potential, trusted_baselines)  # delta learning
        self.neighbors = NeighborSearch(self.potential.descriptor.cutoff, skin=skin)
        self.evaluate = self.potential if evaluate is None else evaluate
        self._last = None  # the latest Prediction, kept for a fingerprint asked for later
        raise_allocator_thresholds()  # MD calls this thousands of times: keep freed buffers mapped

    def check_state(self, atoms, tol=1e-15):
        """ASE's ``compare_atoms`` with an exact comparison before its tolerance test, property by property: MD asks
        for several properties every step, and ASE's ``np.isclose`` of every array costs a tenth of a small cell's
        step. The same properties are compared, and each counts as changed exactly when ASE says so."""
        if self.atoms is None:
            return super().check_state(atoms, tol)
        checked = set(all_changes) - set(self.ignored_changes)
        changes = [
            name
            for name in ("cell", "pbc")
            if name in checked and not _same(getattr(self.atoms, name), getattr(atoms, name), tol)
        ]
        checked -= {"cell", "pbc"}
        before, now = self.atoms.arrays, atoms.arrays
        changes += sorted(checked & (before.keys() ^ now.keys()))
        changes += [name for name in checked & before.keys() & now.keys() if not _same(before[name], now[name], tol)]
        return changes

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if not system_changes and self._last is not None and set(properties) <= {*self.results, *self.on_request}:
            self._add_requested(properties)  # only on-request properties are new: no re-evaluation
            return
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        potential = self.potential
        positions, cell, pbc = self.atoms.positions, self.atoms.cell.array, self.atoms.pbc
        pairs = self.neighbors(positions, cell, pbc, dtype=potential.dtype, device=potential.device)
        prediction = self.evaluate(self.atoms.numbers, pairs, self.atoms.get_volume() if periodic else None)
        self._last = prediction
        stats = committee_statistics(prediction)
        self.results = {
            "energy": stats.energy,
            "free_energy": stats.energy,
            "forces": _numpy(stats.forces),
            "energies": _numpy(prediction.atomic_energies.detach().mean(0)),
            "energy_std": stats.energy_std,
            "forces_std": _numpy(stats.forces_std),
            "max_force_std": stats.max_force_std,
            "min_distance": self.neighbors.closest,  # what an MD stop rule needs, without a search of its own
        }
        if stats.stress is not None:
            self.results["stress"] = full_3x3_to_voigt_6_stress(_numpy(stats.stress))
        if self.baseline is not None:
            self._add_baseline(periodic)
        self._add_requested(properties)

    def reset(self):
        super().reset()
        self._last = None

    def _add_baseline(self, periodic: bool) -> None:
        """Add the baseline to the networks' results; per-atom energies only if the baseline has them too.

        Every member gets the same baseline, so the committee deviations stay those of the networks.
        """
        names = ["energy", "forces", *(["stress"] if periodic else [])]
        per_atom = "energies" in self.baseline.implemented_properties
        values = {name: self.baseline.get_property(name, self.atoms) for name in names + ["energies"] * per_atom}
        self.results["energy"] += float(values["energy"])
        self.results["free_energy"] = self.results["energy"]
        for name in ("forces", "stress", "energies"):
            if name in values:
                self.results[name] = self.results[name] + values[name]
        if not per_atom:  # network-only per-atom energies would not sum to the energy
            del self.results["energies"]

    def _add_requested(self, properties) -> None:
        """Fingerprint and extrapolation grades of the latest evaluation, for those of them in ``properties``."""
        if "fingerprint" in properties:
            self.results["fingerprint"] = self._fingerprint()
        if {"extrapolation", "extrapolation_atoms"} & set(properties):
            species = self.potential.species(self.atoms.numbers)
            grades = _numpy(self.potential.extrapolation_grade(self._last.features, species))
            self.results["extrapolation_atoms"] = grades
            self.results["extrapolation"] = float(grades.max()) if grades.size else 0.0

    def _fingerprint(self) -> np.ndarray:
        """Computed on request only: MD needs it for sampled frames, not for every step."""
        species = self.potential.species(self.atoms.numbers)
        return _numpy(self.potential.fingerprint(self._last.features, species))


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy array on the CPU, as ASE expects, from a result on the model's device."""
    return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()


def _same(before, now, tol: float) -> bool:
    """ASE's rule (``equal`` with an absolute tolerance), after the exact test that MD's repeated calls pass."""
    return np.array_equal(before, now) or equal(before, now, atol=tol)
