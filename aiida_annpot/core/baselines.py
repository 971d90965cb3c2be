"""Baselines for delta learning: the built-in ZBL repulsion, ASE calculators by name, and label residuals.

A delta-learning potential fits DFT − baseline and its calculator adds the baseline back. The baseline is an ASE
calculator built from a :class:`~aiida_annpot.common.config.BaselineConfig`: ``"zbl"`` (:class:`ZBLCalculator`,
the Ziegler–Biersack–Littmark universal screened nuclear repulsion, switched off below the bonding distances), a
registered name (``"lj"``, ``"morse"``, ``"emt"``, or one that an installed package registers under the entry point
group ``aiida_annpot.baselines``) or the import path ``package.module.Class`` of any ASE calculator.

Files are untrusted input: a model file, a training or campaign configuration can be downloaded from anywhere, and an
import path in one would import that module (and an ASE calculator may run a ``command``). So only registered names
are built from what a file says; an import path is built only when the caller trusts it explicitly (``trusted=``,
``annpot … --trust-baseline``), never because a file names it. AiiDA campaigns take registered names only: their
configurations travel to the daemon and the cluster, where no one is asked.

This module is torch-free (numpy, ASE; vesin only when a ZBL baseline computes, through
:func:`~.frames.half_neighbor_list`): the AiiDA side imports it at submit time to validate configurations.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import covalent_radii
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from ..common.baselines import (  # the registry and checks, re-exported
    ENTRY_POINT_GROUP,
    SHORT_NAMES,
    UntrustedBaselineError,
    baseline_record,
    check_baseline,
    check_zbl_parameters,
    describe_baseline,
    is_registered,
    make_baseline,
    registered_names,
)
from .errors import InputDataError
from .frames import half_neighbor_list

__all__ = [
    "ENTRY_POINT_GROUP",
    "SHORT_NAMES",
    "UntrustedBaselineError",
    "ZBLCalculator",
    "baseline_record",
    "check_baseline",
    "delta_labels",
    "describe_baseline",
    "is_registered",
    "make_baseline",
    "registered_names",
    "subtract_baseline",
]

#: e²/(4πε₀) in eV·Å.
COULOMB = units.Hartree * units.Bohr
#: Universal screening function Σ_k c_k exp(-d_k r/a) (Ziegler, Biersack & Littmark, 1985).
ZBL_COEFFICIENTS = np.array([0.18175, 0.50986, 0.28022, 0.02817])
ZBL_EXPONENTS = np.array([3.19980, 0.94229, 0.40290, 0.20162])
#: a = ZBL_SCREENING_LENGTH / (Z_i^0.23 + Z_j^0.23), in Å.
ZBL_SCREENING_LENGTH = 0.46850
#: Default switching range per element pair, as fractions of the sum of covalent radii (Si–Si: 1.11 to 1.78 Å).
INNER_FRACTION, OUTER_FRACTION = 0.5, 0.8


class ZBLCalculator(Calculator):
    """ZBL screened nuclear repulsion E = Σ_{i<j} φ(r_ij)·s(r_ij), acting at short range only.

    φ(r) = Z_i Z_j e²/(4πε₀ r) Σ_k c_k exp(-d_k r/a); s(r) = 1 below ``inner``, 0 above ``outer`` and a quintic
    smoothstep (C² continuous) in between. Per element pair ``inner`` = 0.5 and ``outer`` = 0.8 times the sum of the
    covalent radii (:data:`ase.data.covalent_radii`), below the bonding distances.

    :param inner: Å, overrides the inner switching distance of every element pair.
    :param outer: Å, overrides the outer switching distance (the cutoff) of every element pair.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]
    default_parameters = {"inner": None, "outer": None}

    def __init__(self, *, inner: float | None = None, outer: float | None = None):
        check_zbl_parameters(inner, outer)
        super().__init__(inner=inner, outer=outer)

    def switching_distances(self, zi: np.ndarray, zj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inner and outer switching distances (Å) for pairs of atomic numbers; raises if one is not below the other."""
        radii = covalent_radii[zi] + covalent_radii[zj]
        inner = radii * INNER_FRACTION if self.parameters.inner is None else np.full(radii.shape, self.parameters.inner)
        outer = radii * OUTER_FRACTION if self.parameters.outer is None else np.full(radii.shape, self.parameters.outer)
        bad = np.flatnonzero(inner >= outer)
        if bad.size:
            k = bad[0]
            raise ValueError(
                f"ZBL switching for Z={zi[k]}–Z={zj[k]}: inner ({inner[k]:.3f} Å) is not below outer "
                f"({outer[k]:.3f} Å); set both inner and outer"
            )
        return inner, outer

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.all())
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError("stress needs a cell periodic in all three directions")
        first, second, vectors, distances = self._pairs()
        n_atoms = len(self.atoms)
        zi, zj = self.atoms.numbers[first], self.atoms.numbers[second]
        phi, dphi = zbl_repulsion(zi, zj, distances)
        switch, dswitch = smoothstep_switch(distances, *self.switching_distances(zi, zj))
        pair_energy = phi * switch
        gradient = ((dphi * switch + phi * dswitch) / distances)[:, None] * vectors  # ∂E/∂r_ij, (P, 3)
        half = 0.5 * pair_energy
        energies = np.bincount(first, half, n_atoms) + np.bincount(second, half, n_atoms)
        forces = np.stack(
            [
                np.bincount(first, gradient[:, k], n_atoms) - np.bincount(second, gradient[:, k], n_atoms)
                for k in range(3)
            ],
            axis=1,
        )
        energy = float(pair_energy.sum())
        self.results = {"energy": energy, "free_energy": energy, "energies": energies, "forces": forces}
        if periodic:  # strain derivative: Σ_p r_p ⊗ ∂E/∂r_p / V (ASE's sign)
            self.results["stress"] = full_3x3_to_voigt_6_stress(gradient.T @ vectors / self.atoms.get_volume())

    def _pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Half list of pairs within the largest outer distance of the elements present: i, j, r_ij (P, 3), |r_ij|."""
        elements = np.unique(self.atoms.numbers)
        _, outer = self.switching_distances(*(grid.ravel() for grid in np.meshgrid(elements, elements)))
        pbc = np.asarray(self.atoms.pbc, dtype=bool)
        box = self.atoms.cell.array if pbc.any() else np.zeros((3, 3))
        first, second, vectors, distances = half_neighbor_list(float(outer.max())).compute(
            points=np.ascontiguousarray(self.atoms.positions, dtype=np.float64),
            box=box,
            periodic=pbc.copy(),
            quantities="ijDd",
        )
        return first.astype(np.int64), second.astype(np.int64), vectors, distances


def zbl_repulsion(zi: np.ndarray, zj: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ZBL pair energy φ (eV) and its derivative dφ/dr (eV/Å) for atomic numbers (P,), (P,) at distances r (P,)."""
    screening_length = ZBL_SCREENING_LENGTH / (zi**0.23 + zj**0.23)
    terms = np.exp(-np.outer(r / screening_length, ZBL_EXPONENTS))  # (P, 4)
    screen = terms @ ZBL_COEFFICIENTS
    dscreen = -(terms @ (ZBL_COEFFICIENTS * ZBL_EXPONENTS)) / screening_length
    coulomb = COULOMB * zi * zj / r
    return coulomb * screen, coulomb * (dscreen - screen / r)


def smoothstep_switch(r: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s(r) = 1 - (10t³ - 15t⁴ + 6t⁵) = (1-t)³(1 + 3t + 6t²), t = (r - inner)/(outer - inner) clipped to [0, 1],
    and ds/dr.

    s is C² continuous: s' and s'' vanish at both ends; the factored form is exactly 0 at t = 1, never below.
    """
    width = outer - inner
    t = np.clip((r - inner) / width, 0.0, 1.0)
    return (1.0 - t) ** 3 * (1.0 + 3.0 * t + 6.0 * t * t), -30.0 * t * t * (1.0 - t) ** 2 / width


def _label(frame: Atoms, name: str):
    try:
        return frame.calc.get_property(name, allow_calculation=False) if frame.calc is not None else None
    except Exception:  # PropertyNotImplementedError and friends: the label is simply absent
        return None


def _residual(frame: Atoms, baseline: Calculator) -> Atoms:
    labels = {name: _label(frame, name) for name in ("energy", "forces", "stress")}
    atoms = frame.copy()  # no calculator; info and arrays kept
    wanted = [name for name, value in labels.items() if value is not None]
    if "stress" in wanted and not atoms.pbc.all():
        wanted.remove("stress")
        labels["stress"] = None
    values = {name: baseline.get_property(name, atoms) for name in wanted}
    if values.get("stress") is not None and np.shape(labels["stress"]) == (3, 3):
        values["stress"] = voigt_6_to_full_3x3_stress(values["stress"])
    residual = {name: np.asarray(labels[name], dtype=np.float64) - values[name] for name in wanted}
    bad = [name for name, value in residual.items() if not np.all(np.isfinite(value))]
    if bad:
        raise ValueError(f"the baseline gives non-finite {', '.join(bad)}")
    if "energy" in residual:
        residual["energy"] = float(residual["energy"])
    atoms.calc = SinglePointCalculator(atoms, **residual)
    return atoms


def subtract_baseline(frames: list[Atoms], baseline: Calculator, source: str = "dataset") -> list[Atoms]:
    """New frames labelled with label − baseline for energy, forces and stress (a label that is absent stays absent).

    :raises InputDataError: the baseline cannot evaluate a frame or gives non-finite values (names the frame).
    """
    residuals = []
    for index, frame in enumerate(frames):
        try:
            residuals.append(_residual(frame, baseline))
        except Exception as exc:  # ASE calculators raise many types (EMT: NotImplementedError for an element)
            raise InputDataError(
                f"baseline {type(baseline).__name__} cannot evaluate {source} frame {index}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    return residuals


def delta_labels(frames: list[Atoms], baseline, source: str = "dataset", trusted: Iterable[str] = ()) -> list[Atoms]:
    """What a delta-learning model's networks fit: the frames labelled DFT − ``baseline`` (a BaselineConfig or its
    JSON record, built with :func:`make_baseline` and ``trusted``); the frames themselves when ``baseline`` is None.
    Training and evaluation both use it, so their errors mean the same thing (errors of the residual are errors of
    the total)."""
    if baseline is None:
        return frames
    return subtract_baseline(frames, make_baseline(baseline, trusted), source=source)
