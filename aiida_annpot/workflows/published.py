"""Names the CLI reads a campaign by, kept apart from the work chains so that ``aiida-annpot status`` and
``lineage`` need not import them: the campaign's calcfunctions import the engine's structure generation, whose
neighbour list library (vesin) imports torch when it is installed, two seconds of start-up for every command."""

from __future__ import annotations

__all__ = ["CAMPAIGN_PROCESS_TYPE", "ITERATIONS_EXTRA", "TERMINATED_STATES", "VALIDATION_PROCESS_TYPE"]

#: Extra on the campaign node with the iteration rows so far (for live status).
ITERATIONS_EXTRA = "annpot_iterations"
#: ``process_type`` of ActiveLearningWorkChain and ValidationWorkChain nodes (their entry points).
CAMPAIGN_PROCESS_TYPE = "aiida.workflows:annpot.active_learning"
VALIDATION_PROCESS_TYPE = "aiida.workflows:annpot.validation"
#: ``attributes.process_state`` of a process that will not run again.
TERMINATED_STATES = ("finished", "excepted", "killed")
