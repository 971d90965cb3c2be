"""How many candidates an iteration labels (:meth:`SelectionConfig.cap`): a share of the candidates left after the
filters, within [min_candidates, max_candidates], and :func:`select_candidates` picking exactly that many."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError

from aiida_annpot.common.config import SelectionConfig
from aiida_annpot.core.selection import select_candidates


def config(**settings) -> SelectionConfig:
    return SelectionConfig(**{"trust_lo": 0.1, "trust_hi": 0.5, "min_distance": 1.0, **settings})


@pytest.mark.parametrize(
    ("settings", "candidates", "picks"),
    [
        ({"candidate_fraction": 0.25, "min_candidates": 0, "max_candidates": 100}, 10, 3),  # ⌈2.5⌉
        ({"candidate_fraction": 0.25, "min_candidates": 0, "max_candidates": 100}, 12, 3),  # exactly 3
        ({"candidate_fraction": 0.25, "min_candidates": 0, "max_candidates": 100}, 13, 4),  # ⌈3.25⌉
        ({"candidate_fraction": 0.25, "min_candidates": 0, "max_candidates": 100}, 1, 1),  # ⌈0.25⌉: never 0 of 1
        ({"candidate_fraction": 0.25, "min_candidates": 5, "max_candidates": 100}, 10, 5),  # the floor
        ({"candidate_fraction": 0.25, "min_candidates": 5, "max_candidates": 100}, 40, 10),  # above the floor
        ({"candidate_fraction": 0.25, "min_candidates": 5, "max_candidates": 4}, 10, 4),  # max wins over min
        ({"candidate_fraction": 0.5, "min_candidates": 2, "max_candidates": 24}, 100, 24),  # the cap
        ({"candidate_fraction": 0.25, "min_candidates": 5, "max_candidates": 24}, 3, 3),  # never more than there are
        ({"candidate_fraction": 1.0, "min_candidates": 1, "max_candidates": 20}, 7, 7),  # the old behaviour
        ({"candidate_fraction": 1.0, "min_candidates": 1, "max_candidates": 20}, 30, 20),
        ({"candidate_fraction": 0.25, "min_candidates": 5, "max_candidates": 0}, 10, 0),  # selection switched off
        ({"candidate_fraction": 0.25, "min_candidates": 5, "max_candidates": 24}, 0, 0),  # nothing to pick
    ],
)
def test_cap_arithmetic(settings, candidates, picks):
    assert config(**settings).cap(candidates) == picks


def test_cap_follows_the_number_of_candidates_monotonically():
    """More disagreement (more candidates) never means fewer labels; the protocol's setting as an example."""
    selection = config(candidate_fraction=0.25, min_candidates=4, max_candidates=24)
    caps = [selection.cap(n) for n in range(200)]
    assert caps[:5] == [0, 1, 2, 3, 4] and caps[16] == 4 and caps[17] == 5 and caps[96] == 24 and caps[199] == 24
    assert all(a <= b for a, b in itertools.pairwise(caps))
    assert all(cap <= n for n, cap in enumerate(caps))


@pytest.mark.parametrize(("fraction", "candidates"), [(0.07, 100), (0.55, 100), (0.28, 25)])
def test_cap_rounds_up_the_exact_share(fraction, candidates):
    exact = math.ceil(Fraction(str(fraction)) * candidates)
    assert config(candidate_fraction=fraction, min_candidates=0, max_candidates=1000).cap(candidates) == exact


@pytest.mark.parametrize("settings", [{"candidate_fraction": 0.0}, {"candidate_fraction": 1.5}, {"min_candidates": -1}])
def test_out_of_range_settings_are_refused(settings):
    with pytest.raises(ValidationError, match=next(iter(settings))):
        config(**settings)


@pytest.mark.parametrize(
    ("settings", "candidates"),
    [
        ({"candidate_fraction": 0.25, "min_candidates": 2, "max_candidates": 24}, 30),  # ⌈7.5⌉ = 8
        ({"candidate_fraction": 0.25, "min_candidates": 10, "max_candidates": 24}, 30),  # the floor: 10
        ({"candidate_fraction": 0.9, "min_candidates": 2, "max_candidates": 12}, 30),  # the cap: 12
        ({"candidate_fraction": 0.5, "min_candidates": 0, "max_candidates": 0}, 30),  # none
    ],
)
def test_select_candidates_picks_exactly_the_cap(settings, candidates):
    """Random fingerprints, every σ in the trust window, atoms far enough apart: the filters remove nothing, so
    cap(30) frames are selected (distinct, all candidates) and the rest are not_selected."""
    rng = np.random.default_rng(3)
    selection = config(**settings)
    accurate, failed = 5, 4
    sigma = np.concatenate([rng.uniform(0.1, 0.5, candidates), np.full(accurate, 0.01), np.full(failed, 0.9)])
    fingerprints = rng.normal(size=(len(sigma), 6))
    result = select_candidates(sigma, np.full(len(sigma), 2.0), fingerprints, selection)
    picks = selection.cap(candidates)
    assert len(result.selected) == picks == result.counts["selected"]
    assert len(set(result.selected.tolist())) == picks and all(result.selected < candidates)
    assert result.counts["not_selected"] == candidates - picks
    assert result.counts["accurate"] == accurate and result.counts["failed"] == failed
    if picks:
        assert result.selected[0] == int(np.argmax(sigma[:candidates]))  # no reference set: the largest σ first


def test_the_cap_counts_the_candidates_left_after_the_filters():
    """Of 40 candidates, 20 have atoms too close: a quarter of the 20 left (5) is picked, not a quarter of 40."""
    rng = np.random.default_rng(4)
    sigma = rng.uniform(0.1, 0.5, 40)
    closest = np.where(np.arange(40) % 2 == 0, 0.5, 2.0)
    selection = config(candidate_fraction=0.25, min_candidates=1, max_candidates=24)
    result = select_candidates(sigma, closest, rng.normal(size=(40, 4)), selection)
    assert result.counts["too_close"] == 20
    assert result.counts["selected"] == 5 and result.counts["not_selected"] == 15
    assert all(result.selected % 2 == 1)
