"""``annpot.explore.base``: one exploration run, resumed from its last frame when it reaches its wall time."""

from __future__ import annotations

from ..calculations.explore import AnnExploreCalculation
from .restart_base import AnnpotRestartWorkChain

__all__ = ["CALLER_SET_INPUTS", "AnnExploreBaseWorkChain"]

#: Inputs a work chain that runs explorations sets itself (excluded when it exposes this one's inputs).
CALLER_SET_INPUTS = (
    "explore.potential",
    "explore.structures",
    "explore.config",
    "explore.reference_dataset",
    "explore.parent_folder",
)


class AnnExploreBaseWorkChain(AnnpotRestartWorkChain):
    """Explore with ``AnnExploreCalculation``; a wall-time stop resumes from the frames written so far."""

    _process_class = AnnExploreCalculation
    _namespace = "explore"
