"""Parser of ``annpot.train``: the model file becomes an AnnPotential, plus metrics and the learning curve."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiida.engine import ExitCode
from aiida.orm import ArrayData, Dict

from ..data.potential import AnnPotential
from .base import AnnpotParser
from .readers import OutputFileError, read_learning_curve, read_metrics

MODEL = "model.safetensors"


class AnnTrainParser(AnnpotParser):
    """Outputs ``potential``, ``metrics`` and ``learning_curve`` of a finished training run, and of one stopped at
    its wall time (the best model so far, beside the exit code that makes the restart wrapper resume it)."""

    def parse_partial(self) -> None:
        if MODEL in self.retrieved.base.repository.list_object_names():
            self.parse_finished()

    def parse_finished(self) -> ExitCode | None:
        codes = self.exit_codes
        try:
            metrics = read_metrics(self.read_text("metrics.json"))
            curve = read_learning_curve(self.read_text("learning_curve.csv"))
        except FileNotFoundError as exc:
            return codes.ERROR_MISSING_OUTPUT.format(filename=Path(exc.filename or str(exc)).name)
        except OutputFileError as exc:
            return codes.ERROR_CORRUPT_OUTPUT.format(filename="metrics.json / learning_curve.csv", exception=exc)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / MODEL
            try:
                path.write_bytes(self.retrieved.base.repository.get_object_content(MODEL, mode="rb"))
            except FileNotFoundError:
                return codes.ERROR_MISSING_OUTPUT.format(filename=MODEL)
            try:
                potential = AnnPotential.from_files([path])
            except Exception as exc:  # the engine's ModelFileError, or a torch/safetensors error on a corrupt file
                return codes.ERROR_CORRUPT_OUTPUT.format(filename=MODEL, exception=exc)
        learning_curve = ArrayData()
        for column, values in curve.items():
            learning_curve.set_array(column, values)
        self.out("potential", potential)
        self.out("metrics", Dict(metrics))
        self.out("learning_curve", learning_curve)
        return None
