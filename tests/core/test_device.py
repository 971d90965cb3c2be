"""The ``device`` setting: validation, resolution, where the engine's tensors live, and the records of the device.

Tests marked ``needs_cuda`` run the CUDA path where torch finds a GPU and are skipped elsewhere. Without one, a
model call and a training epoch run with torch's default device set to ``meta``: a tensor the engine built without
naming its device would land there and fail the call, which is what would put it on the CPU beside a GPU model.
"""

from __future__ import annotations

import json
from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase.build import bulk
from click.testing import CliRunner
from safetensors.torch import load_file

from aiida_annpot.common.config import (
    BehlerParrinelloConfig,
    ChebyshevConfig,
    ConfigError,
    ExplorationConfig,
    NetworkConfig,
    ScoringConfig,
    TrainingConfig,
    load_config,
)
from aiida_annpot.common.contract import STATUS_FILE
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.cli import cli
from aiida_annpot.core.device import device_record, resolve_device
from aiida_annpot.core.errors import EXIT_INPUT_ERROR, DeviceUnavailableError
from aiida_annpot.core.exploration import run_exploration
from aiida_annpot.core.geometry import NeighborSearch
from aiida_annpot.core.model import Potential
from aiida_annpot.core.modelfile import load_potential, read_metadata
from aiida_annpot.core.scoring import score_frames
from aiida_annpot.core.training import METRICS, MODEL, Trainer

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
QUIET = {"log": lambda line: None}
#: What ``auto`` gives on this machine.
HERE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SMALL = {
    "descriptor": {"type": "chebyshev", "radial_order": 4, "angular_order": 2, "radial_cutoff": 4.0},
    "network": {"hidden": [6]},
    "batch_size": 4,
    "max_epochs": 2,
    "dtype": "float64",
    "threads": 1,
}
STAGE = {"temperature": 300.0, "steps": 6, "sample_interval": 3}


@pytest.fixture
def no_gpu(monkeypatch):
    """This machine as one without a GPU, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, emt_frames, write_frames) -> Path:
    return write_frames(tmp_path_factory.mktemp("device") / "cu.extxyz", emt_frames(n=10, seed=5))


def _cell(element_every: int | None = None, seed: int = 1):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    if element_every:
        atoms.numbers[::element_every] = 79
    atoms.rattle(0.05, seed=seed)
    return atoms


# --- the setting ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "required"),
    [
        (TrainingConfig, {"dataset": "d.extxyz"}),
        (ExplorationConfig, {"models": ["m"], "structures": "s", "stages": [STAGE]}),
        (ScoringConfig, {"models": ["m"], "frames": "f"}),
    ],
)
def test_device_is_auto_cpu_or_cuda_and_auto_stays_out_of_dumps(schema, required):
    assert schema(**required).device == "auto"
    assert "device" not in schema(**required).model_dump()  # dumps (and digests) of older configurations unchanged
    assert schema(**required, device="cuda").model_dump()["device"] == "cuda"
    assert schema(**required, device="cpu").model_dump()["device"] == "cpu"
    for wrong in ("gpu", "cuda:0"):
        with pytest.raises(ConfigError, match=rf"device: Input should be 'auto', 'cpu' or 'cuda' \(got '{wrong}'\)"):
            load_config({**required, "device": wrong}, schema)


def test_auto_takes_the_gpu_only_where_torch_finds_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    assert device_record(torch.device("cpu")) == {"type": "cpu"}


def test_cuda_without_a_gpu_fails_at_the_start_naming_the_setting(no_gpu, tmp_path):
    """Training, exploration and scoring check the device before reading anything (the files here do not exist)."""
    message = r"device is 'cuda' but torch finds no CUDA device on this machine .*set device to auto or cpu"
    with pytest.raises(DeviceUnavailableError, match=message):
        resolve_device("cuda")
    missing = str(tmp_path / "missing.extxyz")
    with pytest.raises(DeviceUnavailableError, match=message):
        Trainer(TrainingConfig(dataset=missing, device="cuda"), tmp_path / "t", **QUIET)
    with pytest.raises(DeviceUnavailableError, match=message):
        run_exploration(
            ExplorationConfig(models=[missing], structures=missing, stages=[STAGE], device="cuda"), tmp_path
        )
    with pytest.raises(DeviceUnavailableError, match=message):
        score_frames(ScoringConfig(models=[missing], frames=missing, device="cuda"), tmp_path / "s", **QUIET)


def test_the_command_reports_a_missing_gpu_as_bad_input(no_gpu, dataset, write_config, tmp_path):
    config = write_config(tmp_path / "train.yaml", {**SMALL, "dataset": str(dataset), "device": "cuda"})
    result = CliRunner().invoke(cli, ["train", str(config), "--workdir", str(tmp_path / "run")])
    assert result.exit_code == EXIT_INPUT_ERROR
    assert "device is 'cuda' but torch finds no CUDA device" in result.output
    status = json.loads((tmp_path / "run" / STATUS_FILE).read_text())
    assert status["exit_code"] == EXIT_INPUT_ERROR and "device is 'cuda'" in status["message"]


# --- what records the device ----------------------------------------------------------------------------------------


def test_training_records_the_device_in_its_metrics_the_model_file_and_annpot_info(dataset, tmp_path):
    lines = []
    Trainer(TrainingConfig(dataset=str(dataset), **SMALL), tmp_path, log=lines.append).run()
    expected = device_record(HERE)
    assert expected["type"] == HERE.type
    assert json.loads((tmp_path / METRICS).read_text())["device"] == expected
    assert read_metadata(tmp_path / MODEL)["metrics"]["device"] == expected
    assert f"device: {HERE.type}" in [line.split(" (")[0] for line in lines]
    info = CliRunner().invoke(cli, ["info", str(tmp_path / MODEL)])
    assert info.exit_code == 0, info.output
    assert f"trained on:   {HERE.type}" in info.stdout
    header = info.stdout.split("metrics:\n")[1].splitlines()[0]
    assert header.split() == ["metric", "unit", "train", "validation"]  # no column for the device's record


def test_exploration_and_scoring_summaries_record_the_device(trained_model, tmp_path):
    ase.io.write(tmp_path / "start.extxyz", [_cell()])
    config = ExplorationConfig(models=[str(trained_model)], structures=str(tmp_path / "start.extxyz"), stages=[STAGE])
    summary = run_exploration(config, tmp_path / "explore", **QUIET)
    assert summary["device"] == device_record(HERE)
    assert json.loads((tmp_path / "explore" / "summary.json").read_text())["device"] == device_record(HERE)
    scoring = ScoringConfig(models=[str(trained_model)], frames=str(tmp_path / "explore" / "frames.extxyz"))
    assert score_frames(scoring, tmp_path / "score", **QUIET)["device"] == device_record(HERE)


# --- where tensors are built ----------------------------------------------------------------------------------------


@pytest.fixture
def meta_default():
    """Tensors built without a device go to ``meta`` inside the block; mixing them with real ones fails."""

    class Guard:
        def __enter__(self):
            torch.set_default_device("meta")

        def __exit__(self, *exc):
            torch.set_default_device(None)

    return Guard()


@pytest.mark.parametrize(
    "descriptor",
    [ChebyshevConfig(radial_order=4, angular_order=2, radial_cutoff=4.0, angular_cutoff=3.0), BehlerParrinelloConfig()],
    ids=["chebyshev", "behler_parrinello"],
)
def test_a_model_call_builds_every_tensor_on_the_models_device(descriptor, meta_default):
    """Energy, forces, stress, committee deviations, fingerprint and grades; and a batched call of two cells."""
    potential = Potential(["Au", "Cu"], descriptor, NetworkConfig(hidden=[4]), n_members=2).double()
    potential.networks.reset_parameters(torch.Generator().manual_seed(0))
    calc = AnnCalculator(potential, device="cpu")
    atoms = _cell(element_every=3)
    atoms.calc = calc
    properties = ("forces", "stress", "max_force_std", "fingerprint", "extrapolation")
    expected = {name: np.copy(calc.get_property(name, atoms)) for name in properties}
    search = NeighborSearch(potential.descriptor.cutoff)
    cells = [_cell(element_every=2, seed=2), _cell(seed=3)]
    pairs = [search(c.positions, c.cell.array, c.pbc, dtype=torch.float64) for c in cells]
    expected_many = [
        p.energy
        for p in potential.forward_many([(c.numbers, p, c.get_volume()) for c, p in zip(cells, pairs, strict=True)])
    ]
    calc.reset()
    with meta_default:
        for name in properties:
            np.testing.assert_allclose(calc.get_property(name, atoms), expected[name], rtol=1e-12, err_msg=name)
        many = potential.forward_many([(c.numbers, p, c.get_volume()) for c, p in zip(cells, pairs, strict=True)])
    for prediction, energy in zip(many, expected_many, strict=True):
        assert prediction.energy.device == torch.device("cpu")
        torch.testing.assert_close(prediction.energy, energy)


@pytest.mark.parametrize("feature_store", ["memory", "disk"])
def test_a_training_epoch_builds_every_tensor_on_the_models_device(dataset, tmp_path, feature_store, meta_default):
    """Batches (from memory or disk), loss, backward, validation parity: an epoch under a ``meta`` default device
    ends where one without it does."""
    config = TrainingConfig(dataset=str(dataset), feature_store=feature_store, **SMALL)
    reference, guarded = Trainer(config, tmp_path / "a", **QUIET), Trainer(config, tmp_path / "b", **QUIET)
    reference.initial_loss = reference._validation_loss()[0]
    reference._epoch()
    try:
        with meta_default:
            guarded.initial_loss = guarded._validation_loss()[0]
            guarded._epoch()
    finally:
        reference.run(), guarded.run()  # closes the stores
    assert guarded.curve[0] == pytest.approx(reference.curve[0], rel=1e-12, nan_ok=True)


# --- the CUDA path --------------------------------------------------------------------------------------------------


@needs_cuda
def test_a_training_epoch_on_cuda_matches_the_cpu(dataset, tmp_path):
    """float64, one epoch: the GPU run (features on disk, batches moved at batch time) ends where the CPU run does;
    its model file loads on the CPU and predicts there what it predicts on the GPU."""
    settings = {**SMALL, "max_epochs": 1, "keep_weights": "last_epoch"}
    cpu = Trainer(TrainingConfig(dataset=str(dataset), device="cpu", **settings), tmp_path / "cpu", **QUIET).run()
    cuda_config = TrainingConfig(dataset=str(dataset), device="cuda", feature_store="disk", **settings)
    cuda = Trainer(cuda_config, tmp_path / "cuda", **QUIET).run()
    assert cuda.metrics["device"] == {"type": "cuda", "name": torch.cuda.get_device_name()}
    assert cuda.metrics["validation"] == pytest.approx(cpu.metrics["validation"], rel=1e-5, nan_ok=True)
    weights_cpu, weights_cuda = load_file(tmp_path / "cpu" / MODEL), load_file(tmp_path / "cuda" / MODEL)
    for name, value in weights_cpu.items():
        assert weights_cuda[name].device == torch.device("cpu")
        torch.testing.assert_close(weights_cuda[name], value, rtol=1e-5, atol=1e-8, msg=name)

    model = str(tmp_path / "cuda" / MODEL)
    assert load_potential(model).device == torch.device("cpu")
    atoms = _cell()
    results = {}
    for device in ("cpu", "cuda"):
        atoms.calc = AnnCalculator(model, device=device)
        assert atoms.calc.potential.device.type == device
        results[device] = (atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress())
        assert isinstance(results[device][1], np.ndarray)
    for on_cpu, on_cuda in zip(results["cpu"], results["cuda"], strict=True):
        np.testing.assert_allclose(on_cuda, on_cpu, rtol=1e-9, atol=1e-10)


@needs_cuda
def test_exploration_on_cuda_samples_the_frames_of_the_cpu(trained_model, tmp_path):
    """A short float64 run: the same frames to rounding (a few steps, before chaos separates trajectories)."""
    ase.io.write(tmp_path / "start.extxyz", [_cell(seed=1), _cell(seed=2)])
    frames = {}
    for device in ("cpu", "cuda"):
        config = ExplorationConfig(
            models=[str(trained_model)] * 2,
            structures=str(tmp_path / "start.extxyz"),
            stages=[STAGE],
            dtype="float64",
            device=device,
        )
        summary = run_exploration(config, tmp_path / device, **QUIET)
        assert summary["device"]["type"] == device
        frames[device] = ase.io.read(tmp_path / device / "frames.extxyz", ":")
    assert len(frames["cuda"]) == len(frames["cpu"]) > 0
    for on_cuda, on_cpu in zip(frames["cuda"], frames["cpu"], strict=True):
        np.testing.assert_allclose(on_cuda.positions, on_cpu.positions, atol=1e-8)
        assert on_cuda.info["energy"] == pytest.approx(on_cpu.info["energy"], rel=1e-9)
