"""AiiDA data plugins: labelled frames (``annpot.dataset``), committees of model files (``annpot.potential``) and one
structure's reference label (``annpot.label``)."""

from .dataset import AtomisticDataset
from .label import LabelData
from .potential import AnnPotential

__all__ = ["AnnPotential", "AtomisticDataset", "LabelData"]
