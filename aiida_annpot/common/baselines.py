"""Baselines by name, without the engine: the registry of names a file may use, and the checks of a baseline
configuration that the schema layer runs (nothing a file names is ever imported).

The registered names are the built-in short names (``zbl``, ``lj``, ``morse``, ``emt``) and the entry points of
:data:`ENTRY_POINT_GROUP`; anything else is an import path, built only where the caller trusts it explicitly. The
calculators themselves (the ZBL repulsion, label residuals) are in :mod:`aiida_annpot.core.baselines`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ase.calculators.calculator import Calculator

from .errors import InputDataError

__all__ = [
    "ENTRY_POINT_GROUP",
    "SHORT_NAMES",
    "UntrustedBaselineError",
    "baseline_record",
    "check_baseline",
    "check_zbl_parameters",
    "describe_baseline",
    "is_registered",
    "make_baseline",
    "registered_names",
]

#: Parameters of the built-in ZBL repulsion (see :class:`aiida_annpot.core.baselines.ZBLCalculator`).
ZBL_PARAMETERS = ("inner", "outer")


def check_zbl_parameters(inner=None, outer=None) -> None:
    """:raises ValueError: a switching distance that is not a finite non-negative number, or inner ≥ outer."""
    for name, value in (("inner", inner), ("outer", outer)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0
        ):
            raise ValueError(f"ZBL {name} must be a finite non-negative distance in Å, got {value!r}")
    if inner is not None and outer is not None and not inner < outer:
        raise ValueError(f"ZBL inner ({inner} Å) must be below outer ({outer} Å)")


#: Built-in baseline names: the ZBL class, or the import path of an ASE calculator known to be safe (it computes
#: in-process and runs no command). With the entry points of :data:`ENTRY_POINT_GROUP`, the registered names.
SHORT_NAMES: dict[str, str] = {
    "zbl": "aiida_annpot.core.baselines.ZBLCalculator",
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
        raise ValueError(
            f"baseline {name!r} is not an ASE calculator: {name} is not a subclass of "
            "ase.calculators.calculator.Calculator"
        )
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
            raise ValueError(
                f"baseline {name!r} does not take parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(cls.default_parameters) or 'none'})"
            )


def check_baseline(config) -> None:
    """Check a baseline without importing anything a file names: a registered name is built with its parameters; an
    import path is checked for its form only (whether it imports is decided where it is trusted and built).

    :raises ValueError: an unknown name, a malformed path, or parameters a registered baseline refuses.
    """
    name, parameters = _name_and_parameters(config)
    if name in ("zbl", SHORT_NAMES["zbl"]):  # the engine's own calculator: checked here, without importing it
        unknown = sorted(set(parameters) - set(ZBL_PARAMETERS))
        if unknown:
            raise ValueError(
                f"baseline {name!r} does not take parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(ZBL_PARAMETERS)})"
            )
        check_zbl_parameters(**parameters)
    elif is_registered(name):
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
