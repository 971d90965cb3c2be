"""Errors the engine raises for bad input, and the exit codes ``annpot`` maps them to (defined in
:mod:`aiida_annpot.common.errors`, which the schema layer shares)."""

from __future__ import annotations

from ..common.errors import (
    EXIT_DIVERGED,
    EXIT_INPUT_ERROR,
    EXIT_OK,
    EXIT_WALL_TIME,
    AenetFormatError,
    AnnpotError,
    DeviceUnavailableError,
    ElementMismatchError,
    InputDataError,
    ModelFileError,
    TrainingDivergedError,
    UnknownElementError,
)

__all__ = [
    "EXIT_DIVERGED",
    "EXIT_INPUT_ERROR",
    "EXIT_OK",
    "EXIT_WALL_TIME",
    "AenetFormatError",
    "AnnpotError",
    "DeviceUnavailableError",
    "ElementMismatchError",
    "InputDataError",
    "ModelFileError",
    "TrainingDivergedError",
    "UnknownElementError",
]
