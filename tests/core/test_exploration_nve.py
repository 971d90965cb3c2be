"""NVE stages of ``annpot explore`` (velocity Verlet): the total energy of the committee-mean potential is conserved,
and an NVE stage with a pressure is refused by the schema."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from aiida_annpot.common.config import ConfigError, ExplorationConfig, ExplorationStage, load_config
from aiida_annpot.core.exploration import FRAMES, read_explored_frames, run_exploration
from aiida_annpot.core.properties import md_stability

QUIET = {"log": lambda message: None}


def _run(trained_model, write_frames, tmp_path, ensemble: str, steps: int = 300) -> list:
    start = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    start.rattle(0.02, seed=4)
    structures = write_frames(tmp_path / "start.extxyz", [start])
    stage = {"temperature": 300.0, "ensemble": ensemble, "steps": steps, "timestep": 1.0, "sample_interval": 5}
    config = ExplorationConfig(
        models=[str(trained_model)],
        structures=str(structures),
        stages=[stage],
        friction=0.05,
        dtype="float64",
        threads=1,
    )
    summary = run_exploration(config, tmp_path / ensemble, **QUIET)
    assert summary["trajectories"][0]["reason"] == "completed"
    frames, _ = read_explored_frames(tmp_path / ensemble / FRAMES)
    assert len(frames) == steps // 5
    return frames


def _total_per_atom(frames) -> np.ndarray:
    return np.array([(f.info["energy"] + f.get_kinetic_energy()) / len(f) for f in frames])


def test_nve_conserves_the_total_energy_of_a_trained_model(trained_model, write_frames, tmp_path):
    frames = _run(trained_model, write_frames, tmp_path, "nve")
    total = _total_per_atom(frames)
    potential = np.array([f.info["energy"] / len(f) for f in frames])
    # kinetic and potential energy exchange by several meV/atom; their sum stays within a fraction of a meV/atom
    assert np.ptp(potential) > 5e-3
    assert np.ptp(total) < 0.01 * np.ptp(potential)
    result = md_stability(frames, timestep=1.0, completed=True, max_drift=1.0, min_distance=1.5)
    assert abs(result["energy_drift_meV_per_atom_per_ps"]) < 1.0 and result["stable"]
    # it starts from Maxwell–Boltzmann velocities at the stage temperature, without a centre-of-mass motion
    momenta = np.stack([f.get_momenta() for f in frames])
    assert np.abs(momenta.sum(axis=1)).max() < 1e-6


def test_nvt_with_the_same_start_does_not_conserve_energy(trained_model, write_frames, tmp_path):
    """The Langevin thermostat exchanges energy with the bath: the contrast shows the NVE stage is not a thermostat."""
    nve = _total_per_atom(_run(trained_model, write_frames, tmp_path, "nve", steps=100))
    nvt = _total_per_atom(_run(trained_model, write_frames, tmp_path, "nvt", steps=100))
    assert np.ptp(nvt) > 5 * np.ptp(nve)


@pytest.mark.parametrize("schema", [ExplorationStage, ExplorationConfig])
def test_nve_with_a_pressure_is_refused(schema):
    stage = {"temperature": 300.0, "ensemble": "nve", "pressure": 1.0}
    settings = stage if schema is ExplorationStage else {"models": ["m"], "structures": "s", "stages": [stage]}
    with pytest.raises(ConfigError, match=r"a pressure \(1.0 GPa\) needs the npt ensemble, not nve"):
        load_config(settings, schema)


def test_an_nve_stage_resolves_to_nve_without_pressure():
    assert ExplorationStage(temperature=300.0, ensemble="nve").resolved_ensemble == "nve"
