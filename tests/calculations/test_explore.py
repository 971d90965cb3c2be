"""AnnExploreCalculation end to end: committee MD by ``annpot explore`` on the local computer, the selection over
its frames by ``select_candidates``, and validation."""

from __future__ import annotations

import numpy as np
import pytest
from aiida.engine import run_get_node
from aiida.orm import ArrayData, Dict, SinglefileData, StructureData
from ase.build import bulk

from aiida_annpot.calcfunctions import select_candidates
from aiida_annpot.calculations.explore import AnnExploreCalculation
from aiida_annpot.common.config import TrainingConfig
from aiida_annpot.core.explored import read_explored_frames
from aiida_annpot.core.selection import classify
from aiida_annpot.core.training import MODEL, Trainer
from aiida_annpot.data import AnnPotential, AtomisticDataset

STAGES = [
    {"temperature": 300.0, "steps": 10, "sample_interval": 5, "timestep": 1.0},
    {"temperature": 600.0, "steps": 10, "sample_interval": 2, "timestep": 1.0},
]
TRUST = {"trust_lo": 0.02, "trust_hi": 0.5}


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


def cu_start(a: float, seed: int, element: str = "Cu") -> StructureData:
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.03, seed=seed)
    if element != "Cu":
        atoms.symbols[0] = element
    return StructureData(ase=atoms)


def explore_builder(code, potential, structures: dict, settings: dict, **inputs):
    builder = AnnExploreCalculation.get_builder()
    builder.code = code
    builder.potential = potential
    builder.structures = structures
    builder.config = Dict(settings)
    for name, value in inputs.items():
        setattr(builder, name, value)
    return builder


@pytest.fixture(scope="module")
def explored(annpot_code, committee, trained_model):
    """Two start structures through two stages, with the training set as reference: (results, node)."""
    reference = AtomisticDataset.from_extxyz(trained_model.parent / "train.extxyz").store()
    structures = {"b_strained": cu_start(3.66, seed=1), "a_ideal": cu_start(3.61, seed=0)}
    builder = explore_builder(annpot_code, committee, structures, {"stages": STAGES}, reference_dataset=reference)
    return run_get_node(builder)


def test_exploration_outputs(explored, tmp_path):
    results, node = explored
    assert node.is_finished_ok, (node.exit_status, node.exit_message)
    assert set(results) == {"frames", "summary", "reference_fingerprints", "remote_folder", "retrieved"}
    assert isinstance(results["frames"], SinglefileData) and results["frames"].filename == "frames.extxyz"

    path = tmp_path / "frames.extxyz"
    path.write_bytes(results["frames"].get_content(mode="rb"))
    frames, fingerprints = read_explored_frames(path)
    per_stage = [stage["steps"] // stage["sample_interval"] for stage in STAGES]  # 2 and 5 frames
    assert len(frames) == 2 * sum(per_stage)
    assert fingerprints.shape[0] == len(frames) and np.isfinite(fingerprints).all()

    # trajectories in key order (a_ideal first), every stage, frames every sample_interval steps
    expected = [
        (s, k, step)
        for s in range(2)
        for k, stage in enumerate(STAGES)
        for step in range(stage["sample_interval"], stage["steps"] + 1, stage["sample_interval"])
    ]
    assert [(f.info["structure"], f.info["stage"], f.info["step"]) for f in frames] == expected
    starts = node.inputs.structures
    first = frames[0]
    assert len(first) == len(starts["a_ideal"].sites)
    np.testing.assert_allclose(first.cell.array, np.array(starts["a_ideal"].cell))  # NVT: the start cell
    np.testing.assert_allclose(frames[-1].cell.array, np.array(starts["b_strained"].cell))
    for frame in frames:
        assert np.isfinite(frame.positions).all()
        assert frame.info["max_force_std"] > 0  # two different members disagree somewhat
        assert frame.arrays["forces_std"].shape == (len(frame),)
        assert frame.info["start"] == ("a_ideal", "b_strained")[frame.info["structure"]]  # the namespace key


def test_summary_counts_match_the_frames(explored, tmp_path):
    results, _ = explored
    summary = results["summary"].get_dict()
    path = tmp_path / "frames.extxyz"
    path.write_bytes(results["frames"].get_content(mode="rb"))
    frames, _ = read_explored_frames(path)

    assert summary["frames"] == len(frames)
    assert "counts" not in summary and "selection" not in summary  # the job samples and scores, it does not select
    stages = summary["stages"]
    assert [stage["temperature"] for stage in stages] == [s["temperature"] for s in STAGES]
    for k, stage in enumerate(stages):
        assert stage["frames"] == sum(f.info["stage"] == k for f in frames)
    assert sum(stage["frames"] for stage in stages) == summary["frames"]

    assert summary["stop_reasons"]["completed"] == len(summary["trajectories"]) == 4
    assert [t["steps"] for t in summary["trajectories"]] == [
        STAGES[t["stage"]]["steps"] for t in summary["trajectories"]
    ]


def test_select_candidates_over_the_frames_names_the_start_structures(explored, tmp_path):
    """The selection over the job's frames (and the training set's fingerprints): classification in the trust
    window, picks among the candidates, each naming the job's frames file and its start structure's key."""
    results, _ = explored
    path = tmp_path / "frames.extxyz"
    path.write_bytes(results["frames"].get_content(mode="rb"))
    frames, _ = read_explored_frames(path)
    reference = results["reference_fingerprints"]
    selected = select_candidates(
        selection_settings=Dict(TRUST), reference_fingerprints=reference, frames_0=results["frames"]
    )
    summary = selected["summary"].get_dict()

    status = classify(np.array([f.info["max_force_std"] for f in frames]), TRUST["trust_lo"], TRUST["trust_hi"])
    assert summary["counts"] == {
        name: int(np.count_nonzero(status == name)) for name in ("accurate", "candidate", "failed")
    }
    assert sum(summary["counts"].values()) == summary["frames"] == len(frames)
    assert sum(summary["ratios"].values()) == pytest.approx(1.0)
    for stage in summary["stages"]:
        assert sum(stage["counts"].values()) == results["summary"]["stages"][stage["stage"]]["frames"]

    picks = summary["selected"]
    assert 0 < len(picks) <= summary["counts"]["candidate"]
    by_id = {(f.info["structure"], f.info["stage"], f.info["step"]): f for f in frames}
    for rank, pick in enumerate(picks):
        assert TRUST["trust_lo"] <= pick["max_force_std"] < TRUST["trust_hi"]
        frame = by_id[(pick["structure"], pick["stage"], pick["step"])]
        assert pick["max_force_std"] == pytest.approx(frame.info["max_force_std"], rel=1e-12)
        assert pick["origin"] == "frames_0" and pick["start"] == frame.info["start"]
        np.testing.assert_allclose(selected[f"structure_{rank:03d}"].get_ase().positions, frame.positions, atol=1e-12)
    assert {pick["start"] for pick in picks} <= {"a_ideal", "b_strained"}


def test_reference_fingerprints_have_one_row_per_reference_frame(explored, tmp_path):
    results, node = explored
    fingerprints = results["reference_fingerprints"]
    assert isinstance(fingerprints, ArrayData) and fingerprints.get_arraynames() == ["fingerprints"]
    array = fingerprints.get_array("fingerprints")
    assert array.shape[0] == node.inputs.reference_dataset.n_frames == 12
    assert np.isfinite(array).all()
    # the same fingerprint length as the sampled frames', so the duplicate filter can compare them
    path = tmp_path / "frames.extxyz"
    path.write_bytes(results["frames"].get_content(mode="rb"))
    _, frame_fingerprints = read_explored_frames(path)
    assert array.shape[1] == frame_fingerprints.shape[1] > 0
    # distinct reference structures, distinct fingerprints
    assert len(np.unique(array.round(10), axis=0)) == 12


# --- submit-time validation -----------------------------------------------------------------------------------------


def test_start_structure_with_an_uncovered_element_is_rejected(annpot_code, committee):
    structures = {"cu": cu_start(3.61, 0), "cuau": cu_start(3.7, 1, element="Au")}
    with pytest.raises(ValueError, match=r"start structure cuau has element\(s\) Au the potential does not cover"):
        run_get_node(explore_builder(annpot_code, committee, structures, {"stages": STAGES}))


def test_no_start_structures_is_rejected(annpot_code, committee):
    with pytest.raises(ValueError, match=r"no start structures: the structures namespace is empty"):
        run_get_node(explore_builder(annpot_code, committee, {}, {"stages": STAGES}))


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"stages": STAGES, "models": ["m.safetensors"]}, r"do not set models: the calculation writes these files"),
        ({"stages": STAGES, "structures": "s.extxyz"}, r"do not set structures"),
        (
            {"stages": STAGES, "selection": {"trust_lo": 0.05, "trust_hi": 0.3}},
            r"selection is not an exploration setting.*select_candidates",
        ),
        ({"stages": []}, r"stages: List should have at least 1 item"),
        ({"stages": STAGES, "thermostat": "nose"}, r"thermostat: Extra inputs are not permitted"),
    ],
)
def test_invalid_config_is_rejected_at_submit(annpot_code, committee, settings, problem):
    with pytest.raises(ValueError, match=problem):
        run_get_node(explore_builder(annpot_code, committee, {"cu": cu_start(3.61, 0)}, settings))
