"""The ``annpot`` command end to end: train, info, evaluate, wall-time stop and resume, explore and select wiring,
exit codes.

Most tests go through :class:`click.testing.CliRunner`; two run a real process to check the entry point itself.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from aiida_annpot import __version__
from aiida_annpot.core.cli import cli
from aiida_annpot.core.errors import EXIT_DIVERGED, EXIT_INPUT_ERROR, EXIT_WALL_TIME
from aiida_annpot.core.modelfile import read_metadata

N_TRAIN, N_VALIDATION, ATOMS_PER_FRAME = 10, 3, 4


def invoke(*args):
    """Run ``annpot ARGS`` in-process; exceptions other than the CLI's own exits propagate."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def training_folder(tmp_path_factory, emt_frames, write_frames, training_settings, write_config) -> Path:
    """Data and a config with paths relative to the config's folder (the tests run from another directory)."""
    folder = tmp_path_factory.mktemp("cli")
    write_frames(folder / "data" / "train.extxyz", emt_frames(n=N_TRAIN, seed=11))
    write_frames(folder / "data" / "validation.extxyz", emt_frames(n=N_VALIDATION, seed=12))
    settings = training_settings(dataset="../data/train.extxyz", validation_dataset="../data/validation.extxyz")
    write_config(folder / "config" / "train.yaml", settings)
    write_config(folder / "config" / "wall.yaml", {**settings, "wall_time": 1e-6, "max_epochs": 3})
    write_config(folder / "config" / "reference.yaml", {**settings, "max_epochs": 3})
    return folder


@pytest.fixture(scope="module")
def trained(training_folder) -> tuple[Path, object]:
    """``annpot train config/train.yaml --workdir run`` once for the module: (workdir, click result)."""
    workdir = training_folder / "run"
    result = invoke("train", training_folder / "config" / "train.yaml", "--workdir", workdir)
    return workdir, result


def test_train_writes_outputs(trained, training_settings):
    workdir, result = trained
    assert result.exit_code == 0, result.output
    for name in ("model.safetensors", "metrics.json", "learning_curve.csv"):
        assert (workdir / name).is_file(), name
    metrics = json.loads((workdir / "metrics.json").read_text(), parse_constant=pytest.fail)  # no bare NaN: not JSON
    for key in ("energy_rmse", "energy_mae", "force_rmse", "force_mae"):
        assert math.isfinite(metrics["validation"][key]), key
    assert metrics["validation"]["n_structures"] == N_VALIDATION
    assert metrics["train"]["n_structures"] == N_TRAIN
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == metrics["epochs"] == training_settings()["max_epochs"]
    assert "finished" in result.stdout and result.stderr == ""


def test_info_prints_metadata(trained):
    workdir, _ = trained
    result = invoke("info", workdir / "model.safetensors")
    assert result.exit_code == 0, result.output
    metadata = read_metadata(workdir / "model.safetensors")
    assert "elements:     Cu" in result.stdout
    assert "chebyshev" in result.stdout and "radial_order=4" in result.stdout
    assert metadata["dataset_hash"] in result.stdout
    assert "force RMSE" in result.stdout and "validation" in result.stdout
    raw = invoke("info", workdir / "model.safetensors", "--json")
    assert raw.exit_code == 0
    assert json.loads(raw.stdout) == metadata


def test_evaluate_reproduces_training_metrics(trained, training_folder, tmp_path):
    workdir, _ = trained
    train_metrics = json.loads((workdir / "metrics.json").read_text())["train"]
    result = invoke(
        "evaluate",
        workdir / "model.safetensors",
        training_folder / "data" / "train.extxyz",
        "--output",
        tmp_path / "eval",
    )
    assert result.exit_code == 0, result.output
    assert "force RMSE" in result.stdout and "meV/atom" in result.stdout
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())["committee_mean"]
    for key in ("energy_rmse", "energy_mae", "force_rmse", "force_mae", "stress_rmse"):
        assert evaluated[key] == pytest.approx(train_metrics[key], rel=1e-6), key
    with (tmp_path / "eval" / "parity.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    kinds = [row["kind"] for row in rows]
    assert kinds.count("energy_per_atom") == N_TRAIN
    assert kinds.count("force") == 3 * ATOMS_PER_FRAME * N_TRAIN
    assert kinds.count("stress") == 9 * N_TRAIN
    assert all(math.isfinite(float(row["predicted"])) for row in rows)


def test_evaluate_committee_of_identical_members(trained, training_folder):
    workdir, _ = trained
    model = workdir / "model.safetensors"
    single = invoke("evaluate", model, training_folder / "data" / "validation.extxyz")
    double = invoke("evaluate", model, training_folder / "data" / "validation.extxyz", "--member", model)
    assert single.exit_code == double.exit_code == 0, double.output
    assert "committee mean" in double.stdout and "member 1" in double.stdout
    force_row = next(line for line in double.stdout.splitlines() if line.startswith("force RMSE")).split()
    single_row = next(line for line in single.stdout.splitlines() if line.startswith("force RMSE")).split()
    assert force_row[3] == force_row[4] == force_row[5] == single_row[3]


def test_wall_time_stop_and_resume(trained, training_folder):
    """A budget of 1 µs stops after every epoch; resuming until done gives the uninterrupted run's model."""
    config = training_folder / "config" / "wall.yaml"
    workdir = training_folder / "wall"
    result = invoke("train", config, "--workdir", workdir)
    assert result.exit_code == EXIT_WALL_TIME, result.output
    assert (workdir / "checkpoint.pt").is_file()
    stopped = json.loads((workdir / "metrics.json").read_text())  # the best model so far, usable as it is
    assert (workdir / "model.safetensors").is_file() and stopped["stopped"] == "wall_time"
    assert "checkpoint" in result.stdout and "--resume" in result.stdout
    for _ in range(6):
        result = invoke("train", config, "--workdir", workdir, "--resume")
        if result.exit_code != EXIT_WALL_TIME:
            break
    assert result.exit_code == 0, result.output
    resumed = json.loads((workdir / "metrics.json").read_text())
    assert resumed["epochs"] == 3
    reference = invoke("train", training_folder / "config" / "reference.yaml", "--workdir", training_folder / "ref")
    assert reference.exit_code == 0, reference.output
    uninterrupted = json.loads((training_folder / "ref" / "metrics.json").read_text())
    for split in ("train", "validation"):
        assert resumed[split]["force_rmse"] == pytest.approx(uninterrupted[split]["force_rmse"], rel=1e-9)
        assert resumed[split]["energy_rmse"] == pytest.approx(uninterrupted[split]["energy_rmse"], rel=1e-9)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_diverging_training_exits_3(tmp_path, emt_frames, write_frames, training_settings, write_config):
    frames = emt_frames(n=4)
    for index, frame in enumerate(frames):  # finite labels whose squared errors overflow
        frame.calc.results["energy"] = 1e200 * (index + 1)
    write_frames(tmp_path / "huge.extxyz", frames)
    config = write_config(tmp_path / "train.yaml", training_settings(dataset="huge.extxyz", validation_fraction=0.25))
    result = invoke("train", config, "--workdir", tmp_path / "run")
    assert result.exit_code == EXIT_DIVERGED, result.output
    assert result.stderr.startswith("annpot: error:") and "loss became" in result.stderr
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_explore_resolves_paths_and_points_to_select(tmp_path, monkeypatch, write_config):
    """The exploration engine is replaced by a stub: this checks only the command's wiring."""
    calls = []

    def fake_run_exploration(config, workdir, resume=False, log=print, trusted_baselines=()):
        calls.append((config, workdir, resume))
        log("stub exploration")
        return {"status": "finished", "frames": 12}

    stub = types.ModuleType("aiida_annpot.core.exploration")
    stub.run_exploration = fake_run_exploration
    monkeypatch.setitem(sys.modules, "aiida_annpot.core.exploration", stub)
    config = write_config(
        tmp_path / "sub" / "explore.yaml",
        {
            "models": ["m0.safetensors", "/abs/m1.safetensors"],
            "structures": "start.extxyz",
            "stages": [{"temperature": 300.0, "steps": 10}],
        },
    )
    result = invoke("explore", config, "--workdir", tmp_path / "explore", "--resume")
    assert result.exit_code == 0, result.output
    ((explored, workdir, resume),) = calls
    assert explored.models == [str(tmp_path / "sub" / "m0.safetensors"), "/abs/m1.safetensors"]
    assert explored.structures == str(tmp_path / "sub" / "start.extxyz")
    assert explored.reference_structures is None
    assert workdir == tmp_path / "explore" and resume
    assert "stub exploration" in result.stdout
    assert f"explored 12 frames; select with: annpot select {tmp_path / 'explore' / 'frames.extxyz'}" in result.stdout


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"annpot {__version__}"


def run_process(*args) -> subprocess.CompletedProcess:
    """``python -m aiida_annpot.core.cli ARGS`` in a fresh interpreter."""
    command = [sys.executable, "-m", "aiida_annpot.core.cli", *(str(a) for a in args)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_real_process(trained, tmp_path, write_config):
    """The module entry point in a fresh interpreter: success on stdout, a one-line error and code 2 on failure."""
    workdir, _ = trained
    done = run_process("info", workdir / "model.safetensors")
    assert done.returncode == 0, done.stderr
    assert "Cu" in done.stdout and "chebyshev" in done.stdout
    config = write_config(
        tmp_path / "explore.yaml",
        {
            "models": ["m.safetensors"],
            "structures": "s.extxyz",
            "stages": [{"temperature": 300.0}],
            "selection": {"trust_lo": 0.1, "trust_hi": 0.4},
        },
    )
    failed = run_process("explore", config, "--workdir", tmp_path / "explore")
    assert failed.returncode == EXIT_INPUT_ERROR
    assert failed.stderr.startswith("annpot: error:") and "selection is not an exploration setting" in failed.stderr
    assert "Traceback" not in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
    assert failed.stdout == ""


def test_console_script_on_path():
    script = Path(sys.executable).parent / "annpot"
    if not script.is_file():
        pytest.skip("annpot console script not installed next to this interpreter")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and __version__ in done.stdout


def test_explore_runs_committee_md_and_select_picks_nothing(
    trained_model, tmp_path, emt_frames, write_frames, write_config
):
    """A committee of two copies of one model agrees everywhere: every explored frame is accurate, so ``annpot
    select`` over them picks nothing."""
    write_frames(tmp_path / "start.extxyz", emt_frames(n=1, seed=5))
    config = write_config(
        tmp_path / "explore.yaml",
        {
            "models": [str(trained_model), str(trained_model)],
            "structures": "start.extxyz",
            "stages": [{"temperature": 300.0, "steps": 10, "sample_interval": 5}],
        },
    )
    result = invoke("explore", config, "--workdir", tmp_path / "explore")
    assert result.exit_code == 0, result.output
    assert "explored 2 frames; select with: annpot select" in result.stdout
    summary = json.loads((tmp_path / "explore" / "summary.json").read_text())
    assert summary["frames"] == 2 and "ratios" not in summary  # the exploration does not select
    assert not (tmp_path / "explore" / "selected.extxyz").exists()

    output = tmp_path / "picks" / "selected.extxyz"
    output.parent.mkdir()
    result = invoke("select", tmp_path / "explore" / "frames.extxyz", "--output", output)
    assert result.exit_code == 0, result.output
    assert f"2 frames: accurate 1.000, candidate 0.000, failed 0.000; 0 selected → {output}" in result.stdout
    assert output.read_text() == ""
    selection = json.loads((output.parent / "selection.json").read_text())
    assert selection["ratios"]["accurate"] == 1.0 and selection["selected"] == []


def test_select_with_an_invalid_config_exits_2(tmp_path, write_config):
    (tmp_path / "frames.extxyz").write_text("")
    config = write_config(tmp_path / "selection.yaml", {"trust_lo": 0.4, "trust_hi": 0.2})
    result = invoke("select", tmp_path / "frames.extxyz", "--config", config)
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert result.stderr.startswith("annpot: error:") and "trust_lo (0.4) must be below trust_hi (0.2)" in result.stderr
    assert not (tmp_path / "selected.extxyz").exists()
