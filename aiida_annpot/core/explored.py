"""Reading what ``annpot explore`` wrote, without torch: the sampled frames and their fingerprints.

Kept apart from :mod:`aiida_annpot.core.exploration` (which needs torch for MD) so that parsers and the AiiDA
selection step can read exploration results on a machine with numpy and ASE only.
"""

from __future__ import annotations

import math
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

__all__ = ["FRAMES", "PROGRESS", "REFERENCE_FINGERPRINTS", "SELECTED", "SUMMARY", "read_explored_frames"]

FRAMES = "frames.extxyz"
PROGRESS = "progress.json"
SUMMARY = "summary.json"
SELECTED = "selected.extxyz"
#: (R, D) fingerprints of the reference (training) structures, written when the configuration names them.
REFERENCE_FINGERPRINTS = "reference_fingerprints.npy"


def read_explored_frames(path: str | Path) -> tuple[list[Atoms], np.ndarray]:
    """Frames of a ``frames.extxyz`` and their (F, D) fingerprints (shape (0, 0) for an empty file).

    ASE's extxyz reader turns ``energy`` into a calculator result; it is moved back to ``info`` and the calculator
    dropped, so committee predictions are never mistaken for reference labels. ``info["extrapolation"]`` is a
    float in every frame: NaN (unknown, never out of range) in files written before grades were recorded.
    """
    path = Path(path)
    frames = ase.io.read(path, index=":", format="extxyz") if path.stat().st_size else []
    for frame in frames:
        if frame.calc is not None:
            frame.info["energy"] = float(frame.calc.results.get("energy", math.nan))
            frame.calc = None
        frame.info["fingerprint"] = np.atleast_1d(np.asarray(frame.info["fingerprint"], dtype=float))
        frame.info["extrapolation"] = float(frame.info.get("extrapolation", math.nan))
    fingerprints = np.stack([f.info["fingerprint"] for f in frames]) if frames else np.empty((0, 0))
    return frames, fingerprints
