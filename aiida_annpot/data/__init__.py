"""AiiDA data plugins: labelled frames (``annpot.dataset``) and committees of model files (``annpot.potential``)."""

from .dataset import AtomisticDataset
from .potential import AnnPotential

__all__ = ["AnnPotential", "AtomisticDataset"]
