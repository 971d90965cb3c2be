"""The provenance steps of a model selection: one seeded train/validation split, and the ranking of the candidates.

``split_dataset`` holds out the validation frames once, so every candidate and every training fraction is scored on
the same frames. The training split is stored shuffled: ``annpot train`` with a fixed ``validation_dataset`` takes a
prefix of the dataset for ``training_fraction`` (:class:`~aiida_annpot.core.training.Trainer`), so a prefix of the
shuffled split is a random subset, and the subsets of smaller fractions nest in those of larger ones.

``rank_models`` turns the training jobs' metrics (and the full-data potentials, whose weight shapes give the
network size) into the table of :mod:`aiida_annpot.core.model_ranking` and the chosen training configuration, so
the configuration a campaign trains with links back to the errors it was chosen by.
"""

from __future__ import annotations

import math

import numpy as np
from aiida.engine import calcfunction
from aiida.orm import ArrayData, Dict, Float, Int

from ..common.config import ModelSelectionConfig, load_config
from ..core import model_ranking as ranking
from ..data.dataset import AtomisticDataset

__all__ = ["rank_models", "split_dataset", "split_sizes", "training_frames"]


def split_sizes(n_frames: int, validation_fraction: float) -> tuple[int, int]:
    """(training, validation) frame counts of the split: at least one validation frame and, with two frames or
    more, at least one training frame (the engine's own rule, ``core.training.split_indices``)."""
    n_validation = min(n_frames - 1, max(1, round(validation_fraction * n_frames)))
    return n_frames - n_validation, n_validation


def training_frames(n_training: int, fraction: float) -> int:
    """Frames ``annpot train`` uses at ``training_fraction`` of a training set of ``n_training`` frames."""
    return max(1, math.ceil(fraction * n_training))


@calcfunction
def split_dataset(dataset: AtomisticDataset, validation_fraction: Float, seed: Int) -> dict:
    """``training`` and ``validation`` AtomisticDatasets from one seeded permutation of ``dataset``'s frames.

    The validation frames keep their original order; the training frames stay in permuted order (see the module
    docstring). Frame sources (the calculations that labelled them) are kept.

    :raises ValueError: fewer than two frames.
    """
    n_frames = dataset.n_frames
    if n_frames < 2:
        raise ValueError(f"a train/validation split needs at least 2 frames, the dataset has {n_frames}")
    order = np.random.default_rng(seed.value).permutation(n_frames)
    _, n_validation = split_sizes(n_frames, validation_fraction.value)
    frames, sources = dataset.to_frames(), dataset.sources
    parts = {"validation": np.sort(order[:n_validation]), "training": order[n_validation:]}
    return {
        name: AtomisticDataset.from_frames([frames[i] for i in index], [sources[i] for i in index])
        for name, index in parts.items()
    }


def _descriptor_settings(config: ModelSelectionConfig) -> list[dict]:
    return [descriptor.model_dump(mode="json", by_alias=True) for descriptor in config.descriptors]


def _rows(config: ModelSelectionConfig, failures: dict, results: dict) -> list[dict]:
    """Table rows before ranking, descriptor-major; each finished job's metrics or its failure per fraction."""
    networks = [network.model_dump(mode="json") for network in config.networks]
    rows = []
    for d_index, descriptor in enumerate(_descriptor_settings(config)):
        for n_index, network in enumerate(networks):
            index = d_index * len(networks) + n_index
            label = ranking.candidate_label(index)
            points = []
            for fraction in sorted(config.training_fractions):
                job = f"{label}_{ranking.fraction_label(fraction)}"
                metrics = results.get(f"metrics_{job}")
                failure = None if metrics is not None else failures.get(job, "no result")
                points.append(ranking.fraction_row(fraction, metrics.get_dict() if metrics else None, failure))
            potential = results.get(f"potential_{label}")
            size = ranking.read_network_size(potential.member_bytes(0)) if potential is not None else None
            rows.append(ranking.candidate_row(index, descriptor, network, points, size))
    return rows


@calcfunction
def rank_models(grid: Dict, training: Dict, failures: Dict, **results) -> dict:
    """The model-selection ``table``, one ``curve_<candidate>`` ArrayData per candidate and, when a candidate is
    eligible, the chosen ``config`` (``training`` + its descriptor + its network: TrainingConfig settings without
    paths).

    :param grid: the ModelSelectionConfig settings.
    :param training: the common TrainingConfig settings.
    :param failures: ``<candidate>_<fraction>`` → why that training job failed.
    :param results: ``metrics_<candidate>_<fraction>`` (Dict) of every finished job and ``potential_<candidate>``
        (AnnPotential, any finished fraction: the network size is the same) of every candidate that has one.
    """
    config = load_config(grid.get_dict(), ModelSelectionConfig)
    unknown = sorted(key for key in results if not key.startswith(("metrics_candidate_", "potential_candidate_")))
    if unknown:
        raise ValueError(f"unexpected input(s) {', '.join(unknown)}: expected metrics_<job> and potential_<candidate>")
    rows, chosen = ranking.rank_candidates(_rows(config, failures.get_dict(), results), config.tie_tolerance)
    table = {
        "rows": rows,
        "chosen": chosen,
        "chosen_candidate": None if chosen is None else rows[chosen]["candidate"],
        "fractions": sorted(config.training_fractions),
        "tie_tolerance": config.tie_tolerance,
        "score": "validation energy_rmse / best + force_rmse / best at the full training set",
    }
    outputs = {"table": Dict(table)}
    for row in rows:
        curve = ArrayData()
        for name, values in ranking.learning_curve_arrays(row).items():
            curve.set_array(name, values)
        outputs[f"curve_{row['candidate']}"] = curve
    if chosen is not None:
        outputs["config"] = Dict(
            {**training.get_dict(), "descriptor": rows[chosen]["descriptor"], "network": rows[chosen]["network"]}
        )
    return outputs
