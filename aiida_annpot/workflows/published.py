"""Names the CLI reads a campaign by, kept apart from the work chains so that ``aiida-annpot status`` and
``lineage`` need not import them: importing the campaign work chain (aiida-quantumespresso, the labellers, the
engine's structure generation) takes about 1.2 s, and took 2 s more while vesin, which imports torch, loaded with
the structure generation."""

from __future__ import annotations

__all__ = [
    "CAMPAIGN_PROCESS_TYPE",
    "ITERATIONS_EXTRA",
    "TERMINATED_STATES",
    "VALIDATION_PROCESS_TYPE",
    "not_terminated",
    "paused",
]

#: Extra on the campaign node with the iteration rows so far (for live status).
ITERATIONS_EXTRA = "annpot_iterations"
#: ``process_type`` of ActiveLearningWorkChain and ValidationWorkChain nodes (their entry points).
CAMPAIGN_PROCESS_TYPE = "aiida.workflows:annpot.active_learning"
VALIDATION_PROCESS_TYPE = "aiida.workflows:annpot.validation"
#: ``attributes.process_state`` of a process that will not run again.
TERMINATED_STATES = ("finished", "excepted", "killed")


def not_terminated() -> dict:
    """QueryBuilder filters of the processes that may still run (a new dict: QueryBuilder may keep what it is given)."""
    return {"attributes.process_state": {"!in": list(TERMINATED_STATES)}}


def paused() -> dict:
    """QueryBuilder filters of the paused processes that may still run."""
    return {**not_terminated(), "attributes.paused": True}
