"""``annpot import-aenet``: aenet's generate.in and train.in (with setups and XSF files) become a training
configuration that ``annpot train`` accepts; what does not map is reported; malformed files and elements that
disagree are errors naming the file and line; nothing a file names is imported or run."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from aiida_annpot.common.config import TrainingConfig, load_config
from aiida_annpot.core.aenet import import_aenet, read_generate_in, read_train_in
from aiida_annpot.core.cli import cli
from aiida_annpot.core.dataset import read_frames
from aiida_annpot.core.descriptors import make_descriptor
from aiida_annpot.core.errors import EXIT_INPUT_ERROR, AenetFormatError, ElementMismatchError
from aiida_annpot.core.modelfile import read_metadata

from .aenet_files import ATOMIC_ENERGIES, H_SETUP, N_FUNCTIONS, O_SETUP, write_water_set


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def water(tmp_path):
    """(folder, generate.in, train.in, clusters) of ten two-molecule clusters."""
    generate, train, clusters = write_water_set(tmp_path / "aenet")
    return tmp_path / "aenet", generate, train, clusters


def test_generate_in_and_train_in_values(water):
    folder, generate_path, train_path, _ = water
    generate = read_generate_in(generate_path)
    assert generate.types == ATOMIC_ENERGIES and list(generate.types) == ["O", "H"]
    assert generate.setups == {e: folder / "setups" / f"{e}.fingerprint.stp" for e in ("O", "H")}
    assert generate.files == [folder / f"./xsf/water-{k:03d}.xsf" for k in range(10)]
    assert generate.output == "water.train"
    assert any("TIMING ignored" in w for w in generate.warnings)
    train = read_train_in(train_path, ["O", "H"])
    assert (train.testpercent, train.iterations, train.maxenergy) == (25.0, 3, None)
    assert (train.method, train.method_parameters) == ("adam", {"mu": 0.005, "batchsize": 4.0})
    assert {e: (n.hidden, n.activations) for e, n in train.networks.items()} == {
        "O": ([4, 4], ["tanh", "tanh"]),
        "H": ([4, 4], ["tanh", "tanh"]),
    }


def test_import_writes_a_config_that_trains(water, tmp_path):
    _, generate, train, clusters = water
    config_path, dataset = tmp_path / "run" / "training.yaml", tmp_path / "run" / "data" / "water.extxyz"
    result = CliRunner().invoke(
        cli,
        ["import-aenet", str(generate), str(train), "-o", str(config_path), "--dataset", str(dataset)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "TIMING ignored" in result.stderr and "network files (O.4t-4t.nn, H.4t-4t.nn) not used" in result.stderr
    assert "atomic energies (TYPES): O -432.503 eV, H -13.6057 eV: not used" in result.stdout
    assert "descriptor (O 9, H 5 features)" in result.stdout
    text = config_path.read_text()
    assert text.startswith("# Training configuration written by 'annpot import-aenet'")
    assert "O -432.503149303, H -13.605693123" in text  # the atomic energies, kept as a comment
    settings = yaml.safe_load(text)
    assert settings["dataset"] == "data/water.extxyz"
    config = load_config(config_path, TrainingConfig)
    assert config.elements == ["O", "H"] and config.validation_fraction == 0.25 and config.max_epochs == 3
    assert (config.learning_rate, config.batch_size, config.lr_schedule) == (0.005, 4, "constant")
    assert config.network.hidden == [4, 4] and config.network.activation == "tanh"
    descriptor = make_descriptor(config.elements, config.descriptor)
    assert dict(zip(descriptor.elements, descriptor.features_per_element, strict=True)) == N_FUNCTIONS
    # the converted structures: the XSF values
    frames = read_frames(dataset)
    assert len(frames) == len(clusters)
    for frame, cluster in zip(frames, clusters, strict=True):
        assert frame.get_chemical_symbols() == cluster.get_chemical_symbols() and not frame.pbc.any()
        np.testing.assert_allclose(frame.positions, cluster.positions, atol=1e-8)
        np.testing.assert_allclose(frame.get_forces(), cluster.arrays["forces"], atol=1e-8)
        assert frame.get_potential_energy() == pytest.approx(cluster.info["energy"], abs=1e-9)
    # annpot train accepts it
    workdir = tmp_path / "run" / "model"
    trained = invoke("train", config_path, "--workdir", workdir)
    assert trained.exit_code == 0, trained.output
    metadata = read_metadata(workdir / "model.safetensors")
    assert metadata["elements"] == ["H", "O"] and metadata["descriptor"]["per_element"]["O"]["g2"][4]["cutoff"] == 4.5
    assert metadata["metrics"]["epochs"] == 3


def test_without_dataset_the_config_lists_the_xsf_files(water, tmp_path):
    _, generate, train, _ = water
    config_path = tmp_path / "configs" / "training.yaml"
    result = import_aenet(generate, train)
    config = result.write(config_path)
    assert config.dataset == [f"../aenet/xsf/water-{k:03d}.xsf" for k in range(10)]
    assert config.loss.force_weight == 1.0
    workdir = tmp_path / "model"
    trained = invoke("train", config_path, "--workdir", workdir)
    assert trained.exit_code == 0, trained.output
    assert (workdir / "model.safetensors").is_file()


def test_maxenergy_drops_high_energy_structures(tmp_path):
    _, _, clusters = write_water_set(tmp_path / "probe", n=6)
    reference = np.array([ATOMIC_ENERGIES[s] for s in ("O", "H", "H", "O", "H", "H")]).sum()
    per_atom = sorted((c.info["energy"] - reference) / len(c) for c in clusters)
    threshold = 0.5 * (per_atom[-2] + per_atom[-1])  # drops the highest one
    generate, train, _ = write_water_set(tmp_path / "aenet", n=6, maxenergy=threshold)
    result = import_aenet(generate, train)
    assert len(result.frames) == len(result.files) == 5
    assert any("1 of 6 structures dropped" in note for note in result.notes)


def test_energy_only_structures_train_without_forces(tmp_path):
    generate, train, _ = write_water_set(tmp_path / "aenet", forces=False)
    result = import_aenet(generate, train)
    config = result.write(tmp_path / "training.yaml", tmp_path / "water.extxyz")
    assert config.loss.force_weight == 0.0 and any("no forces" in note for note in result.notes)
    trained = invoke("train", tmp_path / "training.yaml", "--workdir", tmp_path / "model")
    assert trained.exit_code == 0, trained.output


def test_methods_and_activations_that_do_not_map(water):
    _, generate, train, _ = water
    text = train.read_text()
    train.write_text(
        text.replace("adam  mu=0.005  batchsize=4", "lm batchsize=5000 learnrate=0.1d0 iter=3").replace(
            "4:tanh  4:tanh", "4:sigmoid 4:sigmoid"
        )
    )
    result = import_aenet(generate, train)
    warnings = "\n".join(result.warnings)
    assert "METHOD lm batchsize=5000 learnrate=0.1 iter=3 is not available" in warnings
    assert "activation sigmoid becomes tanh" in warnings
    assert "learning_rate" not in result.settings and result.settings["network"]["activation"] == "tanh"


def cli_error(generate, train) -> str:
    result = CliRunner().invoke(cli, ["import-aenet", str(generate), str(train), "-o", "out.yaml"])
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert result.stderr.startswith("annpot: error: ")
    return result.stderr


def replace(path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def line_of(path, marker: str) -> int:
    text = path.read_text()
    return text[: text.index(marker)].count("\n") + 1


#: (file, text replaced, replacement, text of the line named (None: the file), message)
INPUT_ERRORS = {
    "unknown keyword": ("generate", "TIMING", "TIMINGS", "TIMINGS", "unknown keyword 'TIMINGS'"),
    "types count": ("generate", "TYPES\n2", "TYPES\n3", "H   -13.6", "TYPES announces 3 types, 2 given"),
    "atomic energy": ("generate", "-13.605693123", "minus13.6", "minus13.6", "atomic energy of H: expected a number"),
    "setup element": ("generate", "H   setups/H", "C   setups/H", "C   setups", "SETUPS names C, which is not among"),
    "setup missing": ("generate", "H   setups/H.fingerprint.stp\n", "", "SETUPS", "SETUPS has no setup file for H"),
    "files count": ("generate", "FILES\n10", "FILES\n11", "water-009", "FILES announces 11 structure files, 10"),
    "no files": ("generate", "FILES\n10", "FILE\n10", "FILE\n", "unknown keyword 'FILE'"),
    "method": ("train", "adam  mu", "sgd  mu", "sgd", "unknown training method 'sgd'"),
    "method parameter": ("train", "batchsize=4", "batch=4", "adam", "adam has no parameter batch"),
    "iterations": ("train", "ITERATIONS  3", "ITERATIONS  many", "ITERATIONS", "ITERATIONS: expected an integer"),
    "layers": ("train", "O      O.4t-4t.nn      2", "O      O.4t-4t.nn      3", "O.4t", "3 hidden layers announced"),
    "activation": (
        "train",
        "O.4t-4t.nn      2       4:tanh",
        "O.4t-4t.nn      2       4:relu",
        "O.4t",
        "unknown activation 'relu'",
    ),
    "network element": ("train", "H      H.4t", "C      H.4t", "C      H.4t", "NETWORKS names C, not among the TYPES"),
    "network missing": (
        "train",
        "  H      H.4t-4t.nn      2       4:tanh  4:tanh\n",
        "",
        "NETWORKS",
        "NETWORKS has no network for H",
    ),
    "networks differ": (
        "train",
        "H.4t-4t.nn      2       4:tanh  4:tanh",
        "H.4t.nn 1 4:tanh",
        None,
        r"the networks differ \(O: 4:tanh 4:tanh; H: 4:tanh\)",
    ),
    "twist": (
        "train",
        "4:tanh  4:tanh\n  H      H.4t-4t.nn      2       4:tanh  4:tanh",
        "4:twist 4:twist\n  H      H.4t-4t.nn      2       4:twist 4:twist",
        "4:twist",
        "activation twist has no",
    ),
    "extra setup": (
        "generate",
        "H   setups/H.fingerprint.stp",
        "H   setups/H.fingerprint.stp\nTi  Ti.stp",
        "Ti  Ti",
        "unknown keyword 'Ti', or more SETUPS lines than the 2 TYPES",
    ),
    "testpercent": ("train", "TESTPERCENT 25", "TESTPERCENT 0", None, "TESTPERCENT 0 must lie between 0 and 100"),
    "xsf": ("xsf", "# total energy", "# total energy: ", "# total energy", "malformed total energy comment"),
    "setup": ("setup", "G=2 type2=O   eta=0.5", "G=1 type2=O   eta=0.5", "G=1", "G=1 functions are not supported"),
}


@pytest.mark.parametrize("case", INPUT_ERRORS, ids=list(INPUT_ERRORS))
def test_malformed_inputs_name_the_file_and_line(water, case):
    folder, generate, train, _ = water
    which, old, new, marker, message = INPUT_ERRORS[case]
    path = {
        "generate": generate,
        "train": train,
        "xsf": folder / "xsf" / "water-003.xsf",
        "setup": folder / "setups" / "H.fingerprint.stp",
    }[which]
    replace(path, old, new)
    with pytest.raises(AenetFormatError, match=message) as error:
        import_aenet(generate, train)
    where = f"{path}, line {line_of(path, marker)}:" if marker else f"{path}"
    assert str(error.value).startswith(where), str(error.value)
    assert str(error.value) in cli_error(generate, train)


def test_elements_that_disagree_are_reported(water):
    folder, generate, train, _ = water
    xsf = folder / "xsf" / "water-002.xsf"
    xsf.write_text(xsf.read_text().replace("\nH ", "\nLi", 1))
    with pytest.raises(ElementMismatchError, match=f"{xsf} holds Li, not among the TYPES"):
        import_aenet(generate, train)
    write_water_set(folder)  # restore
    replace(folder / "setups" / "H.fingerprint.stp", "ATOM H", "ATOM O")
    with pytest.raises(ElementMismatchError, match="ATOM O, but it is the setup of H"):
        import_aenet(generate, train)
    (folder / "setups" / "H.fingerprint.stp").write_text(H_SETUP.replace("ENV  2\nO\nH", "ENV  3\nO\nH\nC"))
    with pytest.raises(ElementMismatchError, match="ENV names C, not among the elements O, H"):
        import_aenet(generate, train)
    assert "annpot: error: " in cli_error(generate, train)


def test_nothing_a_file_names_is_imported_or_run(water, tmp_path, monkeypatch):
    """Module names and shell commands in every free-text place of the inputs stay text."""
    folder, generate, train, _ = water
    marker = tmp_path / "pwned"
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "aenet_payload_module.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    monkeypatch.syspath_prepend(str(payload))
    replace(generate, "OUTPUT  water.train", "OUTPUT  aenet_payload_module")
    replace(train, "TRAININGSET water.train", f"TRAININGSET $(touch${{IFS}}{marker})")
    replace(train, "O.4t-4t.nn", "aenet_payload_module")
    (folder / "setups" / "O.fingerprint.stp").write_text(
        O_SETUP.replace("Structural fingerprint", f"`touch {marker}` import aenet_payload_module; __import__('os')")
    )
    result = import_aenet(generate, train)
    result.write(tmp_path / "training.yaml")
    replace(generate, "setups/H.fingerprint.stp", f"$(touch${{IFS}}{marker})")
    with pytest.raises(AenetFormatError, match="does not exist"):
        import_aenet(generate, train)
    assert not marker.exists() and "aenet_payload_module" not in sys.modules


def test_a_folder_or_list_of_xsf_files_is_a_dataset(water, tmp_path, write_config):
    folder, _, _, _ = water
    settings = {
        "dataset": "aenet/xsf",
        "descriptor": {"type": "behler_parrinello", "cutoff": 4.0},
        "network": {"hidden": [4]},
        "max_epochs": 2,
    }
    write_config(tmp_path / "folder.yaml", settings)
    trained = invoke("train", tmp_path / "folder.yaml", "--workdir", tmp_path / "model")
    assert trained.exit_code == 0, trained.output
    assert read_metadata(tmp_path / "model" / "model.safetensors")["elements"] == ["H", "O"]
    close = folder / "xsf" / "water-004.xsf"
    lines = close.read_text().splitlines()
    atom = lines[4].split()
    lines[4] = " ".join([atom[0], lines[3].split()[1], lines[3].split()[2], lines[3].split()[3], *atom[4:]])
    close.write_text("\n".join(lines) + "\n")  # the first H on top of the O
    files = [f"aenet/xsf/water-{k:03d}.xsf" for k in range(10)]
    write_config(tmp_path / "list.yaml", {**settings, "dataset": files})
    failed = CliRunner().invoke(cli, ["train", str(tmp_path / "list.yaml"), "--workdir", str(tmp_path / "bad")])
    assert failed.exit_code == EXIT_INPUT_ERROR
    assert "annpot: error: the 10 files [" in failed.stderr and "water-001.xsf, ..., " in failed.stderr
    assert "water-009.xsf] frame 4: atoms 0 and 1 are 0.000 Å apart" in failed.stderr  # frame k: file k


def test_the_converted_dataset_must_be_extxyz(water, tmp_path):
    _, generate, train, _ = water
    result = CliRunner().invoke(cli, ["import-aenet", str(generate), str(train), "--dataset", str(tmp_path / "a.xsf")])
    assert result.exit_code == 2 and "name the file *.extxyz" in result.stderr
    assert not (tmp_path / "a.xsf").exists() and not (tmp_path / "training.yaml").exists()
