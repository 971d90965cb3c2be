"""Pure readers of the files ``annpot train``, ``explore`` and ``label`` leave behind (no AiiDA, no torch).

Each takes the file's text and returns plain Python / numpy data, or raises :class:`OutputFileError` saying what is
wrong, so parsers only map results to output nodes and errors to exit codes.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from ..common import contract
from ..core.jsonio import finite_or_none  # torch-free

__all__ = ["OutputFileError", "read_label_file", "read_learning_curve", "read_metrics", "read_status", "read_summary"]

#: Outcome names the engine writes to its status file.
STATUSES = contract.STATUSES


class OutputFileError(ValueError):
    """An output file that exists but cannot be used."""


def _json_mapping(text: str, what: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputFileError(f"{what} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise OutputFileError(f"{what} holds {type(data).__name__}, not a mapping")
    return data


def read_status(text: str) -> dict:
    """The engine's status file: ``{"exit_code": int, "status": one of STATUSES, "message": str}``."""
    status = _json_mapping(text, "status file")
    if status.get("status") not in STATUSES or not isinstance(status.get("exit_code"), int):
        raise OutputFileError(f"status file has no valid status and exit code: {status}")
    status.setdefault("message", "")
    return status


def read_metrics(text: str) -> dict:
    """``metrics.json`` of a training run; non-finite numbers (no stress labels) become None so AiiDA can store it."""
    metrics = _json_mapping(text, "metrics.json")
    if not isinstance(metrics.get("validation"), dict):
        raise OutputFileError("metrics.json has no validation errors")
    return finite_or_none(metrics)


def read_learning_curve(text: str) -> dict[str, np.ndarray]:
    """``learning_curve.csv`` as one float array per column (``epoch``, ``validation_force_rmse``, …)."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise OutputFileError("learning_curve.csv has no epochs")
    try:
        return {column: np.array([float(row[column]) for row in rows]) for column in rows[0]}
    except (TypeError, ValueError) as exc:
        raise OutputFileError(f"learning_curve.csv has a non-numeric entry ({exc})") from exc


def read_summary(text: str) -> dict:
    """``summary.json`` of an exploration or a scoring: frame counts overall and per stage, trajectory ends."""
    summary = _json_mapping(text, "summary.json")
    for key in ("frames", "stages", "trajectories"):
        if key not in summary:
            raise OutputFileError(f"summary.json lacks {key!r}")
    return finite_or_none(summary)


def read_label_file(text: str) -> dict:
    """``label.json`` of ``annpot label``: ``energy`` (float or None), ``forces`` (N, 3) array, ``stress`` (3, 3)
    array or None, and the timings ``compute_seconds`` and ``process_seconds``."""
    data = _json_mapping(text, "label.json")
    try:
        forces = np.asarray(data["forces"], dtype=float).reshape(-1, 3)
        stress = None if data.get("stress") is None else np.asarray(data["stress"], dtype=float).reshape(3, 3)
        energy = None if data.get("energy") is None else float(data["energy"])
    except (KeyError, TypeError, ValueError) as exc:
        raise OutputFileError(f"label.json has no usable energy, forces and stress ({exc!r})") from exc
    timings = {key: data.get(key) for key in ("compute_seconds", "process_seconds")}
    return {"energy": energy, "forces": forces, "stress": stress, **timings}
