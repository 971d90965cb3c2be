"""CalcJobs that run the ``annpot`` engine on any AiiDA computer: training and exploration."""

from .explore import AnnExploreCalculation
from .train import AnnTrainCalculation

__all__ = ["AnnExploreCalculation", "AnnTrainCalculation"]
