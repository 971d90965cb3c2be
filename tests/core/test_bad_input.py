"""Bad input through the ``annpot`` command: an error message naming the problem, exit code 2, no traceback and
nothing written that looks like a result (no model.safetensors, metrics.json or parity.csv)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from click.testing import CliRunner

from aiida_annpot.common.config import ChebyshevConfig, NetworkConfig
from aiida_annpot.core.cli import cli
from aiida_annpot.core.errors import EXIT_INPUT_ERROR
from aiida_annpot.core.model import Potential
from aiida_annpot.core.modelfile import save_model

RESULT_FILES = ("model.safetensors", "metrics.json", "learning_curve.csv", "parity.csv")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def assert_input_error(result, *words: str) -> None:
    """Exit code 2 and an ``annpot: error:`` line on stderr mentioning every one of ``words`` (case-insensitive)."""
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert result.stderr.startswith("annpot: error:"), result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.lower()
    for word in words:
        assert word.lower() in message, f"{word!r} not in {result.stderr!r}"
    assert "finished" not in result.stdout and "wrote" not in result.stdout


def assert_no_results(folder) -> None:
    for name in RESULT_FILES:
        assert not (folder / name).exists(), name


def labelled(atoms, energy=0.0, forces=None):
    atoms = atoms.copy()
    forces = np.zeros((len(atoms), 3)) if forces is None else forces
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=np.zeros(6))
    return atoms


def bad_frames(kind: str, good: list) -> list:
    """Good frames plus one with the defect ``kind`` (or no frames at all for ``empty``)."""
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    if kind == "empty":
        return []
    if kind == "nan_energy":
        return [*good, labelled(cell, energy=float("nan"))]
    if kind == "infinite_force":
        forces = np.zeros((4, 3))
        forces[2, 1] = np.inf
        return [*good, labelled(cell, forces=forces)]
    if kind == "close_atoms":
        close = cell.copy()
        close.positions[1] = close.positions[0] + [0.3, 0.0, 0.0]
        return [*good, labelled(close)]
    if kind == "zero_volume":
        flat = cell.copy()
        flat.cell[2] = [0.0, 0.0, 0.0]
        return [*good, labelled(flat)]
    raise ValueError(kind)


#: Defect → words the error message must contain.
BAD_DATA = {
    "empty": ("empty",),
    "nan_energy": ("frame 4", "non-finite energy"),
    "infinite_force": ("frame 4", "non-finite forces"),
    "close_atoms": ("frame 4", "0.300 å apart", "below 0.5"),
    "zero_volume": ("frame 4", "zero volume"),
}


@pytest.mark.parametrize("kind", BAD_DATA)
def test_training_rejects_bad_data(kind, tmp_path, emt_frames, write_frames, training_settings, write_config):
    write_frames(tmp_path / "data.extxyz", bad_frames(kind, emt_frames(n=4)))
    config = write_config(tmp_path / "train.yaml", training_settings(dataset="data.extxyz"))
    result = invoke("train", config, "--workdir", tmp_path / "run")
    assert_input_error(result, "data.extxyz", *BAD_DATA[kind])
    assert_no_results(tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("kind", BAD_DATA)
def test_evaluation_rejects_bad_data(kind, trained_model, tmp_path, emt_frames, write_frames):
    data = write_frames(tmp_path / "data.extxyz", bad_frames(kind, emt_frames(n=4)))
    result = invoke("evaluate", trained_model, data, "--output", tmp_path / "out")
    assert_input_error(result, "data.extxyz", *BAD_DATA[kind])
    assert_no_results(tmp_path / "out")


def test_element_not_covered_by_model(trained_model, tmp_path, emt_frames, write_frames):
    data = write_frames(tmp_path / "gold.extxyz", emt_frames(n=2, element="Au"))
    result = invoke("evaluate", trained_model, data, "--output", tmp_path / "out")
    assert_input_error(result, "Au", "not covered", "Cu")
    assert_no_results(tmp_path / "out")


def test_training_elements_must_cover_the_data(tmp_path, emt_frames, write_frames, training_settings, write_config):
    write_frames(tmp_path / "gold.extxyz", emt_frames(n=4, element="Au"))
    config = write_config(tmp_path / "train.yaml", training_settings(dataset="gold.extxyz", elements=["Cu"]))
    result = invoke("train", config, "--workdir", tmp_path / "run")
    assert_input_error(result, "Au", "not in elements")
    assert_no_results(tmp_path / "run")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"max_epoch": 5}, ("max_epoch", "extra inputs are not permitted")),
        ({"batch_size": "many"}, ("batch_size", "valid integer")),
        ({"descriptor": {"type": "chebyshev", "radial_cutoff": 3.0, "angular_cutoff": 4.0}}, ("angular_cutoff",)),
        ({"dataset": None}, ("dataset", "field required")),
    ],
    ids=["unknown-key", "wrong-type", "cutoff-order", "missing-dataset"],
)
def test_training_config_errors(change, words, tmp_path, training_settings, write_config):
    settings = {**training_settings(dataset="data.extxyz"), **change}
    settings = {key: value for key, value in settings.items() if value is not None}
    config = write_config(tmp_path / "train.yaml", settings)
    result = invoke("train", config, "--workdir", tmp_path / "run")
    assert_input_error(result, "train.yaml", "invalid TrainingConfig", *words)
    assert_no_results(tmp_path / "run")


def test_unreadable_config(tmp_path):
    (tmp_path / "train.yaml").write_text("dataset: [unclosed\n")
    assert_input_error(invoke("train", tmp_path / "train.yaml"), "cannot read configuration", "train.yaml")
    assert_input_error(invoke("train", tmp_path / "missing.yaml"), "cannot read configuration", "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert_input_error(invoke("train", tmp_path / "list.yaml"), "expected a mapping")


def test_missing_dataset_file(tmp_path, training_settings, write_config):
    config = write_config(tmp_path / "train.yaml", training_settings(dataset="nowhere.extxyz"))
    result = invoke("train", config, "--workdir", tmp_path / "run")
    assert_input_error(result, "nowhere.extxyz", "does not exist")
    assert_no_results(tmp_path / "run")


@pytest.fixture(params=["random", "truncated", "empty", "missing"])
def corrupt_model(request, trained_model, tmp_path):
    path = tmp_path / "corrupt.safetensors"
    if request.param == "random":
        path.write_bytes(np.random.default_rng(0).bytes(2048))
    elif request.param == "truncated":
        content = trained_model.read_bytes()
        path.write_bytes(content[: len(content) - 100])
    elif request.param == "empty":
        path.write_bytes(b"")
    return path


def test_corrupt_model_info(corrupt_model):
    assert_input_error(invoke("info", corrupt_model), "corrupt.safetensors")
    assert_input_error(invoke("info", corrupt_model, "--json"), "corrupt.safetensors")


def test_corrupt_model_evaluate(corrupt_model, trained_model, tmp_path):
    data = trained_model.parent / "validation.extxyz"
    assert_input_error(invoke("evaluate", corrupt_model, data, "--output", tmp_path / "out"), "corrupt.safetensors")
    assert_no_results(tmp_path / "out")
    result = invoke("evaluate", trained_model, data, "--member", corrupt_model, "--output", tmp_path / "out")
    assert_input_error(result, "corrupt.safetensors")
    assert_no_results(tmp_path / "out")


def test_corrupt_init_model(corrupt_model, trained_model, tmp_path, training_settings, write_config):
    settings = training_settings(dataset=str(trained_model.parent / "train.extxyz"), init_model=str(corrupt_model))
    result = invoke("train", write_config(tmp_path / "train.yaml", settings), "--workdir", tmp_path / "run")
    assert_input_error(result, "corrupt.safetensors")
    assert_no_results(tmp_path / "run")


def test_mismatched_committee_members(trained_model, tmp_path):
    """A member with a different descriptor order cannot join the committee."""
    descriptor = ChebyshevConfig(radial_order=5, angular_order=2, radial_cutoff=4.0, angular_cutoff=3.0)
    other = save_model(Potential(["Cu"], descriptor, NetworkConfig(hidden=[8])), tmp_path / "other.safetensors")
    data = trained_model.parent / "validation.extxyz"
    result = invoke("evaluate", trained_model, data, "--member", other, "--output", tmp_path / "out")
    assert_input_error(result, "other.safetensors", "does not match", "descriptor")
    assert_no_results(tmp_path / "out")


def test_selection_trust_window_inverted(tmp_path, write_config):
    (tmp_path / "frames.extxyz").write_text("")
    config = write_config(tmp_path / "selection.yaml", {"trust_lo": 0.5, "trust_hi": 0.1})
    result = invoke("select", tmp_path / "frames.extxyz", "--config", config, "--output", tmp_path / "out" / "s.xyz")
    assert_input_error(
        result, "selection.yaml", "invalid SelectionConfig", "trust_lo (0.5) must be below trust_hi (0.1)"
    )
    assert not (tmp_path / "out").exists()


def test_exploration_config_with_a_selection(tmp_path, write_config):
    """The selection moved out of the exploration: a config that still has one is told where it went."""
    config = write_config(
        tmp_path / "explore.yaml",
        {
            "models": ["m.safetensors"],
            "structures": "start.extxyz",
            "stages": [{"temperature": 300.0}],
            "selection": {"trust_lo": 0.05, "trust_hi": 0.3},
        },
    )
    result = invoke("explore", config, "--workdir", tmp_path / "explore")
    assert_input_error(
        result, "explore.yaml", "invalid ExplorationConfig", "selection is not an exploration setting", "annpot select"
    )
    assert not (tmp_path / "explore").exists()


def test_exploration_config_typo(tmp_path, write_config):
    config = write_config(
        tmp_path / "explore.yaml",
        {
            "models": ["m.safetensors"],
            "structures": "start.extxyz",
            "stages": [{"temperature": 300.0, "step": 10}],
        },
    )
    assert_input_error(invoke("explore", config), "stages.0.step", "extra inputs are not permitted")


def test_exploration_element_not_covered(trained_model, tmp_path, emt_frames, write_frames, write_config):
    write_frames(tmp_path / "gold.extxyz", emt_frames(n=1, element="Au"))
    config = write_config(
        tmp_path / "explore.yaml",
        {
            "models": [str(trained_model)],
            "structures": "gold.extxyz",
            "stages": [{"temperature": 300.0, "steps": 5}],
        },
    )
    result = invoke("explore", config, "--workdir", tmp_path / "explore")
    assert_input_error(result, "Au", "not covered")
    assert not (tmp_path / "explore" / "summary.json").exists()
