"""Errors the engine raises for bad input, and the process exit codes ``annpot`` maps them to.

They live in the schema layer because configurations are checked on both sides: the AiiDA plugin refuses bad input
with the same errors the engine would raise, without importing the engine.
"""

from __future__ import annotations

# Exit codes of the ``annpot`` command. 75 is EX_TEMPFAIL: "try again", which is what a wall-time stop means.
EXIT_OK = 0
EXIT_INPUT_ERROR = 2
EXIT_WALL_TIME = 75
EXIT_DIVERGED = 3


class AnnpotError(Exception):
    """Base class of the engine's own errors."""

    exit_code = EXIT_INPUT_ERROR


class InputDataError(AnnpotError, ValueError):
    """Structures or labels that cannot be used: empty set, NaN labels, overlapping atoms, degenerate cell."""


class UnknownElementError(InputDataError):
    """A structure holds an element the model was not trained for."""


class ElementMismatchError(InputDataError):
    """Descriptor function sets (e.g. from aenet setup files) whose elements disagree with the model's or the data's."""


class AenetFormatError(InputDataError):
    """A malformed aenet file (XSF structure, fingerprint setup, generate.in, train.in); the message names the file
    and the line."""


class ModelFileError(AnnpotError):
    """A model file that is missing, corrupt, or does not match the others of a committee."""


class DeviceUnavailableError(AnnpotError):
    """The configuration asks for a device (``device: cuda``) that this machine does not have."""


class TrainingDivergedError(AnnpotError):
    """The loss became NaN or infinite."""

    exit_code = EXIT_DIVERGED
