"""Model files are untrusted input: loading one never imports a module or runs a command that the file names, and a
file edited after it was written is refused.

The forged files here are self-consistent (their digest is recomputed, as a forger would): the digest is not what
keeps code from running, the refusal to build an import-path baseline is.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from aiida_annpot.common import baselines as common_baselines
from aiida_annpot.common.config import BaselineConfig, ChebyshevConfig, ConfigError, TrainingConfig, load_config
from aiida_annpot.core import baselines
from aiida_annpot.core.baselines import UntrustedBaselineError, make_baseline
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.cli import cli
from aiida_annpot.core.errors import EXIT_INPUT_ERROR, ModelFileError
from aiida_annpot.core.modelfile import content_digest, load_potential, read_metadata, save_model

from .test_modelfile import make_potential

#: A module that leaves a marker file behind when it is imported, and an ASE calculator in it that runs a command.
PAYLOAD = """
import pathlib, subprocess
pathlib.Path({marker!r}).write_text("imported")
from ase.calculators.lj import LennardJones

class Payload(LennardJones):
    def __init__(self, command=None, **kwargs):
        if command:
            subprocess.run(command, shell=True)
        super().__init__(**kwargs)
"""


@pytest.fixture
def payload(tmp_path, monkeypatch):
    """(module name, import marker, command marker): a module on sys.path that marks its own import."""
    name = f"annpot_payload_{tmp_path.name.replace('-', '_')}"
    marker = tmp_path / "imported.marker"
    (tmp_path / f"{name}.py").write_text(PAYLOAD.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, marker, tmp_path / "command.marker"
    sys.modules.pop(name, None)


def forge(source, path, **changes):
    """Copy model file ``source`` to ``path`` with metadata ``changes`` and a recomputed (valid) digest."""
    tensors = load_file(str(source))
    metadata = {**read_metadata(source), **changes}
    metadata["digest"] = content_digest(tensors, metadata)
    save_file(tensors, str(path), metadata={"annpot": json.dumps(metadata)})
    return path


def model_file(tmp_path, baseline=None):
    potential = make_potential(
        descriptor=ChebyshevConfig(radial_order=4, radial_cutoff=4.0, angular_order=2, angular_cutoff=3.0),
        elements=("Si",),
    )
    potential.baseline_config = baseline
    return save_model(potential, tmp_path / "model.safetensors")


def si_data(tmp_path):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = SinglePointCalculator(atoms, energy=-40.0, forces=atoms.positions * 0.0)
    path = tmp_path / "data.extxyz"
    atoms.write(path)
    return path


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def gulp_record(command_marker):
    return {"name": "ase.calculators.gulp.GULP", "parameters": {"command": f"touch {command_marker}"}}


# --- a baseline named by a file is never imported or run -------------------------------------------------------------


def test_a_command_in_a_model_file_never_runs(tmp_path):
    marker = tmp_path / "ran.marker"
    forged = forge(model_file(tmp_path), tmp_path / "gulp.safetensors", baseline=gulp_record(marker))
    with pytest.raises(UntrustedBaselineError) as error:
        AnnCalculator(forged).get_potential_energy(bulk("Si", "diamond", a=5.43))
    message = str(error.value)
    assert str(forged) in message and "ase.calculators.gulp.GULP" in message and "--trust-baseline" in message
    for command in (("evaluate", forged, si_data(tmp_path)), ("info", forged)):
        result = invoke(*command)
        if command[0] == "evaluate":
            assert result.exit_code == EXIT_INPUT_ERROR and "is an import path" in result.output, result.output
        else:  # info only reads the metadata, and says what the baseline would need
            assert result.exit_code == 0 and "built only with --trust-baseline" in result.output, result.output
    assert not marker.exists()


def test_explore_refuses_a_model_file_that_names_an_import_path(tmp_path):
    marker = tmp_path / "ran.marker"
    forged = forge(model_file(tmp_path), tmp_path / "gulp.safetensors", baseline=gulp_record(marker))
    bulk("Si", "diamond", a=5.43, cubic=True).write(tmp_path / "start.extxyz")
    config = {
        "models": [forged.name],
        "structures": "start.extxyz",
        "stages": [{"temperature": 300, "steps": 10, "timestep": 1.0, "sample_interval": 5}],
    }
    (tmp_path / "explore.yaml").write_text(yaml.safe_dump(config))
    result = invoke("explore", tmp_path / "explore.yaml", "--workdir", tmp_path / "run")
    assert result.exit_code == EXIT_INPUT_ERROR and "ase.calculators.gulp.GULP" in result.output, result.output
    assert json.loads((tmp_path / "run" / "annpot_status.json").read_text())["status"] == "input_error"
    assert not marker.exists()


def test_loading_never_imports_the_module_a_file_names(tmp_path, payload):
    name, imported, ran = payload
    record = {"name": f"{name}.Payload", "parameters": {"command": f"touch {ran}"}}
    forged = forge(model_file(tmp_path), tmp_path / "payload.safetensors", baseline=record)
    potential = load_potential(forged)  # the weights load; the baseline is not built
    assert potential.baseline_config.name == f"{name}.Payload"
    with pytest.raises(UntrustedBaselineError, match=name):
        AnnCalculator(forged)
    config = load_config({"dataset": "d.extxyz", "baseline": record}, TrainingConfig)  # a configuration is a file too
    with pytest.raises(UntrustedBaselineError, match="is an import path"):
        make_baseline(config.baseline)
    with pytest.raises(ConfigError, match="unknown baseline"):
        load_config({"dataset": "d.extxyz", "baseline": {"name": "rm -rf /"}}, TrainingConfig)
    assert name not in sys.modules and not imported.exists() and not ran.exists()


def test_a_training_configuration_cannot_trust_its_own_baseline(tmp_path, payload):
    name, imported, ran = payload
    data = si_data(tmp_path)
    config = {
        "dataset": data.name,
        "baseline": {"name": f"{name}.Payload", "parameters": {"command": f"touch {ran}"}},
        "max_epochs": 1,
    }
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    result = invoke("train", tmp_path / "train.yaml", "--workdir", tmp_path / "run")
    assert result.exit_code == EXIT_INPUT_ERROR and "--trust-baseline" in result.output, result.output
    assert not imported.exists() and not ran.exists()


def test_an_explicitly_trusted_import_path_is_built(tmp_path, payload):
    name, imported, _ = payload
    record = {"name": f"{name}.Payload", "parameters": {"sigma": 2.0, "epsilon": 0.01, "rc": 4.0}}
    forged = forge(model_file(tmp_path), tmp_path / "payload.safetensors", baseline=record)
    calculator = AnnCalculator(forged, trusted_baselines=[f"{name}.Payload"])
    assert type(calculator.baseline).__name__ == "Payload" and imported.exists()
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.calc = calculator
    assert torch.isfinite(torch.tensor(atoms.get_potential_energy()))
    result = invoke("evaluate", forged, si_data(tmp_path), "--trust-baseline", f"{name}.Payload")
    assert result.exit_code == 0, result.output


def test_an_installed_entry_point_is_a_registered_baseline(tmp_path, payload, monkeypatch):
    name, imported, _ = payload
    point = importlib.metadata.EntryPoint(name="payload", value=f"{name}:Payload", group=baselines.ENTRY_POINT_GROUP)
    monkeypatch.setattr(common_baselines, "_entry_points", lambda: {"payload": point})
    assert baselines.is_registered("payload") and "payload" in baselines.registered_names()
    config = BaselineConfig(name="payload", parameters={"sigma": 2.0})
    assert type(make_baseline(config)).__name__ == "Payload" and imported.exists()


@pytest.mark.parametrize("name", ["this.Nothing", "os.system", "subprocess.Popen"])
def test_config_validation_imports_nothing(name):
    was_loaded = name.split(".")[0] in sys.modules
    config = BaselineConfig(name=name)  # only the form of an import path is checked
    assert (name.split(".")[0] in sys.modules) == was_loaded
    with pytest.raises(UntrustedBaselineError, match="a file cannot choose code to import"):
        make_baseline(config)


# --- the digest: a file edited after it was written is refused -------------------------------------------------------


def _rewrite(source, path, metadata=None, tensors=None):
    """Write ``path`` with edited metadata or tensors but the digest ``source`` recorded (a hand edit)."""
    header = read_metadata(source) if metadata is None else metadata
    save_file(
        load_file(str(source)) if tensors is None else tensors, str(path), metadata={"annpot": json.dumps(header)}
    )
    return path


@pytest.mark.parametrize(
    "edit",
    [
        lambda meta, tensors: meta.update(elements=["C"]),
        lambda meta, tensors: meta.update(metrics={"validation": {"energy_rmse": 0.01, "force_rmse": 0.001}}),
        lambda meta, tensors: meta.update(baseline={"name": "zbl", "parameters": {}}),
        lambda meta, tensors: tensors["networks.weight.0"].mul_(1.0001),
        lambda meta, tensors: tensors["reference_energy"].add_(0.1),
    ],
    ids=["elements", "metrics", "baseline", "weights", "reference-energy"],
)
def test_an_edited_file_is_refused_naming_it(tmp_path, edit):
    source = save_model(make_potential(), tmp_path / "model.safetensors", metrics={"validation": {"energy_rmse": 3.0}})
    metadata, tensors = read_metadata(source), load_file(str(source))
    edit(metadata, tensors)
    edited = _rewrite(source, tmp_path / "edited.safetensors", metadata, tensors)
    with pytest.raises(ModelFileError, match="was modified after it was written") as error:
        load_potential(edited)
    assert str(edited) in str(error.value)
    result = invoke("info", edited)
    assert result.exit_code == EXIT_INPUT_ERROR and "was modified after it was written" in result.output


def test_the_digest_is_recorded_and_shown(tmp_path):
    source = save_model(make_potential(), tmp_path / "model.safetensors")
    digest = read_metadata(source)["digest"]
    assert digest.startswith("sha256:") and len(digest) == len("sha256:") + 64
    assert digest in invoke("info", source).output
    with safe_open(str(source), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
    assert content_digest(tensors, read_metadata(source)) == digest
    assert save_model(load_potential(source), tmp_path / "again.safetensors")  # a round trip keeps a valid digest
    assert read_metadata(tmp_path / "again.safetensors")["digest"] == digest


def test_a_file_without_a_digest_is_refused_unless_it_predates_digests(tmp_path):
    source = save_model(make_potential(), tmp_path / "model.safetensors")
    metadata = read_metadata(source)
    del metadata["digest"]
    stripped = _rewrite(source, tmp_path / "stripped.safetensors", metadata)
    with pytest.raises(ModelFileError, match="has no content digest"):
        load_potential(stripped)
    old = _rewrite(source, tmp_path / "v1.safetensors", {**metadata, "format_version": 1})
    assert sorted(load_potential(old).elements) == ["Au", "Cu"]
    assert "none (format v1" in invoke("info", old).output


# --- what the engine writes is standard JSON -------------------------------------------------------------------------


def test_metrics_and_metadata_are_standard_json(tmp_path):
    """No stress labels: the stress errors are not a number, written as null (bare NaN is not JSON)."""
    from aiida_annpot.core import jsonio

    text = jsonio.dumps({"stress_rmse": float("nan"), "range": [float("-inf"), 1.0], "nested": ({"x": 2.0},)})
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}")) == {
        "stress_rmse": None,
        "range": [None, 1.0],
        "nested": [{"x": 2.0}],
    }
    path = save_model(
        make_potential(), tmp_path / "m.safetensors", metrics={"validation": {"stress_rmse": float("nan")}}
    )
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()["annpot"]
    assert "NaN" not in header and json.loads(header)["metrics"]["validation"]["stress_rmse"] is None
    assert load_potential(path).metadata[0]["digest"] == read_metadata(path)["digest"]
