"""GPUs for the annpot CalcJobs: ``metadata.options.gpus`` becomes Slurm's ``--gres`` line in the submit script,
beside the user's own scheduler commands; impossible or conflicting requests are refused at submit time."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiida.engine import run_get_node
from aiida.orm import Computer, Dict, InstalledCode

from aiida_annpot.calculations.train import AnnTrainCalculation
from aiida_annpot.data import AtomisticDataset


def _code(scheduler: str, tmp_path_factory) -> InstalledCode:
    """An annpot code on a computer of ``scheduler`` (local transport: dry runs write their folder here)."""
    label = f"gpu-{scheduler.replace('.', '-')}"
    computer = Computer(
        label=label,
        hostname="localhost",
        transport_type="core.local",
        scheduler_type=scheduler,
        workdir=str(tmp_path_factory.mktemp(label)),
    ).store()
    computer.configure(safe_interval=0.0)
    return InstalledCode(
        computer=computer, filepath_executable="/usr/bin/annpot", default_calc_job_plugin="annpot.train"
    ).store()


@pytest.fixture(scope="module")
def codes(aiida_profile, tmp_path_factory) -> dict[str, InstalledCode]:
    return {name: _code(name, tmp_path_factory) for name in ("core.slurm", "core.pbspro", "core.direct")}


@pytest.fixture(scope="module")
def dataset(emt_frames):
    return AtomisticDataset.from_frames(emt_frames(n=4, seed=3)).store()


def _builder(code, dataset, training_settings, config=None, **options):
    builder = AnnTrainCalculation.get_builder()
    builder.code = code
    builder.dataset = dataset
    builder.config = Dict(config or training_settings())
    builder.metadata.options.max_wallclock_seconds = 600
    for name, value in options.items():
        setattr(builder.metadata.options, name, value)
    return builder


def _submit_script(builder) -> str:
    builder.metadata.dry_run = True
    _, node = run_get_node(builder)
    return (Path(node.dry_run_info["folder"]) / "_aiidasubmit.sh").read_text()


def test_gpus_become_a_gres_line_ahead_of_the_users_own_slurm_commands(codes, dataset, training_settings):
    custom = "#SBATCH --constraint=a100\n#SBATCH --account=project"
    script = _submit_script(
        _builder(codes["core.slurm"], dataset, training_settings, gpus=2, custom_scheduler_commands=custom)
    )
    lines = script.splitlines()
    assert lines.count("#SBATCH --gres=gpu:2") == 1
    start = lines.index("#SBATCH --gres=gpu:2")
    assert lines[start + 1 : start + 3] == custom.splitlines()  # the user's commands follow, unchanged


@pytest.mark.parametrize("gpus", [None, 0])
def test_no_gpus_no_gres_line(codes, dataset, training_settings, gpus):
    options = {} if gpus is None else {"gpus": gpus}
    script = _submit_script(_builder(codes["core.slurm"], dataset, training_settings, **options))
    assert "--gres" not in script and "#SBATCH --nodes=1" in script


def test_the_direct_scheduler_takes_gpus_without_a_request_line(codes, dataset, training_settings):
    script = _submit_script(_builder(codes["core.direct"], dataset, training_settings, gpus=1))
    assert "gpu" not in script


@pytest.mark.parametrize(
    ("code", "config", "options", "message"),
    [
        ("core.pbspro", None, {"gpus": 1}, r"annpot writes GPU requests for core.slurm, core.direct only.*core.pbspro"),
        ("core.slurm", None, {"gpus": -1}, r"gpus must be a whole number of GPUs, 0 or more, got -1"),
        (
            "core.slurm",
            None,
            {"gpus": 1, "custom_scheduler_commands": "#SBATCH --gpus=1"},
            r"ask for GPUs once",
        ),
        ("core.slurm", {"device": "cpu"}, {"gpus": 1}, r"asks for 1 GPU\(s\) but the configuration sets device: cpu"),
    ],
    ids=["pbspro", "negative", "twice", "device-cpu"],
)
def test_impossible_gpu_requests_are_refused_at_submit_time(
    codes, dataset, training_settings, code, config, options, message
):
    config = training_settings(**(config or {}))
    with pytest.raises(ValueError, match=message):
        run_get_node(_builder(codes[code], dataset, training_settings, config=config, **options))
