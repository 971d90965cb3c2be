"""``annpot.ase_label``: one structure labelled by a registered ASE calculator (``annpot label``).

The CalcJob behind the ``ase`` labeller (:mod:`aiida_annpot.workflows.labelling.ase`): benchmarks and workflow tests
pay AiiDA's whole cost per label (upload, scheduler, polling, retrieval, parsing) without DFT's. Not a physical
reference. The parser gives the label itself, with this calculation as its ``calculation_uuid``.
"""

from __future__ import annotations

from aiida.orm import Dict, StructureData

from ..common.config import LabelConfig
from ..common.contract import LABEL_FILE
from ..data.label import LabelData
from .base import AnnpotCalculation, validate_config_dict

__all__ = ["AseLabelCalculation"]

STRUCTURE_FILE = "structure.json"  # ASE's JSON: positions to the last bit (extxyz keeps 8 decimals)


def validate_label_config(value: Dict, _) -> str | None:
    """The settings (calculator and parameters) must form a LabelConfig once the calculation adds the structure."""
    return validate_config_dict(value, LabelConfig, ("structure",), {"structure": STRUCTURE_FILE})


class AseLabelCalculation(AnnpotCalculation):
    """Energy, forces and stress of one structure from a registered ASE calculator (``annpot label``)."""

    COMMAND = "label"
    CONFIG_FILE = "label.yaml"
    RETRIEVE = (LABEL_FILE,)

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.input("structure", valid_type=StructureData, help="The structure to label.")
        spec.input(
            "config",
            valid_type=Dict,
            validator=validate_label_config,
            help="LabelConfig settings without the structure path: a registered calculator name (emt, lj, morse, "
            "zbl, ...) and its parameters.",
        )
        spec.inputs["metadata"]["options"]["parser_name"].default = "annpot.ase_label"
        spec.output("label", valid_type=LabelData, help="Energy, forces and stress in eV, eV/Å, eV/Å³ (ASE sign).")

    def engine_config(self, folder) -> dict:
        self.inputs.structure.get_ase().write(folder.get_abs_path(STRUCTURE_FILE), format="json")
        return {**self.inputs.config.get_dict(), "structure": STRUCTURE_FILE}
