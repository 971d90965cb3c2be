"""The parser base class: checks the engine's status file and turns it into an exit code."""

from __future__ import annotations

from aiida.engine import ExitCode
from aiida.parsers import Parser

from ..common import contract
from ..common.contract import STATUS_FILE
from .readers import OutputFileError, read_status


class AnnpotParser(Parser):
    """Maps the status to exit codes; subclasses implement :meth:`parse_finished` for a finished run."""

    def parse(self, **kwargs) -> ExitCode | None:
        codes = self.exit_codes
        try:
            status = read_status(self.retrieved.base.repository.get_object_content(STATUS_FILE))
        except FileNotFoundError:
            return codes.ERROR_MISSING_STATUS
        except OutputFileError as exc:
            return codes.ERROR_CORRUPT_OUTPUT.format(filename=STATUS_FILE, exception=exc)
        outcome = status["status"]
        if outcome == contract.FINISHED:
            return self.parse_finished()
        if outcome == contract.WALL_TIME:  # what the run left so far is attached (a training run's best model)
            self.parse_partial()
            return codes.ERROR_WALL_TIME_REACHED
        if outcome == contract.INPUT_ERROR:
            return codes.ERROR_INPUT_REJECTED.format(message=status["message"])
        if outcome == contract.DIVERGED and "ERROR_TRAINING_DIVERGED" in codes:
            return codes.ERROR_TRAINING_DIVERGED.format(message=status["message"])
        return codes.ERROR_ENGINE_CRASHED.format(message=status["message"] or f"exit code {status['exit_code']}")

    def parse_finished(self) -> ExitCode | None:
        raise NotImplementedError

    def parse_partial(self) -> None:
        """Outputs of a run stopped at its wall time, where it leaves usable ones (default: none)."""

    def read_text(self, filename: str) -> str:
        """Content of a retrieved file; :class:`FileNotFoundError` when it is missing."""
        return self.retrieved.base.repository.get_object_content(filename)
