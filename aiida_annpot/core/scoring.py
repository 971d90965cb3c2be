"""Scoring frames with a committee: what the selection needs to know of each frame, wherever the frame came from.

Per frame: the committee-mean energy and its spread, the largest per-atom force deviation σ_F^max, the smallest
interatomic distance, a fingerprint (for the duplicate filter and farthest-point sampling) and the extrapolation
grade (how far the descriptors leave the training ranges). ``annpot explore`` records these for the frames its MD
samples; ``annpot score`` (:func:`score_frames`) records the same for frames sampled elsewhere (LAMMPS, i-PI, a
user's trajectory file), so both go through one selection (``annpot select`` or the ``select_candidates``
calcfunction) in the same way.

Trajectory files are untrusted input: they are read with one of ASE's data formats (:data:`FRAME_FORMATS`), never
a format that would import or run anything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms

from ..common.config import ScoringConfig
from . import jsonio
from .calculator import AnnCalculator
from .device import device_record, resolve_device
from .errors import InputDataError, UnknownElementError
from .explored import FRAMES, REFERENCE_FINGERPRINTS, SUMMARY, encode_key
from .frames import read_frames
from .generate import min_distance

__all__ = ["FRAME_FORMATS", "committee_state", "read_trajectory", "record_frame", "score_frames"]

#: ASE formats a trajectory to score may have: data formats only.
FRAME_FORMATS = ("extxyz", "xyz", "traj", "xsf", "vasp-xdatcar", "lammps-dump-text", "cif", "proteindatabank")


def committee_state(atoms: Atoms, dim: int) -> dict:
    """Committee quantities at the current positions of ``atoms`` (whose calculator is the committee); NaN where the
    model cannot be evaluated, with ``finite`` and ``too_close`` saying why."""
    state = {
        "energy": math.nan,
        "energy_std": math.nan,
        "max_force_std": math.nan,
        "min_distance": math.nan,
        "forces_std": np.full(len(atoms), math.nan),
        "fingerprint": np.full(dim, math.nan),
        "finite": False,
        "too_close": False,
    }
    if not (np.isfinite(atoms.positions).all() and np.isfinite(atoms.cell.array).all()):
        return state
    try:
        atoms.get_forces()  # cached when an integrator just computed them
    except InputDataError:  # the calculator refuses atoms closer than MIN_ALLOWED_DISTANCE
        state["too_close"] = True
        return state
    results = atoms.calc.results
    state.update(
        {name: results[name] for name in ("energy", "energy_std", "max_force_std", "min_distance", "forces_std")}
    )
    state["finite"] = bool(np.isfinite(results["energy"]) and np.isfinite(results["forces"]).all())
    return state


def record_frame(atoms: Atoms, state: dict, ids: tuple[int, int], step: int, cutoff: float, start: str) -> Atoms:
    """The scored frame: structure, momenta, and committee quantities in ``info`` / ``arrays``.

    :param ids: (index of the start structure, index of the stage).
    :param start: the start structure's key, which the selection reports with each pick.
    """
    frame = Atoms(
        numbers=atoms.numbers,
        positions=atoms.positions,
        cell=atoms.cell.array,
        pbc=atoms.pbc,
        momenta=atoms.get_momenta(),
    )
    finite = bool(np.isfinite(atoms.positions).all())
    frame.info.update(
        {
            "structure": ids[0],
            "stage": ids[1],
            "step": step,
            "start": encode_key(start),
            "temperature": float(atoms.get_temperature()),
            "energy": float(state["energy"]),
            "energy_std": float(state["energy_std"]),
            "max_force_std": float(state["max_force_std"]),
            "min_distance": min_distance(atoms, cutoff) if finite else math.nan,
            # asked for here only: the calculator computes fingerprints on request, not at every MD step
            "fingerprint": np.asarray(
                atoms.calc.get_property("fingerprint", atoms) if state["finite"] else state["fingerprint"], dtype=float
            ),
            "extrapolation": float(atoms.calc.get_property("extrapolation", atoms)) if state["finite"] else math.nan,
        }
    )
    frame.arrays["forces_std"] = np.asarray(state["forces_std"], dtype=float)
    return frame


def reference_fingerprints(calc: AnnCalculator, structures: list[Atoms], source: str) -> np.ndarray:
    """(S, D) committee fingerprints of ``structures``; an element the model lacks names the structure."""
    rows = []
    for index, atoms in enumerate(structures):
        try:
            rows.append(calc.get_property("fingerprint", atoms.copy()))
        except InputDataError as exc:
            raise type(exc)(f"structure {index} of {source}: {exc}") from exc
    return np.stack(rows)


def read_trajectory(path: str | Path, format: str | None = None) -> list[Atoms]:
    """Every frame of a trajectory file in one of :data:`FRAME_FORMATS` (guessed from the name unless given).

    :raises InputDataError: an unreadable or empty file, or a format outside the list.
    """
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"trajectory file {path} does not exist")
    if path.stat().st_size == 0:  # ASE would blame the format (or the file type) instead
        raise InputDataError(f"trajectory file {path} is empty: no frames to score")
    if format is None:
        try:
            # guesses from the name and the first bytes; a Path would be taken for an open file: give a str
            format = ase.io.formats.filetype(str(path), read=True)
        except Exception as exc:
            raise InputDataError(f"cannot tell the format of {path}: give it explicitly ({exc})") from exc
    if format not in FRAME_FORMATS:
        raise InputDataError(f"{path}: format {format!r} is not one of the readable ones ({', '.join(FRAME_FORMATS)})")
    try:
        frames = ase.io.read(path, index=":", format=format)
    except Exception as exc:  # ASE raises many types for malformed files
        raise InputDataError(f"cannot read frames from {path} as {format}: {exc}") from exc
    if not frames:
        raise InputDataError(f"{path} holds no frames")
    return frames


def score_frames(config: ScoringConfig, workdir: str | Path, log=print, trusted_baselines=()) -> dict:
    """Score every frame of ``config.frames`` with the committee; write ``frames.extxyz`` (the exploration's frame
    format: stage 0, ``step`` = the frame's index in the file, ``start`` = ``config.start``), ``summary.json`` and,
    with ``reference_structures``, ``reference_fingerprints.npy``. Returns the summary.

    :raises InputDataError: an unreadable file, or a frame with an element the committee does not cover.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)  # first: a missing GPU fails before any work
    if config.threads:
        torch.set_num_threads(config.threads)
    calc = AnnCalculator(config.models, dtype=config.dtype, trusted_baselines=trusted_baselines, device=device)
    frames = read_trajectory(config.frames, config.format)
    cutoff = calc.potential.descriptor.cutoff
    # fingerprint length (a block of features per element), known without evaluating a frame: the first frame may
    # be one the committee cannot evaluate, which is recorded (NaN) like any other
    dim = int(calc.potential.feature_mean[0].numel())
    scored, unusable = [], 0
    for index, source in enumerate(frames):
        try:
            calc.potential.species(source.numbers)
        except UnknownElementError as exc:
            raise UnknownElementError(f"frame {index} of {config.frames}: {exc}") from exc
        atoms = Atoms(numbers=source.numbers, positions=source.positions, cell=source.cell.array, pbc=source.pbc)
        if source.has("momenta"):
            atoms.set_momenta(source.get_momenta())
        atoms.calc = calc
        state = committee_state(atoms, dim)
        unusable += not state["finite"]
        scored.append(record_frame(atoms, state, (0, 0), index, cutoff, config.start))
    path = workdir / FRAMES
    ase.io.write(path, scored, format="extxyz")
    if config.reference_structures:
        reference = reference_fingerprints(calc, read_frames(config.reference_structures), config.reference_structures)
        np.save(workdir / REFERENCE_FINGERPRINTS, reference)
    summary = {
        "frames": len(scored),
        "unusable": unusable,
        "source": str(config.frames),
        "stages": [{"stage": 0, "frames": len(scored)}],
        "trajectories": [],
        "device": device_record(device),
    }
    (workdir / SUMMARY).write_text(jsonio.dumps(json.loads(json.dumps(summary)), indent=2))
    log(f"scored {len(scored)} frames of {config.frames} ({unusable} the committee could not evaluate)")
    return summary
