"""AnnScoreCalculation end to end on "a trajectory made outside the project": plain ASE molecular dynamics of Cu with
EMT, uploaded as a file, scored by ``annpot score`` on the local computer with a trained committee, then selected
from by ``select_candidates`` exactly like explored frames; and validation at submit time."""

from __future__ import annotations

import io

import ase.io
import numpy as np
import pytest
from aiida.engine import run_get_node
from aiida.orm import Dict, SinglefileData, Str, StructureData
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io.trajectory import Trajectory
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

from aiida_annpot.calcfunctions import select_candidates
from aiida_annpot.calculations.score import AnnScoreCalculation
from aiida_annpot.common.config import TrainingConfig
from aiida_annpot.core.explored import read_explored_frames
from aiida_annpot.core.training import MODEL, Trainer
from aiida_annpot.data import AnnPotential, AtomisticDataset

#: (temperature in K, frames) of the two runs, near equilibrium and hot, written one after the other into one file
RUNS = ((100.0, 8), (1500.0, 8))
START = "emt_cu_md"


def ideal_cell():
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))


def emt_md(trajectory: Trajectory, temperature: float, frames: int, seed: int) -> None:
    """Langevin MD of a 2×2×2 Cu cell with ASE's EMT at ``temperature``: 100 fs to equilibrate, then a frame every
    10 fs into ``trajectory``."""
    atoms = ideal_cell()
    atoms.calc = EMT()
    rng = np.random.default_rng(seed)
    thermalize_momenta(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, 2.0 * units.fs, temperature_K=temperature, friction=0.05, fixcm=False, rng=rng)
    dyn.run(50)
    for _ in range(frames):
        dyn.run(5)
        trajectory.write(atoms)


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """The mixed 300 K + 1500 K trajectory as an ASE ``.traj`` file (stored SinglefileData) and its frames."""
    path = tmp_path_factory.mktemp("emt_md") / "cu_md.traj"
    with Trajectory(path, "w") as handle:
        for seed, (temperature, frames) in enumerate(RUNS):
            emt_md(handle, temperature, frames, seed)
    node = SinglefileData(io.BytesIO(path.read_bytes()), filename=path.name).store()
    return node, ase.io.read(path, ":")


@pytest.fixture(scope="module")
def committee(trained_model, training_settings, tmp_path_factory):
    """Two members of one architecture: the session's trained model (seed 0) and a seed-1 run on its data."""
    folder = tmp_path_factory.mktemp("second_member")
    settings = training_settings(
        seed=1,
        dataset=str(trained_model.parent / "train.extxyz"),
        validation_dataset=str(trained_model.parent / "validation.extxyz"),
    )
    assert Trainer(TrainingConfig(**settings), folder, log=lambda line: None).run().status == "finished"
    return AnnPotential.from_files([trained_model, folder / MODEL]).store()


def score_builder(code, potential, frames, **inputs):
    builder = AnnScoreCalculation.get_builder()
    builder.code = code
    builder.potential = potential
    builder.frames = frames
    for name, value in inputs.items():
        setattr(builder, name, value)
    return builder


@pytest.fixture(scope="module")
def scored(annpot_code, committee, trajectory, trained_model):
    """The trajectory scored in float64, with the training set as reference: (results, node, frames)."""
    reference = AtomisticDataset.from_extxyz(trained_model.parent / "train.extxyz").store()
    builder = score_builder(
        annpot_code,
        committee,
        trajectory[0],
        start=Str(START),
        config=Dict({"dtype": "float64"}),
        reference_dataset=reference,
    )
    results, node = run_get_node(builder)
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    with results["frames"].as_path() as path:
        frames, _ = read_explored_frames(path)
    return results, node, frames


@pytest.fixture(scope="module")
def selected(scored):
    """``select_candidates`` over the scored frames, the trust window opening just above the coldest run's σ."""
    results, _, frames = scored
    sigma = np.array([frame.info["max_force_std"] for frame in frames])
    settings = {
        "trust_lo": float(sigma[: RUNS[0][1]].max()) * 1.001,
        "trust_hi": 10.0,
        "min_distance": 1.5,
        "max_candidates": 3,
    }
    outputs = select_candidates(
        selection_settings=Dict(settings),
        frames_md=results["frames"],
        reference_fingerprints=results["reference_fingerprints"],
    )
    return outputs, settings


def test_every_frame_of_the_file_is_scored(scored, trajectory):
    results, node, frames = scored
    _, written = trajectory
    assert set(results) == {"frames", "summary", "reference_fingerprints", "remote_folder", "retrieved"}
    assert len(written) == sum(n for _, n in RUNS) == len(frames) == results["summary"]["frames"]
    assert results["summary"]["unusable"] == 0 and results["summary"]["source"] == "input_cu_md.traj"
    assert [(f.info["structure"], f.info["stage"], f.info["step"]) for f in frames] == [
        (0, 0, index) for index in range(len(written))
    ]
    assert {str(frame.info["start"]) for frame in frames} == {START}
    for frame, source in zip(frames, written, strict=True):
        np.testing.assert_allclose(frame.positions, source.positions, rtol=0, atol=1e-8)
        np.testing.assert_allclose(frame.get_momenta(), source.get_momenta(), rtol=0, atol=1e-7)
        assert np.isfinite(frame.info["energy"]) and frame.info["max_force_std"] > 0
    fingerprints = results["reference_fingerprints"].get_array("fingerprints")
    assert fingerprints.shape[0] == node.inputs.reference_dataset.n_frames and np.isfinite(fingerprints).all()


def test_the_hot_frames_deviate_most(scored):
    """Frames of the 1500 K run are far more distorted than those near equilibrium, further from the small
    distortions of the training set: the committee disagrees more on every one of them."""
    _, _, frames = scored
    cold, hot = slice(0, RUNS[0][1]), slice(RUNS[0][1], None)
    sigma = np.array([frame.info["max_force_std"] for frame in frames])
    temperature = np.array([frame.info["temperature"] for frame in frames])  # from the momenta in the file
    assert temperature[hot].mean() > 5 * temperature[cold].mean()
    lattice = ideal_cell().positions
    shift = [f.positions - lattice - (f.positions - lattice).mean(axis=0) for f in frames]
    distortion = np.array([np.sqrt(np.mean(np.square(d))) for d in shift])  # RMS displacement from the sites, Å
    assert distortion[hot].min() > distortion[cold].max()
    assert sigma[hot].min() > sigma[cold].max() and sigma[hot].mean() > 2 * sigma[cold].mean()
    assert np.argmax(sigma) >= RUNS[0][1]


def test_the_picks_come_from_the_file_and_name_the_start(selected, scored):
    outputs, settings = selected
    _, _, frames = scored
    summary = outputs["summary"].get_dict()
    picks = summary["selected"]
    assert summary["frames"] == len(frames)
    assert summary["counts"]["accurate"] >= RUNS[0][1] and summary["counts"]["candidate"] >= 3 and len(picks) == 3
    assert all(pick["origin"] == "frames_md" and pick["start"] == START for pick in picks)
    assert all(pick["step"] >= RUNS[0][1] for pick in picks)  # the hot run: the cold frames are all accurate
    for rank, pick in enumerate(picks):
        frame = frames[pick["step"]]  # step: the frame's index in the uploaded file
        assert pick["max_force_std"] == pytest.approx(frame.info["max_force_std"], rel=1e-12)
        assert pick["max_force_std"] >= settings["trust_lo"]
        atoms = outputs[f"structure_{rank:03d}"].get_ase()
        np.testing.assert_allclose(atoms.positions, frame.positions, atol=1e-12)
        assert atoms.get_chemical_symbols() == ["Cu"] * 32
    deviations = outputs["deviations"].get_array("max_force_std")
    np.testing.assert_allclose(deviations, [f.info["max_force_std"] for f in frames], rtol=1e-12)


def test_provenance_from_the_uploaded_file_to_the_selected_structures(selected, scored, trajectory):
    outputs, _ = selected
    results, node, _ = scored
    structure = outputs["structure_000"]
    assert isinstance(structure, StructureData)
    selection = structure.creator
    assert selection.process_label == "select_candidates"
    incoming = {link.link_label: link.node for link in selection.base.links.get_incoming().all()}
    assert incoming["frames_md"].uuid == results["frames"].uuid
    assert incoming["reference_fingerprints"].uuid == results["reference_fingerprints"].uuid
    assert results["frames"].creator.uuid == node.uuid and node.process_type == "aiida.calculations:annpot.score"
    assert node.inputs.frames.uuid == trajectory[0].uuid and node.inputs.start.value == START
    assert trajectory[0].creator is None  # uploaded, not computed


# --- bad input -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "start", "problem"),
    [
        ({"frames": "x.extxyz"}, START, r"do not set frames: the calculation writes these files"),
        ({"dtype": "float16"}, START, r"dtype: Input should be 'float32' or 'float64'"),
        ({"stages": []}, START, r"stages: Extra inputs are not permitted"),
        ({}, "  ", r"start: give a non-empty key"),
    ],
)
def test_invalid_inputs_are_rejected_at_submit(annpot_code, committee, trajectory, config, start, problem):
    with pytest.raises(ValueError, match=problem):
        run_get_node(score_builder(annpot_code, committee, trajectory[0], config=Dict(config), start=Str(start)))


def test_a_file_of_a_forbidden_format_is_rejected_by_the_engine(annpot_code, committee):
    """A ``.py`` file is never read (ASE's ``py`` format would run it): the job ends with the input-error code and
    the engine's message naming the file."""
    script = SinglefileData(io.BytesIO(b"from ase import Atoms\nimages = [Atoms('Cu')]\n"), filename="frames.py")
    _, node = run_get_node(score_builder(annpot_code, committee, script))
    assert node.exit_status == AnnScoreCalculation.exit_codes.ERROR_INPUT_REJECTED.status
    assert "input_frames.py" in node.exit_message and "format 'py' is not one of" in node.exit_message
    assert "frames" not in node.outputs
