"""Per-element statistics of training features, accumulated chunk by chunk: the standardisation (mean and standard
deviation) and the ranges behind extrapolation grades.

Chunks are merged with the pairwise formula of Chan, Golub & LeVeque (1979) in float64, which stays accurate however
many chunks there are. A single chunk gives exactly torch's ``mean`` and ``std`` of all the features (the state kept
is the standard deviation, not the variance, whose square root can differ from torch's ``std`` in the last bit), so
a feature set held in memory (one chunk) standardises bit for bit as it did before features could be streamed.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class FeatureStatistics:
    """Count, mean, population standard deviation (float64) and range (in the features' dtype) of every feature, per
    element.

    :param n_elements: number of species indices.
    :param n_features: feature columns D.
    """

    def __init__(self, n_elements: int, n_features: int, dtype: torch.dtype):
        shape = (n_elements, n_features)
        self.count = torch.zeros(n_elements, dtype=torch.long)
        self.mean = torch.zeros(shape, dtype=torch.float64)
        self.std = torch.zeros(shape, dtype=torch.float64)
        self.minimum = torch.full(shape, torch.inf, dtype=dtype)
        self.maximum = torch.full(shape, -torch.inf, dtype=dtype)

    @classmethod
    def of(cls, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], n_elements: int, n_features: int, dtype):
        """Statistics of the ``(species, features)`` chunks, e.g. a feature set's ``feature_chunks()``."""
        statistics = cls(n_elements, n_features, dtype)
        for species, features in chunks:
            statistics.add(species, features)
        return statistics

    def add(self, species: torch.Tensor, features: torch.Tensor) -> None:
        """Merge one chunk: ``species`` (n,) element indices, ``features`` (n, D)."""
        index = species[:, None].expand_as(features)
        ranged = features.to(self.minimum.dtype)
        self.minimum = self.minimum.scatter_reduce(0, index, ranged, "amin")  # include_self: merged with earlier chunks
        self.maximum = self.maximum.scatter_reduce(0, index, ranged, "amax")
        values = features.double()
        for element in range(self.count.shape[0]):
            group = values[species == element]
            n_b = group.shape[0]
            if n_b == 0:
                continue
            mean_b, std_b = group.mean(0), group.std(0, unbiased=False)
            n_a = int(self.count[element])
            if n_a == 0:
                self.mean[element], self.std[element] = mean_b, std_b
            else:
                n = n_a + n_b
                delta = mean_b - self.mean[element]
                variance = (n_a * self.std[element] ** 2 + n_b * std_b**2) / n + delta**2 * (n_a * n_b / n**2)
                self.mean[element] += delta * (n_b / n)
                self.std[element] = variance.sqrt()
            self.count[element] = n_a + n_b
