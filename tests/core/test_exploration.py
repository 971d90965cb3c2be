"""Tests for committee-driven exploration (:mod:`aiida_annpot.core.exploration`) with a tiny trained Cu committee.

The exploration samples and scores; the selection over its frames is ``annpot select``
(:func:`~aiida_annpot.core.selection.select_from_files`), which the tests run where they check what gets picked.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import ase.io
import numpy as np
import pytest
import torch
import yaml
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from aiida_annpot.common.config import ConfigError, ExplorationConfig, SelectionConfig, TrainingConfig, load_config
from aiida_annpot.core.calculator import AnnCalculator
from aiida_annpot.core.errors import InputDataError, UnknownElementError
from aiida_annpot.core.exploration import (
    FRAMES,
    PROGRESS,
    REFERENCE_FINGERPRINTS,
    SUMMARY,
    _batch_width,
    _stop_reason,
    min_distance,
    read_explored_frames,
    run_exploration,
    start_keys,
)
from aiida_annpot.core.interrupt import StopRequest
from aiida_annpot.core.scoring import committee_state
from aiida_annpot.core.selection import classify, select_candidates, select_from_files
from aiida_annpot.core.training import Trainer

QUIET = {"log": lambda message: None}


def _cu(a: float = 3.61, rattle: float = 0.03, seed: int = 0):
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))
    atoms.rattle(rattle, seed=seed)
    return atoms


def _training_data(path: Path, n_frames: int = 30) -> None:
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n_frames):
        atoms = _cu(3.61 * rng.uniform(0.97, 1.03), rng.uniform(0.02, 0.15), seed=k)
        atoms.calc = EMT()
        labels = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "stress": atoms.get_stress()}
        atoms.calc = SinglePointCalculator(atoms, **labels)
        frames.append(atoms)
    ase.io.write(path, frames)


@pytest.fixture(scope="session")
def committee(tmp_path_factory):
    """Two members trained with seeds 0 and 1 on EMT Cu, and two rattled start structures."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("explore")
    _training_data(root / "cu.extxyz")
    members = []
    for seed in (0, 1):
        config = TrainingConfig(
            dataset=str(root / "cu.extxyz"),
            network={"hidden": [8, 8]},
            max_epochs=12,
            batch_size=8,
            seed=seed,
            descriptor={
                "type": "chebyshev",
                "radial_order": 6,
                "angular_order": 2,
                "radial_cutoff": 4.5,
                "angular_cutoff": 3.5,
            },
            dtype="float32",
            threads=1,
        )
        Trainer(config, root / f"member{seed}", **QUIET).run()
        members.append(str(root / f"member{seed}" / "model.safetensors"))
    ase.io.write(root / "start.extxyz", [_cu(3.61, seed=0), _cu(3.64, seed=1)])
    yield SimpleNamespace(root=root, members=members, same=[members[0]] * 2, starts=str(root / "start.extxyz"))
    torch.set_num_threads(threads)


def _config(committee, models=None, **overrides) -> ExplorationConfig:
    settings = {
        "models": models or committee.members,
        "structures": committee.starts,
        "threads": 1,
        "stages": [{"temperature": 300.0, "steps": 20, "sample_interval": 5}],
    }
    settings.update(overrides)
    return ExplorationConfig(**settings)


def _nvt_stages() -> list[dict]:
    return [{"temperature": t, "steps": 20, "sample_interval": 5} for t in (300.0, 600.0)]


@pytest.fixture(scope="module")
def nvt_run(committee, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("nvt")
    config = _config(committee, stages=_nvt_stages())
    summary = run_exploration(config, workdir, **QUIET)
    return SimpleNamespace(config=config, workdir=workdir, summary=summary)


def _frames(workdir: Path):
    return read_explored_frames(workdir / FRAMES)


def _select(workdir: Path, reference: Path | None = None, **settings) -> dict:
    """``annpot select`` over the exploration's frames: writes ``selected.extxyz`` and ``selection.json`` in
    ``workdir``; returns the selection summary."""
    return select_from_files(
        [str(workdir / FRAMES)], SelectionConfig(**settings), reference, workdir / "selected.extxyz"
    )


def _engine_picks(workdir: Path, reference: np.ndarray | None = None, **settings) -> list[tuple[int, int, int]]:
    """(structure, stage, step) of the frames the exploration engine itself selected before selection moved out
    of it: the same :func:`select_candidates` call on σ, smallest distances, fingerprints and grades."""
    frames, fingerprints = _frames(workdir)
    info = {
        key: np.array([f.info[key] for f in frames], dtype=float)
        for key in ("max_force_std", "min_distance", "extrapolation")
    }
    result = select_candidates(
        info["max_force_std"],
        info["min_distance"],
        fingerprints,
        SelectionConfig(**settings),
        reference,
        info["extrapolation"],
    )
    return [tuple(int(frames[i].info[key]) for key in ("structure", "stage", "step")) for i in result.selected]


def test_min_distance_matches_brute_force():
    atoms = _cu(rattle=0.2, seed=3)
    expected = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)].min()
    assert min_distance(atoms, 5.0) == pytest.approx(expected, abs=1e-10)
    assert min_distance(atoms, 0.5) == np.inf
    single = bulk("Cu", "fcc", a=3.61)  # one atom: the closest "pair" is an atom and its own periodic image
    assert min_distance(single, 5.0) == pytest.approx(3.61 / np.sqrt(2))


def test_identical_members_make_every_frame_accurate(committee, tmp_path):
    summary = run_exploration(_config(committee, models=committee.same), tmp_path, **QUIET)
    frames, _ = _frames(tmp_path)
    assert len(frames) == 2 * 4
    assert all(f.info["energy_std"] == 0.0 and f.info["max_force_std"] == 0.0 for f in frames)
    assert all(np.all(f.arrays["forces_std"] == 0.0) for f in frames)
    assert summary["frames"] == 8 and "counts" not in summary and "selection" not in summary  # it does not select
    assert not (tmp_path / "selected.extxyz").exists()
    selection = _select(tmp_path)
    assert selection["counts"] == {"accurate": 8, "candidate": 0, "failed": 0}
    assert selection["selected"] == []
    assert (tmp_path / "selected.extxyz").read_text() == ""


def test_nvt_frames_count_info_and_fixed_cell(committee, nvt_run):
    frames, fingerprints = _frames(nvt_run.workdir)
    assert len(frames) == 2 * 2 * 4  # structures × stages × steps / sample_interval
    ids = [(f.info["structure"], f.info["stage"], f.info["step"]) for f in frames]
    assert ids == [(s, k, step) for s in range(2) for k in range(2) for step in (5, 10, 15, 20)]
    starts = ase.io.read(committee.starts, ":")
    for frame in frames:
        assert np.array_equal(frame.cell.array, starts[frame.info["structure"]].cell.array)
        assert 1.5 < frame.info["min_distance"] < 2.6
        assert frame.info["temperature"] > 0 and np.isfinite(frame.info["energy"])
        assert frame.info["max_force_std"] == pytest.approx(frame.arrays["forces_std"].max())
        assert str(frame.info["start"]) == str(frame.info["structure"])  # no key in the structures file: the index
    assert fingerprints.shape == (16, 10) and np.isfinite(fingerprints).all()
    assert [t["reason"] for t in nvt_run.summary["trajectories"]] == ["completed"] * 4
    assert {t["steps"] for t in nvt_run.summary["trajectories"]} == {20}


def test_frames_round_trip_through_plain_ase_read(nvt_run):
    frames, fingerprints = _frames(nvt_run.workdir)
    plain = ase.io.read(nvt_run.workdir / FRAMES, ":")
    assert len(plain) == len(frames)
    for raw, frame, fingerprint in zip(plain, frames, fingerprints, strict=True):
        for key in ("structure", "stage", "step", "temperature", "energy_std", "max_force_std", "min_distance"):
            assert raw.info[key] == frame.info[key]
        np.testing.assert_array_equal(raw.info["fingerprint"], fingerprint)
        assert raw.get_potential_energy() == frame.info["energy"]  # extxyz reads "energy" into a calculator
        assert raw.arrays["forces_std"].shape == (len(raw),)
        assert np.abs(raw.get_momenta()).max() > 0
        assert frame.calc is None  # committee predictions are not presented as labels


def test_summary_counts_frames_and_stages(nvt_run):
    frames, _ = _frames(nvt_run.workdir)
    stage = np.array([f.info["stage"] for f in frames])
    summary = nvt_run.summary
    assert set(summary) == {"status", "frames", "stages", "trajectories", "stop_reasons", "device"}
    assert summary["frames"] == len(frames)
    assert summary["stages"] == [
        {"stage": k, "temperature": t, "pressure": None, "frames": int(np.sum(stage == k))}
        for k, t in enumerate((300.0, 600.0))
    ]
    assert sum(entry["frames"] for entry in summary["stages"]) == len(frames)
    assert summary["stop_reasons"] == {"completed": 4, "deviation": 0, "too_close": 0, "non_finite": 0}
    on_disk = json.loads((nvt_run.workdir / SUMMARY).read_text())
    assert on_disk == {key: value for key, value in summary.items() if key != "status"}


def test_selection_over_the_frames_classifies_overall_and_per_stage(nvt_run, tmp_path):
    shutil.copytree(nvt_run.workdir, tmp_path, dirs_exist_ok=True)
    frames, _ = _frames(tmp_path)
    sigma = np.array([f.info["max_force_std"] for f in frames])
    stage = np.array([f.info["stage"] for f in frames])
    window = (SelectionConfig().trust_lo, SelectionConfig().trust_hi)
    status = classify(sigma, *window)
    selection = _select(tmp_path)
    assert selection["frames"] == sum(selection["counts"].values()) == len(frames)
    assert selection["counts"] == {name: int(np.sum(status == name)) for name in ("accurate", "candidate", "failed")}
    for entry in selection["stages"]:
        assert entry["counts"] == {n: int(np.sum(status[stage == entry["stage"]] == n)) for n in entry["counts"]}
    assert [entry["frames"] for entry in selection["stages"]] == [e["frames"] for e in nvt_run.summary["stages"]]
    assert json.loads((tmp_path / "selection.json").read_text()) == selection


def test_a_selection_in_the_exploration_config_is_refused(committee):
    settings = _config(committee).model_dump(mode="json", exclude_none=True)
    with pytest.raises(ConfigError, match=r"selection is not an exploration setting.*annpot select"):
        load_config({**settings, "selection": {"trust_lo": 0.1, "trust_hi": 0.5}}, ExplorationConfig)


def test_selection_after_a_resume_respects_window_cap_and_reference(committee, nvt_run, tmp_path):
    """A finished exploration resumed (with reference structures added) runs no trajectory again and only adds the
    reference fingerprints; ``annpot select`` over its frames then picks what the engine used to pick."""
    workdir = tmp_path / "copy"
    shutil.copytree(nvt_run.workdir, workdir)
    frames, _ = _frames(workdir)
    sigma = np.array([f.info["max_force_std"] for f in frames])
    lo, hi = np.quantile(sigma, [0.25, 0.9])
    window = {"trust_lo": lo, "trust_hi": hi, "max_candidates": 3}
    messages = []
    config = _config(committee, stages=_nvt_stages(), reference_structures=committee.starts)
    summary = run_exploration(config, workdir, resume=True, log=messages.append)
    assert messages == ["resuming: 4 trajectories finished, 0 to continue"]  # no trajectory re-run
    assert summary["frames"] == len(frames) and summary["trajectories"] == nvt_run.summary["trajectories"]
    assert [f.positions.tolist() for f in _frames(workdir)[0]] == [f.positions.tolist() for f in frames]
    reference = workdir / REFERENCE_FINGERPRINTS
    assert np.load(reference).shape == (2, frames[0].info["fingerprint"].shape[0])

    status = classify(sigma, lo, hi)
    selection = _select(workdir, **window)
    assert selection["counts"]["accurate"] > 0 and selection["counts"]["candidate"] > 3
    picked = [(p["structure"], p["stage"], p["step"]) for p in selection["selected"]]
    assert picked == _engine_picks(workdir, **window)  # what the engine's own selection gave
    index = {(f.info["structure"], f.info["stage"], f.info["step"]): i for i, f in enumerate(frames)}
    assert len(picked) == 3 and all(status[index[key]] == "candidate" for key in picked)
    assert [p["start"] for p in selection["selected"]] == [str(key[0]) for key in picked]  # no keys: the index
    selected = ase.io.read(workdir / "selected.extxyz", ":")
    assert [(a.info["structure"], a.info["stage"], a.info["step"]) for a in selected] == picked
    for atoms, key in zip(selected, picked, strict=True):
        np.testing.assert_array_equal(atoms.positions, frames[index[key]].positions)
    assert all(a.calc is None and "momenta" not in a.arrays for a in selected)

    duplicate = _select(workdir, reference, **window, duplicate_threshold=1e6)
    assert duplicate["selected"] == []
    assert duplicate["selection_counts"]["duplicate"] == duplicate["counts"]["candidate"]
    assert _engine_picks(workdir, np.load(reference), **window, duplicate_threshold=1e6) == []


def test_frames_carry_the_key_of_their_start_structure_through_a_resume(committee, tmp_path):
    """A structures file whose frames have a ``key`` (as the CalcJob writes it): every frame records the key of its
    start, also those recorded after a resume in the middle of a trajectory, and the picks of ``annpot select`` name
    it."""
    starts = ase.io.read(committee.starts, ":")
    for atoms, key in zip(starts, ("cu_ideal", "cu_expanded"), strict=True):
        atoms.info["key"] = key
    ase.io.write(tmp_path / "keyed.extxyz", starts)
    assert start_keys(ase.io.read(tmp_path / "keyed.extxyz", ":")) == ["cu_ideal", "cu_expanded"]
    assert start_keys([starts[0], ase.io.read(committee.starts, "1")]) == ["cu_ideal", "1"]  # no key: the index
    config = _config(
        committee,
        structures=str(tmp_path / "keyed.extxyz"),
        wall_time=1e-9,
        stages=[{"temperature": 600.0, "steps": 10, "sample_interval": 5}],
    )
    workdir, calls, result = tmp_path / "run", 0, {"status": "wall_time"}
    while result["status"] == "wall_time":  # one recorded frame per call: a resume inside every trajectory
        result = run_exploration(config, workdir, resume=calls > 0, **QUIET)
        calls += 1
        assert calls < 10
    assert calls == 4 and result["frames"] == 4
    frames, _ = _frames(workdir)
    assert [(f.info["structure"], f.info["step"], f.info["start"]) for f in frames] == [
        (0, 5, "cu_ideal"),
        (0, 10, "cu_ideal"),
        (1, 5, "cu_expanded"),
        (1, 10, "cu_expanded"),
    ]

    sigma = np.array([f.info["max_force_std"] for f in frames])
    window = {"trust_lo": float(sigma.min()) / 2, "trust_hi": 2 * float(sigma.max())}
    selection = _select(workdir, **window)
    assert len(selection["selected"]) == 4  # every frame a candidate, none filtered
    assert sorted((p["structure"], p["step"], p["start"]) for p in selection["selected"]) == [
        (f.info["structure"], f.info["step"], f.info["start"]) for f in frames
    ]
    assert all(p["origin"] == str(workdir / FRAMES) for p in selection["selected"])
    written = ase.io.read(workdir / "selected.extxyz", ":")
    assert [a.info["start"] for a in written] == [p["start"] for p in selection["selected"]]


def test_reruns_are_deterministic(committee, nvt_run, tmp_path):
    run_exploration(nvt_run.config, tmp_path, **QUIET)
    for again, first in zip(_frames(tmp_path)[0], _frames(nvt_run.workdir)[0], strict=True):
        assert np.array_equal(again.positions, first.positions) and np.array_equal(again.cell, first.cell)
        assert np.array_equal(again.get_momenta(), first.get_momenta())


def test_trajectories_side_by_side_give_the_frames_of_one_after_another(committee, tmp_path):
    """Float64, start structures of 32 and 31 atoms through NVT, hot NVT, NPT and NVE stages, where atoms coming
    closer than 2 Å stop some trajectories early: three at a time, one model call per step for all of them (a
    stopped trajectory's place going to the next), give the frames of the serial run to 1e-10."""
    vacancy = _cu(3.62, seed=2)
    del vacancy[5]
    ase.io.write(tmp_path / "starts.extxyz", [_cu(3.61, seed=0), vacancy])
    stages = [
        {"temperature": 300.0, "steps": 30, "sample_interval": 5},
        {"temperature": 1500.0, "steps": 200, "sample_interval": 50},
        {"temperature": 900.0, "steps": 30, "sample_interval": 10, "pressure": 2.0},
        {"temperature": 600.0, "steps": 30, "sample_interval": 10, "ensemble": "nve", "timestep": 1.0},
    ]
    settings = {"structures": str(tmp_path / "starts.extxyz"), "stages": stages, "dtype": "float64"}
    settings |= {"min_distance": 2.0, "barostat_time": 100.0}
    runs = {}
    for width in (1, 3):
        config = _config(committee, **settings, batch_trajectories=width)
        runs[width] = run_exploration(config, tmp_path / f"width{width}", **QUIET), _frames(tmp_path / f"width{width}")
    (serial, (serial_frames, serial_fingerprints)), (batched, (frames, fingerprints)) = runs[1], runs[3]
    assert batched["trajectories"] == serial["trajectories"]
    reasons = {t["reason"] for t in serial["trajectories"]}
    assert reasons == {"completed", "too_close"}, serial["trajectories"]  # some trajectories leave the batch early
    assert len(frames) == len(serial_frames) == batched["frames"]
    np.testing.assert_allclose(fingerprints, serial_fingerprints, rtol=0, atol=1e-10)
    for frame, alone in zip(frames, serial_frames, strict=True):
        ids = [frame.info[key] for key in ("structure", "stage", "step")]
        assert ids == [alone.info[key] for key in ("structure", "stage", "step")]  # sorted as a serial run writes
        for key in ("energy", "energy_std", "max_force_std", "extrapolation", "temperature", "min_distance"):
            assert frame.info[key] == pytest.approx(alone.info[key], rel=0, abs=1e-10), (ids, key)
        for mine, theirs in [
            (frame.positions, alone.positions),
            (frame.cell.array, alone.cell.array),
            (frame.get_momenta(), alone.get_momenta()),
            (frame.arrays["forces_std"], alone.arrays["forces_std"]),
        ]:
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-10)
    volumes = {f.get_volume() for f in frames if f.info["stage"] == 2}
    assert len(volumes) > 1  # the NPT stage moved the cells: stress came from the shared call


def test_a_spent_budget_stops_side_by_side_trajectories_at_their_next_frame(committee, tmp_path, monkeypatch):
    """Four trajectories side by side, two sampling every 5 steps and two every 4: once the budget is spent (here:
    as soon as a frame is on disk), each stops at its next recorded frame and none starts; a resume then ends with
    the frames of an uninterrupted run."""
    stages = [{"temperature": 300.0, "steps": 20, "sample_interval": 5}, {"temperature": 600.0, "steps": 20}]
    stages[1]["sample_interval"] = 4
    config = _config(committee, stages=stages, batch_trajectories=4)
    uninterrupted = run_exploration(config, tmp_path / "uninterrupted", **QUIET)
    frames_file = tmp_path / "run" / FRAMES
    with monkeypatch.context() as patch:
        patch.setattr(StopRequest, "due", lambda self, margin=0.0: frames_file.stat().st_size > 0)
        messages = []
        assert run_exploration(config, tmp_path / "run", log=messages.append)["status"] == "wall_time"
    stopped = [(f.info["structure"], f.info["stage"], f.info["step"]) for f in _frames(tmp_path / "run")[0]]
    assert stopped == [(0, 1, 4), (1, 1, 4), (0, 0, 5), (1, 0, 5)]  # in the order they were recorded
    assert messages == [
        f"wall time: stopped during structure {s} stage {k}; resume continues from its last frame"
        for s, k, _ in stopped
    ]
    summary = run_exploration(config, tmp_path / "run", resume=True, **QUIET)
    assert summary["trajectories"] == uninterrupted["trajectories"]
    labels = [
        [(f.info["structure"], f.info["stage"], f.info["step"]) for f in _frames(tmp_path / name)[0]]
        for name in ("run", "uninterrupted")
    ]
    assert labels[0] == labels[1]


def test_side_by_side_calls_hold_at_most_256_atoms_per_thread():
    config = ExplorationConfig(models=["m"], structures="s", stages=[{"temperature": 300.0}], batch_trajectories=16)
    cells = {size: bulk("Cu", "fcc", a=3.61, cubic=True).repeat((size, size, size)) for size in (1, 2, 4, 6)}
    widths = {len(cells[size]): _batch_width(config, [cells[1], cells[size]], threads=2) for size in cells}
    assert widths == {4: 16, 32: 16, 256: 2, 864: 1}  # the largest start structure sets the width
    assert _batch_width(config, [cells[2]], threads=1) == 8 and _batch_width(config, [cells[4]], threads=16) == 16
    assert _batch_width(config.model_copy(update={"batch_trajectories": 3}), [cells[2]], threads=1) == 3


def test_break_deviation_stops_each_trajectory_at_once(committee, tmp_path):
    summary = run_exploration(_config(committee, break_deviation=1e-6), tmp_path, **QUIET)
    frames, _ = _frames(tmp_path)
    assert [(t["reason"], t["steps"]) for t in summary["trajectories"]] == [("deviation", 1)] * 2
    assert [(f.info["structure"], f.info["step"]) for f in frames] == [(0, 1), (1, 1)]  # the offending frame
    assert all(f.info["max_force_std"] > 1e-6 for f in frames)


def test_close_atoms_stop_a_trajectory(committee, tmp_path):
    stages = [{"temperature": 1500.0, "steps": 200, "sample_interval": 50}]
    summary = run_exploration(_config(committee, min_distance=2.4, stages=stages), tmp_path, **QUIET)
    frames, _ = _frames(tmp_path)
    for trajectory in summary["trajectories"]:
        assert trajectory["reason"] == "too_close" and trajectory["steps"] < 200
        last = [f for f in frames if f.info["structure"] == trajectory["structure"]][-1]
        assert last.info["step"] == trajectory["steps"] and last.info["min_distance"] < 2.4


def test_npt_changes_volume_and_nvt_keeps_it(committee, tmp_path):
    stages = [{"temperature": 300.0, "steps": 40, "sample_interval": 10, "pressure": p} for p in (None, 3.0, -3.0)]
    ase.io.write(tmp_path / "one.extxyz", _cu(3.61))
    config = _config(committee, structures=str(tmp_path / "one.extxyz"), stages=stages, barostat_time=100.0)
    run_exploration(config, tmp_path / "run", **QUIET)
    frames, _ = _frames(tmp_path / "run")
    start = _cu(3.61).get_volume()
    volumes = {k: np.array([f.get_volume() for f in frames if f.info["stage"] == k]) for k in range(3)}
    np.testing.assert_allclose(volumes[0], start, rtol=1e-12)
    for k in (1, 2):
        assert len(volumes[k]) == 4 and np.isfinite(volumes[k]).all()
        assert np.abs(volumes[k] / start - 1).min() > 1e-3
    assert volumes[1].mean() < volumes[2].mean()  # compression under positive pressure


def test_resume_continues_a_partial_trajectory(committee, nvt_run, tmp_path):
    shutil.copytree(nvt_run.workdir, tmp_path, dirs_exist_ok=True)
    progress = json.loads((tmp_path / PROGRESS).read_text())
    del progress["finished"]["1/1"]  # the last trajectory was killed after 2 of its 4 frames, mid-write of a third
    (tmp_path / PROGRESS).write_text(json.dumps(progress))
    text = (tmp_path / FRAMES).read_text().splitlines(keepends=True)
    frame_lines = len(text) // 16
    (tmp_path / FRAMES).write_text("".join(text[: 14 * frame_lines + frame_lines // 2]))
    messages = []
    summary = run_exploration(nvt_run.config, tmp_path, resume=True, log=messages.append)
    assert messages == [
        "resuming: 3 trajectories finished, 1 to continue",
        "structure 1 stage 1: completed after 20 steps",
    ]
    frames, _ = _frames(tmp_path)
    original, _ = _frames(nvt_run.workdir)
    assert len(frames) == len(original) == summary["frames"]
    assert [f.info["step"] for f in frames[12:]] == [5, 10, 15, 20]
    for resumed, first in zip(frames[:14], original[:14], strict=True):
        assert np.array_equal(resumed.positions, first.positions)


def test_resume_after_an_interruption_between_trajectories(committee, tmp_path):
    config = _config(committee, stages=_nvt_stages())

    def interrupt(message):
        if message.startswith("structure 0 stage 1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_exploration(config, tmp_path, log=interrupt)
    messages = []
    summary = run_exploration(config, tmp_path, resume=True, log=messages.append)
    assert [m.split(":")[0] for m in messages] == ["resuming", "structure 1 stage 0", "structure 1 stage 1"]
    assert summary["frames"] == 16 and len(summary["trajectories"]) == 4
    with pytest.raises(InputDataError, match="cannot resume"):
        run_exploration(config.model_copy(update={"seed": 7}), tmp_path, resume=True, **QUIET)


def test_non_finite_and_overlapping_states_stop(committee):
    config = _config(committee)
    atoms = _cu()
    atoms.calc = AnnCalculator(committee.members)
    assert _stop_reason(atoms, committee_state(atoms, 10), config) is None
    closest = min_distance(atoms, 3.0)  # about 2.5 Å, within the model cutoff (4.5 Å)
    for limit, reason in [(closest - 1e-6, None), (closest + 1e-6, "too_close")]:
        limited = config.model_copy(update={"min_distance": limit})
        assert _stop_reason(atoms, committee_state(atoms, 10), limited) == reason, limit
    pair = Atoms("Cu2", positions=[[0.0, 0.0, 0.0], [4.8, 0.0, 0.0]], cell=[12.0] * 3, pbc=True)
    pair.calc = AnnCalculator(committee.members)  # 4.8 Å apart: no pair within the cutoff, but within a 5 Å limit
    assert _stop_reason(pair, committee_state(pair, 10), config.model_copy(update={"min_distance": 5.0})) == "too_close"
    atoms.positions[1] = atoms.positions[0] + 0.2  # the calculator refuses atoms this close
    assert _stop_reason(atoms, committee_state(atoms, 10), config) == "too_close"
    atoms.positions[1] = np.nan
    state = committee_state(atoms, 10)
    assert _stop_reason(atoms, state, config) == "non_finite" and np.isnan(state["fingerprint"]).all()


def test_start_structure_with_unknown_element(committee, tmp_path):
    gold = _cu()
    gold.symbols[3] = "Au"
    ase.io.write(tmp_path / "gold.extxyz", [_cu(), gold])
    with pytest.raises(UnknownElementError, match=r"start structure 1 .*Au"):
        run_exploration(_config(committee, structures=str(tmp_path / "gold.extxyz")), tmp_path / "run", **QUIET)


def test_empty_or_overlapping_start_structures(committee, tmp_path):
    (tmp_path / "empty.extxyz").write_text("")
    with pytest.raises(InputDataError, match=r"no structures|cannot read"):
        run_exploration(_config(committee, structures=str(tmp_path / "empty.extxyz")), tmp_path / "run", **QUIET)
    close = _cu()
    close.positions[5] = close.positions[4] + [0.3, 0.0, 0.0]
    ase.io.write(tmp_path / "close.extxyz", close)
    with pytest.raises(InputDataError, match=r"start structure 0 .*0\.300 Å apart"):
        run_exploration(_config(committee, structures=str(tmp_path / "close.extxyz")), tmp_path / "run", **QUIET)


def test_wall_time_stops_after_a_recorded_frame_and_resumes_to_the_same_frames(committee, nvt_run, tmp_path):
    """A budget that is always spent stops every call right after one recorded frame; resuming again and again
    ends with exactly the frames (structure, stage, step) of the uninterrupted run, and nothing is recorded twice."""
    config = nvt_run.config.model_copy(update={"wall_time": 1e-9})
    calls, result = 0, {"status": "wall_time"}
    while result["status"] == "wall_time":
        before = len(_frames(tmp_path)[0]) if (tmp_path / FRAMES).exists() else 0
        result = run_exploration(config, tmp_path, resume=calls > 0, **QUIET)
        calls += 1
        after = len(_frames(tmp_path)[0])
        assert after - before <= 1  # each interrupted call records one frame, then stops
        assert calls < 50
    frames, _ = _frames(tmp_path)
    original, _ = _frames(nvt_run.workdir)
    labels = [(f.info["structure"], f.info["stage"], f.info["step"]) for f in frames]
    assert labels == [(f.info["structure"], f.info["stage"], f.info["step"]) for f in original]
    assert calls == len(original)  # the last frame of a trajectory ends it, so it never interrupts
    assert result["frames"] == len(original)


def test_explore_command_exits_75_on_wall_time(committee, tmp_path):
    from click.testing import CliRunner

    from aiida_annpot.core.cli import cli

    settings = _config(committee, wall_time=1e-9).model_dump(mode="json", by_alias=True, exclude_none=True)
    (tmp_path / "explore.yaml").write_text(yaml.safe_dump(settings))
    result = CliRunner().invoke(cli, ["explore", str(tmp_path / "explore.yaml"), "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 75, result.output
    assert "--resume" in result.output
    assert not (tmp_path / "w" / "summary.json").exists()  # nothing that looks like a finished exploration
