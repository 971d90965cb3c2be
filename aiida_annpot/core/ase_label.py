"""``annpot label``: one structure labelled by a registered ASE calculator (EMT, Lennard-Jones, Morse, ZBL, ...).

A stand-in for DFT behind the labeller seam (``annpot.labelling.ase``), so that benchmarks and workflow tests pay
AiiDA's real cost per label (a CalcJob on a computer) without DFT's: never a physical reference. The label file
records the calculator's own time and the process's wall time from interpreter start, so a benchmark can subtract
what the labeller itself needs from the wall time AiiDA takes per label.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..common.baselines import make_baseline
from ..common.config import LabelConfig
from ..common.contract import LABEL_FILE
from . import jsonio
from .errors import InputDataError

__all__ = ["label_structure", "process_seconds"]


def process_seconds() -> float | None:
    """Wall time since this process started (Linux ``/proc``; None elsewhere): includes the interpreter's start-up
    and imports, which a label pays as pw.x pays its own start-up."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


def label_structure(config: LabelConfig, workdir: Path) -> dict:
    """Energy (eV), forces (eV/Å) and, for a cell periodic in all directions, stress (3×3, eV/Å³, ASE's sign) of
    ``config.structure``; written to ``workdir / LABEL_FILE`` and returned.

    :raises InputDataError: an unreadable structure, or one the calculator cannot evaluate (EMT knows 7 elements).
    """
    import ase.io

    try:
        atoms = ase.io.read(config.structure, format="json")
    except Exception as exc:  # ASE raises many types for a malformed file
        raise InputDataError(f"cannot read structure {config.structure}: {type(exc).__name__}: {exc}") from exc
    # registered names only, never an import path (trusted=()): the schema refused those already
    atoms.calc = make_baseline({"name": config.calculator, "parameters": config.parameters})
    start = time.perf_counter()
    try:
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        stress = atoms.get_stress(voigt=False) if atoms.pbc.all() else None
    except Exception as exc:  # EMT: NotImplementedError for an element it lacks
        raise InputDataError(f"{config.calculator} cannot label {atoms.get_chemical_formula()}: {exc!r}") from exc
    result = {
        "energy": float(energy),
        "forces": np.asarray(forces, dtype=float).tolist(),
        "stress": None if stress is None else np.asarray(stress, dtype=float).tolist(),
        "calculator": config.calculator,
        "compute_seconds": time.perf_counter() - start,
        "process_seconds": process_seconds(),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / LABEL_FILE).write_text(jsonio.dumps(result))
    return result
