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

This module is torch-free (numpy, vesin, ASE): the AiiDA side imports it at submit time to validate configurations.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import vesin
from ase import Atoms, units
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.data import covalent_radii
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from .errors import InputDataError

__all__ = ["ENTRY_POINT_GROUP", "SHORT_NAMES", "UntrustedBaselineError", "ZBLCalculator", "baseline_record",
           "check_baseline", "delta_labels", "describe_baseline", "is_registered", "make_baseline",
           "registered_names", "subtract_baseline"]  # fmt: skip

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
        for name, value in (("inner", inner), ("outer", outer)):
            if value is not None and (not isinstance(value, int | float) or not np.isfinite(value) or value < 0):
                raise ValueError(f"ZBL {name} must be a finite non-negative distance in Å, got {value!r}")
        if inner is not None and outer is not None and not inner < outer:
            raise ValueError(f"ZBL inner ({inner} Å) must be below outer ({outer} Å)")
        super().__init__(inner=inner, outer=outer)

    def switching_distances(self, zi: np.ndarray, zj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inner and outer switching distances (Å) for pairs of atomic numbers; raises if one is not below the other."""
        radii = covalent_radii[zi] + covalent_radii[zj]
        inner = radii * INNER_FRACTION if self.parameters.inner is None else np.full(radii.shape, self.parameters.inner)
        outer = radii * OUTER_FRACTION if self.parameters.outer is None else np.full(radii.shape, self.parameters.outer)
        bad = np.flatnonzero(inner >= outer)
        if bad.size:
            k = bad[0]
            raise ValueError(f"ZBL switching for Z={zi[k]}–Z={zj[k]}: inner ({inner[k]:.3f} Å) is not below outer "
                             f"({outer[k]:.3f} Å); set both inner and outer")  # fmt: skip
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
        forces = np.stack([np.bincount(first, gradient[:, k], n_atoms) - np.bincount(second, gradient[:, k], n_atoms)
                           for k in range(3)], axis=1)  # fmt: skip
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
        first, second, vectors, distances = vesin.NeighborList(cutoff=float(outer.max()), full_list=False).compute(
            points=np.ascontiguousarray(self.atoms.positions, dtype=np.float64), box=box, periodic=pbc.copy(),
            quantities="ijDd",
        )  # fmt: skip
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


#: Built-in baseline names: the ZBL class, or the import path of an ASE calculator known to be safe (it computes
#: in-process and runs no command). With the entry points of :data:`ENTRY_POINT_GROUP`, the registered names.
SHORT_NAMES: dict[str, type[Calculator] | str] = {
    "zbl": ZBLCalculator,
    "lj": "ase.calculators.lj.LennardJones",
    "morse": "ase.calculators.morse.MorsePotential",
    "emt": "ase.calculators.emt.EMT",
}
#: Installed packages register baselines here (``name = "package.module:Class"``); installing is the user's trust.
ENTRY_POINT_GROUP = "aiida_annpot.baselines"
_IDENTIFIER_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class UntrustedBaselineError(InputDataError):
    """An import-path baseline that the caller did not trust explicitly (bad input: ``annpot`` exits 2)."""


def _name_and_parameters(config) -> tuple[str, dict[str, Any]]:
    """(name, parameters) of a BaselineConfig or of a mapping with those keys (a model file's record)."""
    if isinstance(config, Mapping):
        return config["name"], dict(config.get("parameters") or {})
    return config.name, dict(config.parameters)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {point.name: point for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _is_builtin(name: str) -> bool:
    return name in SHORT_NAMES or name in {path for path in SHORT_NAMES.values() if isinstance(path, str)}


def registered_names() -> list[str]:
    """The names a file may use: the built-in short names and the installed entry points."""
    return [*SHORT_NAMES, *sorted(set(_entry_points()) - set(SHORT_NAMES))]


def is_registered(name: str) -> bool:
    """Whether ``name`` is a registered baseline: a built-in short name or the import path one stands for, or an
    entry point of :data:`ENTRY_POINT_GROUP`."""
    return _is_builtin(name) or name in _entry_points()


def _registered_class(name: str) -> type[Calculator]:
    if not _is_builtin(name):  # an installed package's entry point
        try:
            cls = _entry_points()[name].load()
        except Exception as exc:
            raise ValueError(
                f"baseline {name!r}: its entry point cannot be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Calculator)):
            raise ValueError(
                f"baseline {name!r}: entry point {ENTRY_POINT_GROUP}:{name} is not an ASE calculator class"
            )
        return cls
    target = SHORT_NAMES.get(name, name)
    if isinstance(target, type):
        return target
    module_name, _, class_name = target.rpartition(".")
    return getattr(importlib.import_module(module_name), class_name)  # one of ours: ase.calculators.*


def _import(name: str) -> type[Calculator]:
    """The class behind a trusted import path. :raises ValueError: naming what is wrong."""
    module_name, _, class_name = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while it is imported
        raise ValueError(
            f"baseline {name!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"baseline {name!r}: module {module_name!r} has no attribute {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Calculator)):
        raise ValueError(f"baseline {name!r} is not an ASE calculator: {name} is not a subclass of "
                         "ase.calculators.calculator.Calculator")  # fmt: skip
    return cls


def _resolve(name: str, trusted: Iterable[str]) -> type[Calculator]:
    """The calculator class of a registered name, or of an import path in ``trusted``.

    :raises UntrustedBaselineError: an import path the caller did not trust (nothing is imported).
    :raises ValueError: an unknown name, or a trusted path that cannot be imported or is not an ASE calculator.
    """
    if is_registered(name):
        return _registered_class(name)
    if not _IDENTIFIER_PATH.fullmatch(name):
        raise ValueError(
            f"unknown baseline {name!r}: use one of {', '.join(registered_names())} or the import path of an ASE "
            "calculator class (package.module.ClassName)"
        )
    if name not in set(trusted):
        raise UntrustedBaselineError(
            f"baseline {name!r} is an import path, not one of the registered baselines "
            f"({', '.join(registered_names())}): a file cannot choose code to import. If you trust it, pass it "
            f"explicitly (--trust-baseline {name} on the command line, trusted_baselines=[{name!r}] in Python), or "
            f"register it under the entry point group {ENTRY_POINT_GROUP}"
        )
    return _import(name)


def _check_parameters(name: str, cls: type[Calculator], parameters: dict[str, Any]) -> None:
    # the built-in calculators accept any keyword (ASE's **kwargs): refuse those outside their default_parameters
    if _is_builtin(name):
        unknown = sorted(set(parameters) - set(cls.default_parameters))
        if unknown:
            raise ValueError(f"baseline {name!r} does not take parameter(s) {', '.join(unknown)} "
                             f"(known: {', '.join(cls.default_parameters) or 'none'})")  # fmt: skip


def check_baseline(config) -> None:
    """Check a baseline without importing anything a file names: a registered name is built with its parameters; an
    import path is checked for its form only (whether it imports is decided where it is trusted and built).

    :raises ValueError: an unknown name, a malformed path, or parameters a registered baseline refuses.
    """
    name, _ = _name_and_parameters(config)
    if is_registered(name):
        make_baseline(config)
    elif not _IDENTIFIER_PATH.fullmatch(name):
        _resolve(name, ())  # raises the unknown-name message


def make_baseline(config, trusted: Iterable[str] = ()) -> Calculator:
    """Build the baseline calculator of a :class:`~aiida_annpot.common.config.BaselineConfig` (or its JSON record).

    :param trusted: import paths the caller trusts explicitly (never read from a file); registered names need none.
    :raises UntrustedBaselineError: an import path not in ``trusted`` (nothing imported).
    :raises ValueError: unknown name, module or class not importable, not an ASE calculator, or parameters refused
        (the message names them).
    """
    name, parameters = _name_and_parameters(config)
    cls = _resolve(name, trusted)
    _check_parameters(name, cls, parameters)
    try:
        return cls(**parameters)
    except Exception as exc:  # constructors raise TypeError, ValueError, ... for parameters they refuse
        raise ValueError(
            f"baseline {name!r} cannot be built with parameters {parameters}: {type(exc).__name__}: {exc}"
        ) from exc


def baseline_record(config) -> dict[str, Any] | None:
    """The JSON record of a baseline (``{"name", "parameters"}``) as model files store it; None without one."""
    if config is None:
        return None
    name, parameters = _name_and_parameters(config)
    return {"name": name, "parameters": parameters}


def describe_baseline(config) -> str:
    """One line for humans: ``zbl (inner=1.0, outer=3.0)``, or ``none``."""
    record = baseline_record(config)
    if record is None:
        return "none"
    parameters = ", ".join(f"{key}={value}" for key, value in record["parameters"].items())
    return f"{record['name']} ({parameters})" if parameters else record["name"]


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
