"""Model-selection ranking: network size from model files, score, ties to the smaller model, failed candidates
never chosen, deterministic order, learning-curve diagnosis."""

from __future__ import annotations

import copy
import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from aiida_annpot.core import model_ranking as ranking

FRACTIONS = (0.25, 0.5, 1.0)


def metrics(train_e: float, train_f: float, val_e: float, val_f: float, n_train: int = 12) -> dict:
    """The part of the engine's metrics.json the ranking reads (plus a non-finite stress error, as without stress
    labels, stored as None)."""
    return {
        "train": {"energy_rmse": train_e, "force_rmse": train_f, "stress_rmse": None, "n_structures": n_train},
        "validation": {"energy_rmse": val_e, "force_rmse": val_f, "stress_rmse": None, "n_structures": 3},
    }


def row(index: int, full: tuple, n_parameters: int = 100, curve: float = 1.0, failed: dict | None = None) -> dict:
    """A candidate whose errors at 100 % are ``full`` = (train E, train F, validation E, validation F); the smaller
    fractions have validation errors ``curve`` ** k times larger (k = 1, 2) and training errors 0.8 times."""
    failed = failed or {}
    points = []
    for step, fraction in enumerate(sorted(FRACTIONS, reverse=True)):
        if fraction in failed:
            points.append(ranking.fraction_row(fraction, failure=failed[fraction]))
            continue
        scale, train_scale = curve**step, 0.8**step
        te, tf, ve, vf = full
        n_train = math.ceil(12 * fraction)
        points.append(
            ranking.fraction_row(fraction, metrics(te * train_scale, tf * train_scale, ve * scale, vf * scale, n_train))
        )
    descriptor = {"type": "chebyshev", "radial_order": 4 + index}
    return ranking.candidate_row(index, descriptor, {"hidden": [8], "activation": "tanh"}, points, (20, n_parameters))


def by_index(rows: list[dict]) -> dict[int, dict]:
    return {r["index"]: r for r in rows}


def test_labels():
    assert ranking.candidate_label(2) == "candidate_2"
    assert [ranking.fraction_label(f) for f in (0.05, 0.25, 0.5, 1.0)] == ["f005", "f025", "f050", "f100"]


@pytest.mark.parametrize("hidden", [[8], [16, 16]])
def test_network_size_counts_every_element_network_from_the_file(tmp_path, hidden):
    """Features and parameters read with numpy from a real model file equal the torch model's own counts."""
    from aiida_annpot.common.config import ChebyshevConfig, NetworkConfig
    from aiida_annpot.core.model import Potential
    from aiida_annpot.core.modelfile import save_model

    potential = Potential(["Cu", "Au"], ChebyshevConfig(radial_order=5, angular_order=2), NetworkConfig(hidden=hidden))
    path = save_model(potential.double(), tmp_path / "model.safetensors")
    n_features, n_parameters = ranking.read_network_size(path.read_bytes())
    assert n_features == potential.descriptor.n_features
    assert n_parameters == sum(p.numel() for p in potential.networks.parameters())
    widths = [n_features, *hidden, 1]
    by_hand = 2 * sum(fan_in * fan_out + fan_out for fan_in, fan_out in itertools.pairwise(widths))
    assert n_parameters == by_hand, "two elements, one network each"


def test_network_size_refuses_a_file_without_networks():
    with pytest.raises(ValueError, match="not an annpot model file"):
        ranking.network_size({"feature_mean": np.zeros((1, 3))})


def test_module_imports_neither_torch_nor_aiida():
    code = "import sys, aiida_annpot.core.model_ranking; sys.exit(1 if {'torch', 'aiida'} & set(sys.modules) else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_score_is_the_sum_of_errors_relative_to_the_best():
    rows = [row(0, (1.0, 0.05, 2.0, 0.10)), row(1, (1.0, 0.05, 4.0, 0.08)), row(2, (1.0, 0.05, 3.0, 0.20))]
    ranked, chosen = ranking.rank_candidates(rows, tie_tolerance=0.0)
    scores = {r["index"]: r["score"] for r in ranked}
    assert scores[0] == pytest.approx(2.0 / 2.0 + 0.10 / 0.08)
    assert scores[1] == pytest.approx(4.0 / 2.0 + 0.08 / 0.08)
    assert scores[2] == pytest.approx(3.0 / 2.0 + 0.20 / 0.08)
    assert chosen == 0 and [by_index(ranked)[i]["rank"] for i in range(3)] == [1, 2, 3]


def test_a_tie_goes_to_the_smaller_model():
    """Candidate 1 scores 3 % worse than candidate 0 but has a quarter of the parameters."""
    rows = [
        row(0, (1.0, 0.05, 2.0, 0.100), n_parameters=400),
        row(1, (1.0, 0.05, 2.06, 0.100), n_parameters=100),
        row(2, (1.0, 0.05, 9.0, 0.300), n_parameters=50),
    ]
    ranked, chosen = ranking.rank_candidates(rows, tie_tolerance=0.05)
    assert chosen == 1
    assert [by_index(ranked)[i]["rank"] for i in range(3)] == [2, 1, 3], "the smallest model is far off: last"
    _, strict = ranking.rank_candidates(rows, tie_tolerance=0.01)
    assert strict == 0, "outside the tolerance the better score wins, whatever its size"


def test_failed_candidates_are_never_chosen_and_say_why():
    """The best errors belong to a candidate one of whose jobs failed: it is ineligible, with the exit status."""
    failure = "AnnTrainBaseWorkChain<42> exit status 401: maximum iterations"
    rows = [row(0, (0.1, 0.01, 0.5, 0.02), failed={0.25: failure}), row(1, (1.0, 0.05, 2.0, 0.10))]
    ranked, chosen = ranking.rank_candidates(rows, tie_tolerance=0.05)
    first = by_index(ranked)[0]
    assert chosen == 1
    assert not first["eligible"] and first["rank"] is None and first["score"] is None
    assert first["ineligible_reason"] == f"f025: {failure}"
    assert by_index(ranked)[1]["score"] == pytest.approx(2.0), "the best is measured among eligible candidates only"


def test_no_eligible_candidate_chooses_nothing():
    rows = [row(0, (1.0, 0.05, 2.0, 0.1), failed={1.0: "exit status 300"}), row(1, (1.0, 0.05, 2.0, float("nan")))]
    ranked, chosen = ranking.rank_candidates(rows, tie_tolerance=0.05)
    assert chosen is None and all(r["rank"] is None for r in ranked)
    assert "f100: exit status 300" in ranked[0]["ineligible_reason"]
    assert ranked[1]["fractions"][-1]["validation_force_rmse"] is None, "NaN is stored as None"
    assert "no finite validation" in ranked[1]["ineligible_reason"]


def test_order_is_deterministic_and_independent_of_the_row_order():
    """Equal scores and sizes: the lower index wins; shuffling the rows changes nothing."""
    rows = [row(i, (1.0, 0.05, 2.0, 0.1), n_parameters=100) for i in range(4)]
    rows.append(row(4, (1.0, 0.05, 2.0, 0.1), n_parameters=90))
    reference, chosen = ranking.rank_candidates(rows, tie_tolerance=0.0)
    assert chosen == 4
    assert [by_index(reference)[i]["rank"] for i in range(5)] == [2, 3, 4, 5, 1]
    for permutation in itertools.islice(itertools.permutations(rows), 0, 120, 7):
        ranked, again = ranking.rank_candidates(list(permutation), tie_tolerance=0.0)
        assert again == chosen
        assert {r["index"]: r["rank"] for r in ranked} == {r["index"]: r["rank"] for r in reference}


def test_input_rows_are_not_modified():
    rows = [row(0, (1.0, 0.05, 2.0, 0.1)), row(1, (1.0, 0.05, 3.0, 0.1))]
    before = copy.deepcopy(rows)
    ranking.rank_candidates(rows, tie_tolerance=0.05)
    assert rows == before


def test_diagnosis_of_the_learning_curves():
    """Still learning (validation error halves with twice the data), underfitting (training force error 3x the
    best), overfitting (validation force error 4x the training one), and a flat, healthy curve."""
    rows = [
        row(0, (1.0, 0.05, 2.0, 0.10), curve=2.0),  # still learning
        row(1, (1.0, 0.15, 2.0, 0.16), curve=1.0),  # underfits
        row(2, (0.1, 0.05, 2.0, 0.20), curve=1.0),  # overfits
        row(3, (1.0, 0.06, 2.0, 0.07), curve=1.01),  # healthy
    ]
    ranked, _ = ranking.rank_candidates(rows, tie_tolerance=0.05)
    still, under, over, healthy = (by_index(ranked)[i]["diagnosis"] for i in range(4))
    assert still["validation_drop"] == pytest.approx(0.5) and still["more_data_would_help"]
    assert "more data would help" in still["summary"] and "f050 to f100" in still["summary"]
    assert under["underfitting"] and not under["overfitting"] and "underfits" in under["summary"]
    assert over["generalisation_gap"] == pytest.approx(4.0) and over["overfitting"] and "overfits" in over["summary"]
    assert not (healthy["underfitting"] or healthy["overfitting"] or healthy["more_data_would_help"])
    assert healthy["summary"].startswith("converged learning curve")
    assert healthy["generalisation_gap"] == pytest.approx(0.07 / 0.06)


def test_learning_curve_arrays_mark_failed_points_with_nan():
    arrays = ranking.learning_curve_arrays(row(0, (1.0, 0.05, 2.0, 0.1), failed={0.5: "exit status 400"}))
    np.testing.assert_array_equal(arrays["fraction"], [0.25, 0.5, 1.0])
    np.testing.assert_array_equal(arrays["n_train"], [3, np.nan, 12])
    assert np.isnan(arrays["validation_force_rmse"][1]) and arrays["validation_force_rmse"][2] == pytest.approx(0.1)
    assert set(arrays) == {"fraction", "n_train", *ranking.ERROR_KEYS.values()}
