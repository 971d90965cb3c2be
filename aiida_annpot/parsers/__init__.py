"""Thin parsers of the ``annpot`` CalcJobs; the file reading itself is in :mod:`.readers` (no AiiDA needed)."""

from .explore import AnnExploreParser
from .train import AnnTrainParser

__all__ = ["AnnExploreParser", "AnnTrainParser"]
