"""``annpot score`` (:func:`~aiida_annpot.core.scoring.score_frames`): a committee scores frames sampled elsewhere
exactly as the exploration scores its own, refuses untrusted files it cannot or must not read, and ``annpot select``
picks from the scored frames, each pick naming its start."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io.trajectory import Trajectory
from click.testing import CliRunner

from aiida_annpot.common.config import ExplorationConfig, ScoringConfig, TrainingConfig
from aiida_annpot.core.cli import cli
from aiida_annpot.core.device import device_record, resolve_device
from aiida_annpot.core.errors import EXIT_INPUT_ERROR, InputDataError, UnknownElementError
from aiida_annpot.core.exploration import FRAMES, REFERENCE_FINGERPRINTS, SUMMARY, run_exploration
from aiida_annpot.core.explored import read_explored_frames
from aiida_annpot.core.scoring import FRAME_FORMATS, read_trajectory, score_frames
from aiida_annpot.core.training import MODEL, Trainer

QUIET = {"log": lambda line: None}
#: What the exploration records per frame and scoring must reproduce for the same positions.
SCORED = ("energy", "energy_std", "max_force_std", "min_distance", "extrapolation", "temperature")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def cu_cell(a: float = 3.61, rattle: float = 0.03, seed: int = 0):
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 1, 1))
    atoms.rattle(rattle, seed=seed)
    return atoms


@pytest.fixture(scope="module")
def committee(trained_model, training_settings, tmp_path_factory) -> list[str]:
    """Two float64 members of one architecture: the session's trained model (seed 0) and a seed-1 run on its data."""
    folder = tmp_path_factory.mktemp("second_member")
    settings = training_settings(
        seed=1,
        dataset=str(trained_model.parent / "train.extxyz"),
        validation_dataset=str(trained_model.parent / "validation.extxyz"),
    )
    assert Trainer(TrainingConfig(**settings), folder, **QUIET).run().status == "finished"
    return [str(trained_model), str(folder / MODEL)]


@pytest.fixture(scope="module")
def explored(committee, trained_model, tmp_path_factory):
    """``annpot explore`` in float64 from two starts at 900 K, with the training set as reference structures."""
    folder = tmp_path_factory.mktemp("explored")
    ase.io.write(folder / "start.extxyz", [cu_cell(seed=0), cu_cell(3.66, seed=1)])
    config = ExplorationConfig(
        models=committee,
        structures=str(folder / "start.extxyz"),
        dtype="float64",
        threads=1,
        stages=[{"temperature": 900.0, "steps": 30, "sample_interval": 5}],
        reference_structures=str(trained_model.parent / "train.extxyz"),
    )
    summary = run_exploration(config, folder / "run", **QUIET)
    frames, fingerprints = read_explored_frames(folder / "run" / FRAMES)
    return SimpleNamespace(workdir=folder / "run", summary=summary, frames=frames, fingerprints=fingerprints)


def scoring(committee, frames, **settings) -> ScoringConfig:
    return ScoringConfig(models=committee, frames=str(frames), dtype="float64", threads=1, **settings)


@pytest.fixture(scope="module")
def scored(committee, explored, trained_model, tmp_path_factory):
    """The explored frames scored again by the same committee: (workdir, summary, frames, fingerprints)."""
    workdir = tmp_path_factory.mktemp("scored")
    config = scoring(
        committee,
        explored.workdir / FRAMES,
        start="md_900K",
        reference_structures=str(trained_model.parent / "train.extxyz"),
    )
    summary = score_frames(config, workdir, **QUIET)
    frames, fingerprints = read_explored_frames(workdir / FRAMES)
    return SimpleNamespace(workdir=workdir, summary=summary, frames=frames, fingerprints=fingerprints)


# --- scoring reproduces the exploration ------------------------------------------------------------------------------


def test_scoring_reproduces_what_the_exploration_recorded(explored, scored):
    """Same committee, same positions (to the 1e-8 Å the extxyz file keeps), float64: the same σ_F^max, energy,
    smallest distance, extrapolation grade, fingerprint and per-atom force deviations."""
    assert len(explored.frames) == 12 and len(scored.frames) == len(explored.frames)
    sigma = np.array([f.info["max_force_std"] for f in explored.frames])
    assert sigma.min() > 0 and np.ptp(sigma) > 0  # two members that disagree, by different amounts
    for index, (old, new) in enumerate(zip(explored.frames, scored.frames, strict=True)):
        np.testing.assert_array_equal(new.positions, old.positions)
        np.testing.assert_array_equal(new.get_momenta(), old.get_momenta())
        for key in SCORED:
            assert new.info[key] == pytest.approx(old.info[key], rel=1e-9, abs=1e-7), (index, key)
        np.testing.assert_allclose(new.arrays["forces_std"], old.arrays["forces_std"], rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(scored.fingerprints, explored.fingerprints, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        np.load(scored.workdir / REFERENCE_FINGERPRINTS),
        np.load(explored.workdir / REFERENCE_FINGERPRINTS),
        rtol=0,
        atol=1e-12,
    )


def test_scored_frames_name_their_origin_and_position_in_the_file(explored, scored):
    ids = [(f.info["structure"], f.info["stage"], f.info["step"], f.info["start"]) for f in scored.frames]
    assert ids == [(0, 0, index, "md_900K") for index in range(len(explored.frames))]
    assert all(frame.calc is None for frame in scored.frames)  # committee predictions are not labels
    summary = {
        "frames": 12,
        "unusable": 0,
        "source": str(explored.workdir / FRAMES),
        "stages": [{"stage": 0, "frames": 12}],
        "trajectories": [],
        "device": device_record(resolve_device("auto")),  # the scoring config's default
    }
    assert scored.summary == summary
    assert json.loads((scored.workdir / SUMMARY).read_text()) == summary


def test_a_frame_the_committee_cannot_evaluate_is_recorded_as_unusable(committee, tmp_path):
    """Atoms on top of each other (even in the first frame) or non-finite positions: the frame is kept with NaN
    deviations (the selection calls it failed) and counted, the others are scored."""
    good, close, broken = cu_cell(seed=2), cu_cell(seed=3), cu_cell(seed=4)
    close.positions[1] = close.positions[0] + [0.2, 0.0, 0.0]
    broken.positions[2, 0] = np.nan
    ase.io.write(tmp_path / "md.extxyz", [close, good, broken])
    summary = score_frames(scoring(committee, tmp_path / "md.extxyz"), tmp_path / "run", **QUIET)
    assert summary["frames"] == 3 and summary["unusable"] == 2
    frames, fingerprints = read_explored_frames(tmp_path / "run" / FRAMES)
    sigma = [frame.info["max_force_std"] for frame in frames]
    assert np.isnan(sigma[0]) and np.isnan(sigma[2]) and sigma[1] > 0
    assert frames[0].info["min_distance"] == pytest.approx(0.2)
    assert np.isfinite(fingerprints[1]).all() and np.isnan(fingerprints[[0, 2]]).all()


# --- untrusted trajectory files --------------------------------------------------------------------------------------


def test_formats_are_data_formats_only():
    assert {"extxyz", "traj", "lammps-dump-text"} <= set(FRAME_FORMATS)
    assert not {"py", "json", "db", "pickle", "gpw"} & set(FRAME_FORMATS)


def test_the_format_is_guessed_from_the_name_or_given(tmp_path):
    frames = [cu_cell(seed=seed) for seed in range(3)]
    ase.io.write(tmp_path / "XDATCAR", frames, format="vasp-xdatcar")
    ase.io.write(tmp_path / "md.txt", frames, format="extxyz")
    for path, format in ((tmp_path / "XDATCAR", None), (tmp_path / "md.txt", "extxyz")):
        read = read_trajectory(path, format)
        assert len(read) == 3
        np.testing.assert_allclose(read[2].positions, frames[2].positions, atol=1e-6)
    with pytest.raises(InputDataError, match=r"md\.txt: format 'txt' is not one of"):
        read_trajectory(tmp_path / "md.txt")
    with pytest.raises(InputDataError, match=r"trajectory file .*missing\.traj does not exist"):
        read_trajectory(tmp_path / "missing.traj")


@pytest.mark.parametrize(
    ("name", "content", "format", "problem"),
    [
        ("frames.py", "from ase import Atoms\nimages = [Atoms('Cu')]\n", None, r"format 'py' is not one of"),
        ("frames.json", '{"1": {"numbers": [29]}}', None, r"format 'json' is not one of"),
        ("frames.extxyz", "1\n\nCu 0 0 0\n", "json", r"format 'json' is not one of"),
        ("frames.extxyz", "", None, r"is empty"),
        ("frames.traj", "", "traj", r"is empty"),
        ("frames.extxyz", "2\nnot a comment line\nCu 0 0\n", None, r"cannot read frames from"),
    ],
)
def test_unreadable_or_forbidden_files_name_the_file(committee, tmp_path, name, content, format, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputDataError, match=problem) as caught:
        score_frames(scoring(committee, path, format=format), tmp_path / "run", **QUIET)
    assert str(path) in str(caught.value)
    assert not (tmp_path / "run" / FRAMES).exists()


def test_a_frame_with_an_element_the_committee_lacks_names_file_and_frame(committee, tmp_path):
    gold = cu_cell(seed=1)
    gold.symbols[1] = "Au"
    ase.io.write(tmp_path / "md.extxyz", [cu_cell(), gold])
    with pytest.raises(UnknownElementError, match=r"frame 1 of .*md\.extxyz: element\(s\) Au not covered"):
        score_frames(scoring(committee, tmp_path / "md.extxyz"), tmp_path / "run", **QUIET)
    assert not (tmp_path / "run" / FRAMES).exists()


@pytest.mark.parametrize("defect", ["element", "format", "empty"])
def test_score_command_exits_2_on_bad_input(committee, tmp_path, write_config, defect):
    if defect == "element":
        gold = cu_cell()
        gold.symbols[0] = "Au"
        ase.io.write(tmp_path / "md.extxyz", gold)
        name, words = "md.extxyz", ("md.extxyz", "frame 0", "Au")
    elif defect == "format":
        name, words = "md.py", ("md.py", "format 'py'")
        (tmp_path / name).write_text("import os\n")
    else:
        name, words = "md.extxyz", ("md.extxyz", "empty")
        (tmp_path / name).write_text("")
    config = write_config(tmp_path / "score.yaml", {"models": committee, "frames": name, "dtype": "float64"})
    result = invoke("score", config, "--workdir", tmp_path / "run")
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert result.stderr.startswith("annpot: error:") and "Traceback" not in result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    status = json.loads((tmp_path / "run" / "annpot_status.json").read_text())
    assert status["exit_code"] == EXIT_INPUT_ERROR and not (tmp_path / "run" / FRAMES).exists()


# --- annpot score, then annpot select ---------------------------------------------------------------------------------


def plain_ase_md(path: Path, temperature: float, steps: int, seed: int, a: float = 3.61) -> list:
    """Langevin MD of an ideal Cu cell (lattice constant ``a``) with ASE's EMT, every 5th step written by
    ``ase.io.Trajectory``: a trajectory made outside the project. Returns its frames as read back."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = cu_cell(a=a, rattle=0.0)
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    with Trajectory(path, "w", atoms) as trajectory:
        dyn.attach(trajectory.write, interval=5)
        dyn.run(steps)
    return ase.io.read(path, ":")


def test_score_then_select_through_the_command_line(committee, trained_model, tmp_path, write_config):
    """``annpot score`` on an ASE ``.traj`` file (paths relative to the config), then ``annpot select`` with the
    reference fingerprints: selected.extxyz and selection.json, each pick naming the file and the start key."""
    written = plain_ase_md(tmp_path / "data" / "hot.traj", 1500.0, 40, seed=3)
    assert len(written) == 9
    settings = {
        "models": committee,
        "frames": "../data/hot.traj",
        "start": "emt_1500K",
        "dtype": "float64",
        "reference_structures": str(trained_model.parent / "train.extxyz"),
    }
    config = write_config(tmp_path / "config" / "score.yaml", settings)
    result = invoke("score", config, "--workdir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert f"scored 9 frames of {tmp_path / 'config' / '..' / 'data' / 'hot.traj'}" in result.stdout
    frames, _ = read_explored_frames(tmp_path / "run" / FRAMES)
    for frame, source in zip(frames, written, strict=True):
        np.testing.assert_allclose(frame.positions, source.positions, rtol=0, atol=1e-8)  # extxyz keeps 1e-8 Å
    sigma = np.array([frame.info["max_force_std"] for frame in frames])

    window = write_config(
        tmp_path / "selection.yaml",
        {"trust_lo": float(np.median(sigma)), "trust_hi": 10.0, "max_candidates": 3, "min_distance": 1.5},
    )
    output = tmp_path / "picks" / "selected.extxyz"
    output.parent.mkdir()
    result = invoke(
        "select",
        tmp_path / "run" / FRAMES,
        "--config",
        window,
        "--reference",
        tmp_path / "run" / REFERENCE_FINGERPRINTS,
        "--output",
        output,
    )
    assert result.exit_code == 0, result.output
    selection = json.loads((output.parent / "selection.json").read_text())
    picks = selection["selected"]
    assert f"9 frames: accurate {selection['ratios']['accurate']:.3f}" in result.stdout
    assert f"{len(picks)} selected → {output}" in result.stdout
    assert selection["counts"]["candidate"] >= 4 and len(picks) == 3
    assert {pick["start"] for pick in picks} == {"emt_1500K"}
    assert {pick["origin"] for pick in picks} == {str(tmp_path / "run" / FRAMES)}
    assert all(pick["max_force_std"] >= np.median(sigma) for pick in picks)
    structures = ase.io.read(output, ":")
    assert [atoms.info["start"] for atoms in structures] == ["emt_1500K"] * 3
    for atoms, pick in zip(structures, picks, strict=True):
        np.testing.assert_allclose(atoms.positions, written[pick["step"]].positions, atol=1e-8)  # step: file index
        assert atoms.calc is None and "momenta" not in atoms.arrays


@pytest.mark.parametrize("defect", ["labelled_frames", "malformed", "reference"])
def test_select_command_refuses_files_that_are_not_scored_frames(scored, tmp_path, defect):
    """``annpot select`` reads files from the command line: anything but scored frames (and a reference that is not
    a fingerprint array) is bad input naming the file, exit code 2, no traceback and no picks written."""
    frames, reference = scored.workdir / FRAMES, None
    if defect == "labelled_frames":  # training data, not scored frames
        frames, words = tmp_path / "train.extxyz", ("train.extxyz", "not a frames file")
        ase.io.write(frames, [cu_cell(seed=seed) for seed in range(2)])
    elif defect == "malformed":
        frames, words = tmp_path / "cut.extxyz", ("cut.extxyz", "not a frames file")
        frames.write_text("2\nPBC=T\nCu 0 0 0\n")
    else:
        reference, words = tmp_path / "ref.npy", ("ref.npy", "cannot read reference fingerprints")
        reference.write_text("not numpy")
    args = [frames, "--output", tmp_path / "selected.extxyz"] + (["--reference", reference] if reference else [])
    result = invoke("select", *args)
    assert result.exit_code == EXIT_INPUT_ERROR, result.output
    assert result.stderr.startswith("annpot: error:") and "Traceback" not in result.stderr
    assert all(word in result.stderr for word in words), result.stderr
    assert not (tmp_path / "selected.extxyz").exists() and not (tmp_path / "selection.json").exists()


@pytest.mark.parametrize("key", ["01", "T", "1e3", "nan", "si_x211"])
def test_start_keys_come_back_exactly_from_the_frames_file(tmp_path, key):
    """extxyz's reader would turn a bare 01 into 1 and T into True: keys are written so they read back unchanged."""
    from ase import Atoms

    from aiida_annpot.core.explored import decode_key, encode_key, read_explored_frames

    frame = Atoms("Cu", positions=[[0.0, 0.0, 0.0]], cell=[3.0, 3.0, 3.0], pbc=True)
    frame.info.update({"start": encode_key(key), "fingerprint": np.zeros(2), "extrapolation": 0.0})
    ase.io.write(tmp_path / "frames.extxyz", frame, format="extxyz")
    frames, _ = read_explored_frames(tmp_path / "frames.extxyz")
    assert frames[0].info["start"] == key and decode_key(encode_key(key)) == key
