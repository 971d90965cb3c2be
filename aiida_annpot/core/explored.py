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

__all__ = [
    "FRAMES",
    "PROGRESS",
    "REFERENCE_FINGERPRINTS",
    "SELECTED",
    "SUMMARY",
    "decode_key",
    "encode_key",
    "read_explored_frames",
]

FRAMES = "frames.extxyz"
PROGRESS = "progress.json"
SUMMARY = "summary.json"
SELECTED = "selected.extxyz"
#: (R, D) fingerprints of the reference (training) structures, written when the configuration names them.
REFERENCE_FINGERPRINTS = "reference_fingerprints.npy"
#: Start-structure keys are written to extxyz with this prefix: ASE's reader turns a bare ``01`` into 1, ``T`` into
#: True and ``1e3`` into 1000.0, and a pick must name its start exactly.
_KEY_PREFIX = "key:"


def encode_key(key) -> str:
    """A start key as written to an extxyz ``info`` field (read back unchanged by :func:`decode_key`)."""
    return f"{_KEY_PREFIX}{key}"


def decode_key(value) -> str:
    """The start key of an extxyz ``info`` value (written by :func:`encode_key`, or bare by older files)."""
    text = str(value)
    return text[len(_KEY_PREFIX) :] if text.startswith(_KEY_PREFIX) else text


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
        if "start" in frame.info:
            frame.info["start"] = decode_key(frame.info["start"])
    fingerprints = np.stack([f.info["fingerprint"] for f in frames]) if frames else np.empty((0, 0))
    return frames, fingerprints
