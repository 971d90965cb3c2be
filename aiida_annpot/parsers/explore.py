"""Parser of ``annpot.explore``: the frames file, the summary and the reference fingerprints."""

from __future__ import annotations

import io

import numpy as np
from aiida.engine import ExitCode
from aiida.orm import ArrayData, Dict, SinglefileData

from ..core.explored import FRAMES, REFERENCE_FINGERPRINTS, SUMMARY
from .base import AnnpotParser
from .readers import OutputFileError, read_summary


class AnnExploreParser(AnnpotParser):
    """Outputs ``frames``, ``summary`` and, when a reference set was given, ``reference_fingerprints``."""

    def parse_finished(self) -> ExitCode | None:
        codes = self.exit_codes
        repository = self.retrieved.base.repository
        try:
            summary = read_summary(self.read_text(SUMMARY))
            frames = repository.get_object_content(FRAMES, mode="rb")
        except FileNotFoundError as exc:
            return codes.ERROR_MISSING_OUTPUT.format(filename=getattr(exc, "filename", None) or str(exc))
        except OutputFileError as exc:
            return codes.ERROR_CORRUPT_OUTPUT.format(filename=SUMMARY, exception=exc)
        self.out("frames", SinglefileData(io.BytesIO(frames), filename=FRAMES))
        self.out("summary", Dict(summary))
        if REFERENCE_FINGERPRINTS in repository.list_object_names():
            with repository.open(REFERENCE_FINGERPRINTS, mode="rb") as handle:
                try:
                    fingerprints = np.load(handle, allow_pickle=False)
                except ValueError as exc:
                    return codes.ERROR_CORRUPT_OUTPUT.format(filename=REFERENCE_FINGERPRINTS, exception=exc)
            array = ArrayData()
            array.set_array("fingerprints", fingerprints)
            self.out("reference_fingerprints", array)
        return None
