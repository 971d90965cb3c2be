"""The file contract between the engine (``annpot train`` / ``annpot explore``) and the AiiDA plugin that runs it.

A scheduler does not keep a job's exit code, so the engine leaves :data:`STATUS_FILE` in its work folder however it
ends, with one of :data:`STATUSES`; the CalcJobs retrieve it and the parsers turn it into an exit code. The names of
the training outputs live here too, so that the engine, the CalcJobs and the parsers cannot drift apart. (The
exploration files are named in :mod:`aiida_annpot.core.explored`, which both sides already share.) Plain strings:
no torch, no AiiDA.
"""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_FILE",
    "CRASHED",
    "CURVE_FILE",
    "DIVERGED",
    "FINISHED",
    "INPUT_ERROR",
    "LABEL_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "STATUSES",
    "STATUS_FILE",
    "WALL_TIME",
]

#: ``{"exit_code": int, "status": str, "message": str}``, written when ``train`` or ``explore`` ends.
STATUS_FILE = "annpot_status.json"

FINISHED = "finished"
INPUT_ERROR = "input_error"
DIVERGED = "diverged"
WALL_TIME = "wall_time"  # state saved; a rerun with --resume continues
CRASHED = "crashed"  # anything else: a bug, reported with its exception
STATUSES = (FINISHED, INPUT_ERROR, DIVERGED, WALL_TIME, CRASHED)

#: ``annpot train``'s outputs and its resume state.
MODEL_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
CURVE_FILE = "learning_curve.csv"
CHECKPOINT_FILE = "checkpoint.pt"

#: ``annpot label``'s output: ``{"energy", "forces", "stress", "calculator", "compute_seconds", "process_seconds"}``.
LABEL_FILE = "label.json"
