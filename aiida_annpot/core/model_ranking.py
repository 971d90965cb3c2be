"""Ranking the candidates of a model selection (Miksch et al. 2021, step 2): table rows, score, ties, diagnosis.

Pure functions on plain, JSON-ready mappings (the rows of the ``table`` output of ``annpot.model_selection``): no
aiida, no torch. One row per candidate (one descriptor × one network) holds its settings, the size of its networks
and, per training fraction, the number of training frames and the training and validation errors (energy RMSE in
meV/atom, force RMSE in eV/Å), or the failure of that training job.

Rule (:class:`~aiida_annpot.common.config.ModelSelectionConfig`): a candidate is *eligible* when every one of its
training jobs finished and its full-data validation errors are finite; a failed job makes it ineligible, and an
ineligible candidate is never chosen. Eligible candidates are scored at the full training set by
``energy_rmse / best energy_rmse + force_rmse / best force_rmse`` (validation errors, best over the eligible ones;
2.0 is the best possible score). Those within ``tie_tolerance`` (relative) of the best score tie, and the tied one
with the fewest parameters wins. Ranks: the tied group first (fewest parameters, then score, then index), then the
rest by score (then parameters, then index); the chosen candidate has rank 1 and every order is deterministic.

Diagnosis of the learning curve (eligible candidates; thresholds below):

- ``generalisation_gap``: validation / training force RMSE at 100 %; above :data:`GAP_FACTOR` it *overfits*.
- ``validation_drop``: the mean relative drop of the validation energy and force RMSE from the second-largest
  fraction to 100 %; above :data:`STILL_LEARNING` the validation error still falls and *more data would help*.
- ``underfitting``: the training force RMSE at 100 % exceeds :data:`UNDERFIT_FACTOR` times the lowest among the
  eligible candidates (the model cannot even fit its own data as well as the others; forces, with 3N components
  per frame, are the robust measure on small datasets, where a network can memorise the energies).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

__all__ = [
    "ERROR_KEYS",
    "GAP_FACTOR",
    "STILL_LEARNING",
    "UNDERFIT_FACTOR",
    "candidate_label",
    "candidate_row",
    "choose",
    "fraction_label",
    "fraction_row",
    "learning_curve_arrays",
    "network_size",
    "rank_candidates",
    "read_network_size",
]

#: Per-fraction error columns of a row: (split, metric) → key.
ERROR_KEYS = {
    ("train", "energy_rmse"): "train_energy_rmse",
    ("train", "force_rmse"): "train_force_rmse",
    ("validation", "energy_rmse"): "validation_energy_rmse",
    ("validation", "force_rmse"): "validation_force_rmse",
}
#: Validation / training force RMSE above which a candidate is called overfitting.
GAP_FACTOR = 2.0
#: Mean relative drop of the validation errors over the last learning-curve step above which more data would help.
STILL_LEARNING = 0.05
#: Training force RMSE, relative to the best eligible candidate's, above which a candidate is called underfitting.
UNDERFIT_FACTOR = 2.0
#: Floor of the best errors in the score (a zero error would divide by zero).
_TINY = 1e-12


def candidate_label(index: int) -> str:
    """``candidate_2`` for candidate 2 (descriptor-major order: index = descriptor × n_networks + network)."""
    return f"candidate_{index}"


def fraction_label(fraction: float) -> str:
    """``f050`` for a training fraction of 0.5 (the percentage, three digits)."""
    return f"f{round(100 * fraction):03d}"


def network_size(tensors: Mapping[str, np.ndarray]) -> tuple[int, int]:
    """(number of descriptor features, number of network parameters) of one model file's tensors.

    The per-element networks are stored as ``networks.weight.<i>`` (fan_in, fan_out) and ``networks.bias.<i>``;
    tensor 0 is the first layer of the first element, so its fan-in is the number of features. Parameters are
    counted over every element's network.

    :raises ValueError: no network tensors.
    """
    names = [name for name in tensors if name.startswith(("networks.weight.", "networks.bias."))]
    if "networks.weight.0" not in tensors:
        raise ValueError("no networks.weight.0 tensor: not an annpot model file")
    return int(tensors["networks.weight.0"].shape[0]), int(sum(tensors[name].size for name in names))


def read_network_size(model_file: bytes) -> tuple[int, int]:
    """:func:`network_size` of a model file's content (safetensors, read with numpy: no torch needed)."""
    from safetensors.numpy import load

    return network_size(load(model_file))


def fraction_row(fraction: float, metrics: Mapping | None = None, failure: str | None = None) -> dict:
    """One learning-curve point of a row: from a finished job's ``metrics`` (the engine's metrics.json) or the
    ``failure`` of its job (errors then None)."""
    row = {
        "fraction": fraction,
        "label": fraction_label(fraction),
        "status": "failed" if metrics is None else "finished",
        "failure": failure,
        "n_train": None,
    }
    row.update(dict.fromkeys(ERROR_KEYS.values()))
    if metrics is not None:
        row["n_train"] = int(metrics["train"]["n_structures"])
        for (split, name), key in ERROR_KEYS.items():
            value = metrics[split].get(name)
            row[key] = float(value) if _finite(value) else None  # None stays storable in an AiiDA Dict, NaN not
    return row


def candidate_row(
    index: int, descriptor: Mapping, network: Mapping, points: list[dict], size: tuple[int, int] | None = None
) -> dict:
    """A table row before ranking: settings, (features, parameters) from :func:`network_size` if known, and the
    learning-curve ``points`` (:func:`fraction_row`) in increasing fraction."""
    n_features, n_parameters = size if size is not None else (None, None)
    return {
        "index": index,
        "candidate": candidate_label(index),
        "descriptor": dict(descriptor),
        "network": dict(network),
        "n_features": n_features,
        "n_parameters": n_parameters,
        "fractions": sorted(points, key=lambda point: point["fraction"]),
    }


def learning_curve_arrays(row: Mapping) -> dict[str, np.ndarray]:
    """A row's learning curve as arrays over the fractions (NaN where a job failed): ``fraction``, ``n_train``
    and the four error columns of :data:`ERROR_KEYS`."""
    points = row["fractions"]
    arrays = {
        "fraction": np.array([p["fraction"] for p in points], dtype=float),
        "n_train": np.array([np.nan if p["n_train"] is None else p["n_train"] for p in points], dtype=float),
    }
    for key in ERROR_KEYS.values():
        arrays[key] = np.array([np.nan if p[key] is None else p[key] for p in points], dtype=float)
    return arrays


def _full(row: Mapping) -> Mapping:
    return max(row["fractions"], key=lambda point: point["fraction"])


def _finite(*values) -> bool:
    return all(value is not None and math.isfinite(value) for value in values)


def _ineligible_reason(row: Mapping) -> str | None:
    failed = [point for point in row["fractions"] if point["status"] != "finished"]
    if failed:
        return "; ".join(f"{point['label']}: {point['failure']}" for point in failed)
    full = _full(row)
    if not _finite(full["validation_energy_rmse"], full["validation_force_rmse"], full["train_force_rmse"]):
        return f"no finite validation energy and force error or training force error at {full['label']}"
    return None


def _diagnose(row: Mapping, best_train_force: float) -> dict:
    points = sorted(row["fractions"], key=lambda point: point["fraction"])
    full = points[-1]
    gap = full["validation_force_rmse"] / max(full["train_force_rmse"], _TINY)
    drop = None
    previous = points[-2] if len(points) > 1 else None
    if previous is not None and _finite(previous["validation_energy_rmse"], previous["validation_force_rmse"]):
        ratios = [full[key] / max(previous[key], _TINY) for key in ("validation_energy_rmse", "validation_force_rmse")]
        drop = 1.0 - sum(ratios) / len(ratios)
    underfit_ratio = full["train_force_rmse"] / max(best_train_force, _TINY)
    diagnosis = {
        "generalisation_gap": gap,
        "overfitting": gap > GAP_FACTOR,
        "validation_drop": drop,
        "more_data_would_help": drop is not None and drop > STILL_LEARNING,
        "underfitting": underfit_ratio > UNDERFIT_FACTOR,
    }
    notes = []
    if diagnosis["underfitting"]:
        notes.append(f"underfits (training force error {underfit_ratio:.1f}x the best)")
    if diagnosis["overfitting"]:
        notes.append(f"overfits (validation/training force error {gap:.1f})")
    if diagnosis["more_data_would_help"]:
        notes.append(
            f"more data would help (validation error still falls {100 * drop:.0f}% "
            f"from {points[-2]['label']} to {full['label']})"
        )
    diagnosis["summary"] = "; ".join(notes) or "converged learning curve, no sign of under- or overfitting"
    return diagnosis


def rank_candidates(rows: list[Mapping], tie_tolerance: float) -> tuple[list[dict], int | None]:
    """Eligibility, score, rank and diagnosis of every row (see the module docstring for the rule).

    :param rows: one mapping per candidate with ``index``, ``n_parameters`` and ``fractions`` (see
        :func:`fraction_row`); not modified.
    :returns: new rows with ``eligible``, ``ineligible_reason``, ``score``, ``rank`` and ``diagnosis`` set (None
        where ineligible), and the ``index`` of the chosen row (None if no row is eligible).
    """
    ranked = [{**row, "eligible": False, "score": None, "rank": None, "diagnosis": None} for row in rows]
    for row in ranked:
        row["ineligible_reason"] = _ineligible_reason(row)
        row["eligible"] = row["ineligible_reason"] is None
    eligible = [row for row in ranked if row["eligible"]]
    if not eligible:
        return ranked, None
    best_energy = max(min(_full(row)["validation_energy_rmse"] for row in eligible), _TINY)
    best_force = max(min(_full(row)["validation_force_rmse"] for row in eligible), _TINY)
    best_train_force = min(_full(row)["train_force_rmse"] for row in eligible)
    for row in eligible:
        full = _full(row)
        row["score"] = full["validation_energy_rmse"] / best_energy + full["validation_force_rmse"] / best_force
        row["diagnosis"] = _diagnose(row, best_train_force)
    best_score = min(row["score"] for row in eligible)
    for position, row in enumerate(sorted(eligible, key=lambda row: _order(row, best_score, tie_tolerance)), 1):
        row["rank"] = position
    return ranked, choose(ranked)


def _order(row: Mapping, best_score: float, tie_tolerance: float) -> tuple:
    size = row["n_parameters"] if row["n_parameters"] is not None else math.inf
    if row["score"] <= best_score * (1.0 + tie_tolerance):
        return (0, size, row["score"], row["index"])
    return (1, row["score"], size, row["index"])


def choose(rows: list[Mapping]) -> int | None:
    """The ``index`` of the row ranked first (None when no row has a rank)."""
    first = [row for row in rows if row.get("rank") == 1]
    return first[0]["index"] if first else None
