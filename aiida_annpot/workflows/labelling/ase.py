"""A registered ASE calculator as a labeller (``annpot.labelling.ase``): for benchmarks and workflow tests only.

EMT, Lennard-Jones, Morse or ZBL stand in for DFT so that a campaign of thousands of labels measures what AiiDA costs
per label, not what DFT costs: each label is a real CalcJob (:class:`~aiida_annpot.calculations.ase_label.
AseLabelCalculation`, ``annpot label`` on the code's computer), with upload, scheduler, retrieval and parsing, and
yields the contract's LabelData like the Quantum ESPRESSO labeller. Its numbers are not physics: a potential
trained on EMT reproduces EMT. The calculator is a registered name (:mod:`aiida_annpot.common.baselines`), never an
import path, so a campaign file cannot choose code to import. The code is the ``annpot`` command.
"""

from __future__ import annotations

from aiida.engine import ToContext
from aiida.orm import StructureData
from aiida.plugins import CalculationFactory

from ...common.config import AseLabelSettings
from .base import LabelWorkChain

__all__ = ["AseLabelWorkChain"]

AseLabelCalculation = CalculationFactory("annpot.ase_label")


class AseLabelWorkChain(LabelWorkChain):
    """Label one structure with a registered ASE calculator through one ``annpot label`` CalcJob."""

    name = "ase"
    settings_model = AseLabelSettings
    protocol_model = AseLabelSettings
    calc_job_plugins = ("annpot.train", "annpot.explore", "annpot.ase_label")  # the annpot code

    @classmethod
    def define(cls, spec):
        super().define(spec)
        spec.outline(cls.run_calculation, cls.inspect_calculation)

    @classmethod
    def settings_from_protocol(cls, entries: dict, code, structure: StructureData) -> dict:
        """The protocol's ``reference.ase`` entries as they are: ``calculator`` (required) and ``parameters``."""
        return AseLabelSettings.model_validate(entries or {}).model_dump()

    def run_calculation(self):
        options = {"resources": {"num_machines": 1, "num_mpiprocs_per_machine": 1}, **self.inputs.options.get_dict()}
        inputs = {
            "code": self.inputs.code,
            "structure": self.inputs.structure,
            "config": self.inputs.settings,
            "metadata": {"options": options, "call_link_label": "calculation"},
        }
        return ToContext(calculation=self.submit(AseLabelCalculation, **inputs))

    def inspect_calculation(self):
        node = self.ctx.calculation
        if not node.is_finished_ok:
            message = f"exit status {node.exit_status}: {node.exit_message}"
            process = {"process": node.process_label, "pk": node.pk}
            return self.exit_codes.ERROR_CALCULATION_FAILED.format(message=message, **process)
        self.out("label", node.outputs.label)
        return None
