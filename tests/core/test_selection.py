"""Tests for query-by-committee candidate selection (:mod:`aiida_annpot.core.selection`)."""

from __future__ import annotations

import numpy as np
import pytest

from aiida_annpot.common.config import SelectionConfig
from aiida_annpot.core.selection import (
    STATUSES,
    SelectionResult,
    classify,
    extrapolation_summary,
    farthest_point_sampling,
    select_candidates,
)


def _config(**overrides) -> SelectionConfig:
    settings = {"trust_lo": 0.1, "trust_hi": 0.5, "min_distance": 1.0, "duplicate_threshold": 0.0, "max_candidates": 10}
    settings.update(overrides)
    return SelectionConfig(**settings)


def _clusters(n_per: int = 4, spread: float = 0.01) -> np.ndarray:
    """Three tight clusters in 2-D, frames ordered cluster by cluster."""
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    offsets = spread * np.arange(n_per)[:, None] * np.array([1.0, 0.5])
    return np.concatenate([centre + offsets for centre in centres])


def test_classify_boundaries_and_non_finite():
    sigma = [0.0, 0.0999, 0.1, 0.3, 0.4999, 0.5, 2.0, np.nan, np.inf, -np.inf]
    expected = ["accurate", "accurate", "candidate", "candidate", "candidate", "failed", "failed"] + ["failed"] * 3
    assert classify(sigma, 0.1, 0.5).tolist() == expected


def test_classify_rejects_bad_window_and_shape():
    with pytest.raises(ValueError, match="trust_lo"):
        classify([0.1], 0.5, 0.5)
    with pytest.raises(ValueError, match="1-D"):
        classify([[0.1]], 0.1, 0.5)


def test_status_from_window_when_nothing_else_filters():
    sigma = np.array([0.01, 0.2, 0.3, 0.9, np.nan])
    result = select_candidates(sigma, np.full(5, 2.0), np.arange(10.0).reshape(5, 2), _config())
    assert result.status.tolist() == ["accurate", "selected", "selected", "failed", "failed"]
    assert result.ratios == pytest.approx({"accurate": 0.2, "candidate": 0.4, "failed": 0.4})
    assert set(result.counts) == set(STATUSES)


def test_too_close_filter_applies_before_selection():
    sigma = np.full(4, 0.2)
    dmin = np.array([0.99, 1.0, 0.5, np.nan])
    result = select_candidates(sigma, dmin, np.eye(4), _config(min_distance=1.0))
    assert result.status.tolist() == ["too_close", "selected", "too_close", "too_close"]
    assert result.selected.tolist() == [1]


def test_too_close_only_concerns_candidates():
    sigma = np.array([0.01, 0.9])
    result = select_candidates(sigma, np.array([0.1, 0.1]), np.eye(2), _config())
    assert result.status.tolist() == ["accurate", "failed"]


def test_duplicate_of_reference_is_dropped():
    fingerprints = np.array([[0.0, 0.0], [0.05, 0.0], [3.0, 0.0]])
    reference = np.array([[0.0, 0.02]])
    result = select_candidates(
        np.full(3, 0.2), np.full(3, 2.0), fingerprints, _config(duplicate_threshold=0.1), reference
    )
    assert result.status.tolist() == ["duplicate", "duplicate", "selected"]
    # Without a threshold nothing counts as a duplicate.
    result = select_candidates(np.full(3, 0.2), np.full(3, 2.0), fingerprints, _config(), reference)
    assert result.counts["duplicate"] == 0
    assert result.counts["selected"] == 3


def test_duplicates_among_candidates_stop_the_picking():
    fingerprints = _clusters(n_per=4, spread=0.01)
    result = select_candidates(np.full(12, 0.2), np.full(12, 2.0), fingerprints, _config(duplicate_threshold=0.5))
    assert result.counts["selected"] == 3
    assert result.counts["duplicate"] == 9
    assert sorted(i // 4 for i in result.selected) == [0, 1, 2]


def test_after_cap_near_copies_of_picks_are_duplicates_and_the_rest_not_selected():
    fingerprints = _clusters(n_per=4, spread=0.01)
    config = _config(duplicate_threshold=0.5, max_candidates=2)
    result = select_candidates(np.full(12, 0.2), np.full(12, 2.0), fingerprints, config)
    picked = {int(i) // 4 for i in result.selected}
    assert len(picked) == 2
    left_out = ({0, 1, 2} - picked).pop()
    assert (result.status[4 * left_out : 4 * left_out + 4] == "not_selected").all()
    assert result.counts == {**dict.fromkeys(STATUSES, 0), "selected": 2, "duplicate": 6, "not_selected": 4}


def test_fps_picks_one_point_per_cluster():
    points = _clusters()
    picks = farthest_point_sampling(points, 3)
    assert sorted(i // 4 for i in picks) == [0, 1, 2]
    assert picks[0] == 0  # no reference, no forced first: lowest index


def test_fps_forced_first_and_cap_larger_than_points():
    points = _clusters(n_per=2)
    picks = farthest_point_sampling(points, 100, first=3)
    assert picks[0] == 3
    assert sorted(picks.tolist()) == list(range(6))
    assert farthest_point_sampling(points, 0).size == 0


def test_fps_first_pick_is_farthest_from_reference():
    points = np.array([[0.0], [1.0], [5.0]])
    picks = farthest_point_sampling(points, 2, reference=np.array([[0.5]]), first=0)
    assert picks.tolist() == [2, 0]  # 0 and 1 tie at 0.5 from the reference: lower index wins


def test_fps_ties_go_to_lower_index():
    points = np.array([[0.0], [1.0], [-1.0]])
    assert farthest_point_sampling(points, 3).tolist() == [0, 1, 2]


def test_first_pick_without_reference_is_largest_deviation():
    fingerprints = _clusters()
    sigma = np.full(12, 0.2)
    sigma[6] = 0.4
    result = select_candidates(sigma, np.full(12, 2.0), fingerprints, _config(max_candidates=1))
    assert result.selected.tolist() == [6]


def test_first_pick_with_reference_is_farthest_from_it():
    fingerprints = _clusters()
    sigma = np.full(12, 0.2)
    sigma[0] = 0.4
    reference = np.array([[0.0, 0.0], [10.0, 0.0]])
    result = select_candidates(sigma, np.full(12, 2.0), fingerprints, _config(max_candidates=1), reference)
    assert result.selected[0] // 4 == 2


def test_cap_respected_and_counts_sum_to_frames():
    rng = np.random.default_rng(0)
    n = 50
    sigma = rng.uniform(0.0, 0.7, n)
    dmin = rng.uniform(0.8, 1.5, n)
    fingerprints = rng.normal(size=(n, 5))
    reference = rng.normal(size=(8, 5))
    config = _config(max_candidates=4, duplicate_threshold=0.5)
    result = select_candidates(sigma, dmin, fingerprints, config, reference)
    assert isinstance(result, SelectionResult)
    assert len(result.selected) == result.counts["selected"] <= 4
    assert sum(result.counts.values()) == n
    assert result.counts["not_selected"] > 0
    assert sum(result.ratios.values()) == pytest.approx(1.0)
    assert (result.status[result.selected] == "selected").all()
    assert set(result.status.tolist()) <= set(STATUSES)
    window = (sigma >= 0.1) & (sigma < 0.5)
    assert np.count_nonzero(window) == n - result.counts["accurate"] - result.counts["failed"]

    again = select_candidates(sigma, dmin, fingerprints, config, reference)
    assert np.array_equal(again.selected, result.selected)
    assert np.array_equal(again.status, result.status)


def test_max_candidates_zero_selects_nothing():
    result = select_candidates(np.full(3, 0.2), np.full(3, 2.0), np.eye(3), _config(max_candidates=0))
    assert result.selected.size == 0
    assert result.counts["not_selected"] == 3


def test_empty_input_and_empty_reference():
    result = select_candidates([], [], np.empty((0, 3)), _config(), np.empty((0, 3)))
    assert result.selected.size == 0 and result.status.size == 0
    assert result.counts == dict.fromkeys(STATUSES, 0)
    assert result.ratios == {"accurate": 0.0, "candidate": 0.0, "failed": 0.0}
    result = select_candidates([0.2], [2.0], [[1.0, 2.0]], _config(), np.array([]))
    assert result.selected.tolist() == [0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([0.2, 0.2], [2.0], np.eye(2)), "mismatched lengths"),
        (([0.2, 0.2], [2.0, 2.0], np.ones((3, 2))), "mismatched lengths"),
        (([0.2, 0.2], [2.0, 2.0], np.ones(2)), "fingerprints must be 2-D"),
        (([0.2, 0.2], [2.0, 2.0], np.ones((2, 2, 1))), "fingerprints must be 2-D"),
        (([0.2, 0.2], [2.0, 2.0], np.eye(2), np.ones((1, 3))), "dimension"),
        (([0.2, 0.2], [2.0, 2.0], [[0.0, np.nan], [1.0, 1.0]]), "NaN"),
    ],
)
def test_select_candidates_validation(args, message):
    fixed, *reference = args[:3], *args[3:]
    with pytest.raises(ValueError, match=message):
        select_candidates(*fixed, _config(), *reference)


def test_fps_validation():
    with pytest.raises(ValueError, match="2-D"):
        farthest_point_sampling(np.ones(3), 1)
    with pytest.raises(ValueError, match="dimension"):
        farthest_point_sampling(np.ones((3, 2)), 1, reference=np.ones((1, 3)))
    with pytest.raises(ValueError, match="out of range"):
        farthest_point_sampling(np.ones((3, 2)), 1, first=3)
    with pytest.raises(ValueError, match="non-negative"):
        farthest_point_sampling(np.ones((3, 2)), -1)


# --- extrapolation: accurate frames outside the training ranges ----------------------------------------------------

#: σ per frame: accurate, accurate, candidate, accurate, failed, accurate (0.1 ≤ σ < 0.5 is the trust window)
EXTRAP_SIGMA = np.array([0.01, 0.02, 0.2, 0.03, 0.9, 0.04])
#: grades: frame 1 is accurate and far out of range, 3 only just out of range, 4 out of range but failed
EXTRAP_GRADES = np.array([0.0, 2.5, 0.0, 0.05, 3.0, np.nan])


def _extrapolation_case(mode: str, tolerance: float = 0.1, grades=EXTRAP_GRADES, **overrides):
    config = _config(extrapolation=mode, extrapolation_tolerance=tolerance, **overrides)
    fingerprints = np.arange(12.0).reshape(6, 2)
    return select_candidates(EXTRAP_SIGMA, np.full(6, 2.0), fingerprints, config, extrapolation=grades)


def test_candidate_mode_promotes_accurate_frames_out_of_range():
    plain = select_candidates(EXTRAP_SIGMA, np.full(6, 2.0), np.arange(12.0).reshape(6, 2), _config())
    ignore = _extrapolation_case("ignore")
    promote = _extrapolation_case("candidate")
    assert plain.status.tolist() == ["accurate", "accurate", "selected", "accurate", "failed", "accurate"]
    for result in (ignore, _extrapolation_case("candidate", grades=None)):  # "ignore" or no grades: as before
        np.testing.assert_array_equal(result.status, plain.status)
        np.testing.assert_array_equal(result.selected, plain.selected)
        assert result.counts == plain.counts and result.promoted.size == 0
    # frame 1 (grade 2.5 > 0.1) joins the candidates; 3 (0.05) is inside the tolerance, 4 stays failed, NaN is unknown
    assert promote.promoted.tolist() == [1]
    assert promote.status.tolist() == ["accurate", "selected", "selected", "accurate", "failed", "accurate"]
    assert sorted(promote.selected.tolist()) == [1, 2] and promote.selected[0] == 2  # largest σ picked first
    assert promote.counts["accurate"] == plain.counts["accurate"] - 1
    assert _extrapolation_case("candidate", tolerance=0.0).promoted.tolist() == [1, 3]


def test_promoted_frames_pass_the_same_filters_as_candidates():
    distance = np.array([2.0, 0.5, 2.0, 2.0, 2.0, 2.0])  # frame 1 has atoms too close
    config = _config(extrapolation="candidate", extrapolation_tolerance=0.0)
    result = select_candidates(
        EXTRAP_SIGMA, distance, np.arange(12.0).reshape(6, 2), config, extrapolation=EXTRAP_GRADES
    )
    assert result.promoted.tolist() == [1, 3] and result.status[1] == "too_close" and result.status[3] == "selected"
    # a duplicate of the reference set is dropped, and the cap holds
    fingerprints = np.arange(12.0).reshape(6, 2)
    capped = select_candidates(
        EXTRAP_SIGMA,
        np.full(6, 2.0),
        fingerprints,
        config.model_copy(update={"duplicate_threshold": 0.5, "max_candidates": 1}),
        fingerprints[[3]] + 0.1,
        EXTRAP_GRADES,
    )
    # frame 1 is farther from the reference than 2, so farthest-point sampling takes it first
    assert capped.status.tolist() == ["accurate", "selected", "not_selected", "duplicate", "failed", "accurate"]


def test_extrapolation_grades_must_match_the_frames():
    with pytest.raises(ValueError, match=r"one grade per frame \(6\), got shape \(5,\)"):
        _extrapolation_case("candidate", grades=np.zeros(5))
    with pytest.raises(ValueError, match="one grade per frame"):
        _extrapolation_case("ignore", grades=np.zeros((6, 1)))


def test_extrapolation_summary_counts_frames_above_the_tolerance():
    summary = extrapolation_summary(EXTRAP_GRADES, 0.1)
    assert summary == {"tolerance": 0.1, "out_of_range": 2, "ratio": pytest.approx(2 / 6)}
    assert extrapolation_summary(np.array([]), 0.0) == {"tolerance": 0.0, "out_of_range": 0, "ratio": 0.0}
