"""Pure readers of the engine's output files: round trips, and an OutputFileError naming each problem."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from aiida_annpot.parsers.readers import (
    STATUSES,
    OutputFileError,
    read_learning_curve,
    read_metrics,
    read_status,
    read_summary,
)

# --- status file ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", STATUSES)
def test_status_round_trip(status):
    written = {"exit_code": 75, "status": status, "message": "budget spent"}
    assert read_status(json.dumps(written)) == written


def test_status_without_message_gets_an_empty_one():
    assert read_status('{"exit_code": 0, "status": "finished"}') == {
        "exit_code": 0,
        "status": "finished",
        "message": "",
    }


def test_status_matches_what_the_cli_writes():
    """The reader accepts every status name the engine can write (the parser's contract with ``annpot``)."""
    from aiida_annpot.core import cli

    assert set(cli._STATUS_NAMES.values()) | {"crashed"} == set(STATUSES)
    for code, name in cli._STATUS_NAMES.items():
        assert read_status(json.dumps({"exit_code": code, "status": name, "message": ""}))["status"] == name


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", r"status file is not valid JSON"),
        ("", r"status file is not valid JSON"),
        ("[0, 2]", r"status file holds list, not a mapping"),
        ('"finished"', r"status file holds str, not a mapping"),
        ('{"exit_code": 0, "status": "done"}', r"status file has no valid status and exit code.*'done'"),
        ('{"exit_code": 0}', r"status file has no valid status and exit code"),
        ('{"status": "finished"}', r"status file has no valid status and exit code"),
        ('{"exit_code": "0", "status": "finished"}', r"status file has no valid status and exit code"),
    ],
)
def test_malformed_status_is_rejected(text, problem):
    with pytest.raises(OutputFileError, match=problem):
        read_status(text)


def test_output_file_error_is_a_value_error():
    assert issubclass(OutputFileError, ValueError)


# --- metrics.json ---------------------------------------------------------------------------------------------------

METRICS = {
    "train": {"energy_rmse": 1.5, "energy_mae": 1.2, "force_rmse": 0.05, "force_mae": 0.04, "stress_rmse": 0.3},
    "validation": {"energy_rmse": 2.5, "energy_mae": 2.0, "force_rmse": 0.07, "force_mae": 0.05, "stress_rmse": 0.4},
    "epochs": 12,
    "best_validation_loss": 0.001,
    "wall_time": 3.25,
}


def test_metrics_round_trip():
    assert read_metrics(json.dumps(METRICS)) == METRICS


def test_non_finite_metrics_become_none():
    """No stress labels give NaN stress errors (json writes NaN / Infinity); AiiDA cannot store those."""
    metrics = json.loads(json.dumps(METRICS))
    metrics["validation"]["stress_rmse"] = math.nan
    metrics["train"]["stress_rmse"] = math.inf
    metrics["best_validation_loss"] = -math.inf
    metrics["history"] = [1.0, math.nan, 2]
    text = json.dumps(metrics)
    assert "NaN" in text and "Infinity" in text
    read = read_metrics(text)
    assert read["validation"]["stress_rmse"] is None
    assert read["train"]["stress_rmse"] is None
    assert read["best_validation_loss"] is None
    assert read["history"] == [1.0, None, 2]
    assert read["validation"]["force_rmse"] == 0.07 and read["epochs"] == 12  # finite values kept, ints stay ints
    assert isinstance(read["epochs"], int)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("metrics", r"metrics.json is not valid JSON"),
        ("[1, 2]", r"metrics.json holds list, not a mapping"),
        ('{"train": {}, "epochs": 3}', r"metrics.json has no validation errors"),
        ('{"validation": [0.1], "epochs": 3}', r"metrics.json has no validation errors"),
    ],
)
def test_malformed_metrics_are_rejected(text, problem):
    with pytest.raises(OutputFileError, match=problem):
        read_metrics(text)


# --- learning_curve.csv ---------------------------------------------------------------------------------------------

CURVE_FIELDS = ["epoch", "learning_rate", "train_loss", "validation_loss", "validation_force_rmse"]


def _curve_text(rows: list[dict], fields=CURVE_FIELDS) -> str:
    handle = io.StringIO()
    writer = csv.DictWriter(handle, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return handle.getvalue()


def test_learning_curve_round_trip():
    rows = [
        {
            "epoch": k + 1,
            "learning_rate": 0.01 / (k + 1),
            "train_loss": 1.0 / (k + 1),
            "validation_loss": 2.0 / (k + 1),
            "validation_force_rmse": 0.1 * k,
        }
        for k in range(5)
    ]
    curve = read_learning_curve(_curve_text(rows))
    assert list(curve) == CURVE_FIELDS
    for field in CURVE_FIELDS:
        assert isinstance(curve[field], np.ndarray) and curve[field].dtype == float
        np.testing.assert_allclose(curve[field], [row[field] for row in rows])


def test_learning_curve_keeps_nan_entries():
    """The engine writes ``nan`` for force errors without force labels: numeric, so it is kept as NaN."""
    rows = [
        {
            "epoch": 1,
            "learning_rate": 0.01,
            "train_loss": 1.0,
            "validation_loss": 2.0,
            "validation_force_rmse": math.nan,
        }
    ]
    curve = read_learning_curve(_curve_text(rows))
    assert np.isnan(curve["validation_force_rmse"][0]) and curve["epoch"][0] == 1.0


@pytest.mark.parametrize("text", ["", "epoch,learning_rate,train_loss\n"])
def test_learning_curve_without_epochs_is_rejected(text):
    with pytest.raises(OutputFileError, match=r"learning_curve.csv has no epochs"):
        read_learning_curve(text)


def test_learning_curve_with_a_non_numeric_entry_is_rejected():
    text = "epoch,learning_rate\n1,0.01\n2,fast\n"
    with pytest.raises(OutputFileError, match=r"learning_curve.csv has a non-numeric entry.*fast"):
        read_learning_curve(text)


def test_learning_curve_with_a_short_row_is_rejected():
    """A truncated last row leaves a missing (None) cell, which is not a number either."""
    text = "epoch,learning_rate,train_loss\n1,0.01,0.5\n2,0.01\n"
    with pytest.raises(OutputFileError, match=r"learning_curve.csv has a non-numeric entry"):
        read_learning_curve(text)


# --- summary.json ---------------------------------------------------------------------------------------------------

#: ``summary.json`` of an exploration: frame counts, stages, trajectory ends (no selection: that runs afterwards).
SUMMARY = {
    "frames": 8,
    "stages": [{"stage": 0, "temperature": 300.0, "pressure": None, "frames": 8}],
    "trajectories": [{"structure": 0, "stage": 0, "reason": "completed", "steps": 40}],
    "stop_reasons": {"completed": 1, "deviation": 0, "too_close": 0, "non_finite": 0},
}
#: ``summary.json`` of ``annpot score``: the same keys, one stage, no trajectories.
SCORING_SUMMARY = {
    "frames": 5,
    "unusable": 0,
    "source": "input_md.traj",
    "stages": [{"stage": 0, "frames": 5}],
    "trajectories": [],
}


@pytest.mark.parametrize("summary", [SUMMARY, SCORING_SUMMARY])
def test_summary_round_trip(summary):
    assert read_summary(json.dumps(summary)) == summary


def test_non_finite_summary_values_become_none():
    summary = json.loads(json.dumps(SUMMARY))
    summary["stages"][0]["temperature"] = math.nan
    read = read_summary(json.dumps(summary))
    assert read["stages"] == [{"stage": 0, "temperature": None, "pressure": None, "frames": 8}]


@pytest.mark.parametrize("missing", ["frames", "stages", "trajectories"])
def test_summary_missing_a_key_is_rejected(missing):
    summary = {key: value for key, value in SUMMARY.items() if key != missing}
    with pytest.raises(OutputFileError, match=rf"summary.json lacks '{missing}'"):
        read_summary(json.dumps(summary))


@pytest.mark.parametrize(
    ("text", "problem"),
    [("{", r"summary.json is not valid JSON"), ("8", r"summary.json holds int, not a mapping")],
)
def test_malformed_summary_is_rejected(text, problem):
    with pytest.raises(OutputFileError, match=problem):
        read_summary(text)
