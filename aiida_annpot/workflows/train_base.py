"""``annpot.train.base``: one training run plus the restarts that rescue it.

Wall time reached → resume from the checkpoint in the previous run's folder (see :mod:`.restart_base`). Diverged
loss → lower the learning rate by ``defaults.learning_rate_factor`` and resume from the last checkpoint (or start
over when none was written).
"""

from __future__ import annotations

from aiida.common import AttributeDict
from aiida.engine import ProcessHandlerReport, process_handler
from aiida.orm import Dict

from ..calculations.train import AnnTrainCalculation
from .restart_base import AnnpotRestartWorkChain

__all__ = ["AnnTrainBaseWorkChain"]


class AnnTrainBaseWorkChain(AnnpotRestartWorkChain):
    """Train one model with ``AnnTrainCalculation``, restarting after wall time and divergence."""

    _process_class = AnnTrainCalculation
    _namespace = "train"
    defaults = AttributeDict({"learning_rate_factor": 0.3})

    @process_handler(priority=400, exit_codes=[AnnTrainCalculation.exit_codes.ERROR_TRAINING_DIVERGED])
    def handle_diverged(self, node):
        """Lower the learning rate and resume from the last checkpoint (from scratch if there is none)."""
        config = self.ctx.inputs.config.get_dict()
        rate = config.get("learning_rate", 3e-3) * self.defaults.learning_rate_factor
        config["learning_rate"] = rate
        config["min_learning_rate"] = min(config.get("min_learning_rate", 1e-5), rate)
        self.ctx.inputs.config = Dict(config)
        self.ctx.inputs.parent_folder = node.outputs.remote_folder
        self.report_error_handled(node, f"lowering the learning rate to {rate:.3g} and resuming")
        return ProcessHandlerReport(do_break=True)
