"""Parser of ``annpot.train``: the model file becomes an AnnPotential, plus metrics and the learning curve."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aiida.engine import ExitCode
from aiida.orm import ArrayData, Dict

from ..common.contract import CURVE_FILE, METRICS_FILE, MODEL_FILE
from ..data.potential import AnnPotential
from .base import AnnpotParser
from .readers import OutputFileError, read_learning_curve, read_metrics


class AnnTrainParser(AnnpotParser):
    """Outputs ``potential``, ``metrics`` and ``learning_curve`` of a finished training run, and of one stopped at
    its wall time (the best model so far, beside the exit code that makes the restart wrapper resume it)."""

    def parse_partial(self) -> None:
        if MODEL_FILE in self.retrieved.base.repository.list_object_names():
            self.parse_finished()

    def parse_finished(self) -> ExitCode | None:
        codes = self.exit_codes
        try:
            metrics = read_metrics(self.read_text(METRICS_FILE))
            curve = read_learning_curve(self.read_text(CURVE_FILE))
        except FileNotFoundError as exc:
            return codes.ERROR_MISSING_OUTPUT.format(filename=Path(exc.filename or str(exc)).name)
        except OutputFileError as exc:
            return codes.ERROR_CORRUPT_OUTPUT.format(filename=f"{METRICS_FILE} / {CURVE_FILE}", exception=exc)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / MODEL_FILE
            try:
                path.write_bytes(self.retrieved.base.repository.get_object_content(MODEL_FILE, mode="rb"))
            except FileNotFoundError:
                return codes.ERROR_MISSING_OUTPUT.format(filename=MODEL_FILE)
            try:
                potential = AnnPotential.from_files([path])
            except Exception as exc:  # the engine's ModelFileError, or a torch/safetensors error on a corrupt file
                return codes.ERROR_CORRUPT_OUTPUT.format(filename=MODEL_FILE, exception=exc)
        learning_curve = ArrayData()
        for column, values in curve.items():
            learning_curve.set_array(column, values)
        self.out("potential", potential)
        self.out("metrics", Dict(metrics))
        self.out("learning_curve", learning_curve)
        return None
