"""Parser of ``annpot.ase_label``: the label file becomes the LabelData of the calculation that computed it."""

from __future__ import annotations

from aiida.engine import ExitCode

from ..common.contract import LABEL_FILE
from ..data.label import LabelData
from .base import AnnpotParser
from .readers import OutputFileError, read_label_file


class AseLabelParser(AnnpotParser):
    """Output ``label`` (energy eV, forces eV/Å, stress eV/Å³ in ASE's sign) of a finished ``annpot label``."""

    def parse_finished(self) -> ExitCode | None:
        codes = self.exit_codes
        try:
            result = read_label_file(self.read_text(LABEL_FILE))
            n_atoms = len(self.node.inputs.structure.sites)
            if result["forces"].shape[0] != n_atoms:
                raise OutputFileError(f"forces on {result['forces'].shape[0]} atoms, the structure has {n_atoms}")
            label = LabelData.build(
                result["energy"], result["forces"], result["stress"], calculation_uuid=self.node.uuid, code="ase"
            )
        except FileNotFoundError:
            return codes.ERROR_MISSING_OUTPUT.format(filename=LABEL_FILE)
        except ValueError as exc:  # OutputFileError, or LabelData refusing a non-finite value
            return codes.ERROR_CORRUPT_OUTPUT.format(filename=LABEL_FILE, exception=exc)
        self.out("label", label)
        return None
