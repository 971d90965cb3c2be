"""select_candidates with extrapolation grades: frames the committee calls accurate but whose descriptors leave the
training ranges become candidates with ``extrapolation: candidate``, and nothing changes with ``ignore``."""

from __future__ import annotations

import numpy as np
import pytest
from aiida.orm import Dict

from aiida_annpot.calcfunctions import select_candidates
from aiida_annpot.common.config import SelectionConfig
from aiida_annpot.core import selection
from aiida_annpot.core.explored import read_explored_frames
from tests.calcfunctions.test_select_candidates import explored_frames, frames_file

SETTINGS = {
    "trust_lo": 0.05,
    "trust_hi": 0.5,
    "min_distance": 1.8,
    "duplicate_threshold": 0.0,
    "max_candidates": 3,
    "extrapolation_tolerance": 0.1,
}
#: (stage, σ_F^max, smallest distance) per frame: accurate frames 0, 1, 4, 5; candidates 2, 3; failed 6
ROWS = [(0, 0.01, 2.2), (0, 0.02, 2.25), (0, 0.10, 2.2), (1, 0.20, 2.3), (1, 0.04, 2.2), (1, 0.03, 2.2), (1, 0.7, 2.0)]
#: frame 1 is accurate but far out of range, 5 just inside the tolerance, 6 out of range but failed
GRADES = [0.0, 1.7, 0.0, 0.3, 0.0, 0.1, 4.0]


@pytest.fixture(scope="module")
def graded(aiida_profile):
    """The frames as ``annpot explore`` writes them, with ``extrapolation`` recorded, in one SinglefileData."""
    frames = explored_frames(ROWS, 0, seed=3)
    for frame, grade in zip(frames, GRADES, strict=True):
        frame.info["extrapolation"] = grade
    return frames_file(frames)


def run(node, mode: str) -> dict:
    return select_candidates(selection_settings=Dict({**SETTINGS, "extrapolation": mode}), frames_0=node)


def test_the_file_keeps_the_grades(graded):
    with graded.as_path() as path:
        frames, _ = read_explored_frames(path)
    assert [frame.info["extrapolation"] for frame in frames] == GRADES


def test_candidate_promotes_the_accurate_out_of_range_frame_and_nothing_else(graded):
    ignore, candidate = run(graded, "ignore"), run(graded, "candidate")
    sigma = np.array([row[1] for row in ROWS])
    with graded.as_path() as path:
        _, fingerprints = read_explored_frames(path)
    expected = {}
    for mode in ("ignore", "candidate"):
        config = SelectionConfig(**SETTINGS, extrapolation=mode)
        expected[mode] = selection.select_candidates(
            sigma, np.array([r[2] for r in ROWS]), fingerprints, config, extrapolation=np.array(GRADES)
        )
    # ignore: the two committee candidates; candidate: frame 1 joins them and, under the cap of 3, is selected
    assert np.flatnonzero(ignore["deviations"].get_array("selected")).tolist() == [2, 3]
    assert np.flatnonzero(candidate["deviations"].get_array("selected")).tolist() == [1, 2, 3]
    assert expected["candidate"].promoted.tolist() == [1]
    changed = np.flatnonzero(expected["ignore"].status != expected["candidate"].status)
    assert changed.tolist() == [1] and expected["ignore"].status[1] == "accurate"

    summary, plain = candidate["summary"].get_dict(), ignore["summary"].get_dict()
    assert summary["counts"] == plain["counts"] == {"accurate": 4, "candidate": 2, "failed": 1}  # the committee's
    assert summary["selection_counts"] == {**plain["selection_counts"], "accurate": 3, "selected": 3}
    assert summary["extrapolation"] == {
        "tolerance": 0.1,
        "out_of_range": 3,
        "ratio": pytest.approx(3 / 7),
        "promoted": 1,
    }
    assert plain["extrapolation"]["promoted"] == 0
    stages = {entry["stage"]: entry["extrapolation"]["out_of_range"] for entry in summary["stages"]}
    assert stages == {0: 1, 1: 2}
    picks = {pick["step"]: pick for pick in summary["selected"]}
    assert picks[20]["promoted"] and picks[20]["extrapolation"] == 1.7 and picks[20]["max_force_std"] == 0.02
    assert not any(pick["promoted"] for pick in plain["selected"])
    assert len([key for key in candidate if key.startswith("structure_")]) == 3
    np.testing.assert_array_equal(candidate["deviations"].get_array("extrapolation"), GRADES)


def test_frames_without_grades_promote_nothing(aiida_profile):
    """Frames files written before grades were recorded: NaN grades, the same picks as ``ignore``."""
    old = frames_file(explored_frames(ROWS, 0, seed=3))
    result = run(old, "candidate")
    assert np.isnan(result["deviations"].get_array("extrapolation")).all()
    assert np.flatnonzero(result["deviations"].get_array("selected")).tolist() == [2, 3]
    summary = result["summary"].get_dict()
    assert summary["extrapolation"]["out_of_range"] == 0 and summary["extrapolation"]["promoted"] == 0
    assert [pick["extrapolation"] for pick in summary["selected"]] == [None, None]  # unknown, stored as null
