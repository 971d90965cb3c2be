"""``annpot explore``: committee-driven molecular dynamics that looks for structures the potential does not know.

Every start structure is run through every stage (one trajectory per pair, seeded from ``config.seed`` and the two
indices, so reruns are reproducible). NVT stages use ASE's ``Langevin``; NPT stages use ASE's ``LangevinBAOAB``
with a hydrostatic Langevin–Hoover barostat (``externalstress = -pressure``): it scales the cell isotropically, so
it works for any triclinic cell without rotating it to upper-triangular form, it shares the stochastic thermostat
of the NVT stages, and it needs only the temperature, the friction (``T_tau = 1/friction``) and the barostat time
(``P_tau``). Unlike ``ase.md.npt.NPT`` it does not require an upper-triangular cell, and unlike ``NPTBerendsen`` it
samples the isothermal-isobaric ensemble. NVE stages (``ensemble: nve``) use ASE's ``VelocityVerlet`` from the same
seeded Maxwell–Boltzmann velocities: the committee-mean energy is conserved, which tests the potential's stability.

After every MD step the committee deviation, the finiteness of energy and forces and the closest pair of atoms are
checked (the committee statistics come with the forces, so this is free); a trajectory stops early with reason
"deviation", "too_close" or "non_finite", else ends "completed". Every ``sample_interval`` steps, and at an early
stop, a frame is appended to ``frames.extxyz`` with its committee energy, deviations, temperature, smallest
interatomic distance, per-atom ``forces_std``, fingerprint, extrapolation grade (how far the descriptors leave the
training ranges) and the key of its start structure (:func:`~aiida_annpot.core.scoring.record_frame`).
``progress.json`` lists finished trajectories, so ``resume=True`` skips them and restarts an unfinished one from its
last recorded frame (positions, cell, momenta; the barostat momentum restarts at zero). Finally ``summary.json``
lists the trajectories and frame counts.

Up to ``batch_trajectories`` trajectories run side by side (:class:`~aiida_annpot.core.lockstep.Lockstep`): every
MD step of all of them is one model call, so small cells do not each pay its fixed cost. Each keeps its own
integrator, random numbers, neighbour list and stopping rule, and gets the results it would get alone, to
floating-point rounding; ``frames.extxyz`` then receives their frames interleaved while they run, and is sorted by
structure, stage and step when the exploration finishes.

The exploration samples and scores; it does not select. Selection runs once over the frames of every exploration
job (and of frames scored by ``annpot score``): ``annpot select``, or the ``select_candidates`` calcfunction.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.langevinbaoab import LangevinBAOAB
from ase.md.md import MolecularDynamics
from ase.md.velocitydistribution import Stationary, thermalize_momenta
from ase.md.verlet import VelocityVerlet

from ..common.config import ExplorationConfig, ExplorationStage
from . import jsonio
from .calculator import AnnCalculator
from .dataset import dataset_hash, read_frames
from .device import device_record, resolve_device
from .errors import InputDataError, UnknownElementError
from .explored import FRAMES, PROGRESS, REFERENCE_FINGERPRINTS, SUMMARY, decode_key, read_explored_frames
from .generate import min_distance
from .geometry import MIN_ALLOWED_DISTANCE, NeighborSearch
from .interrupt import StopRequest
from .lockstep import Lockstep
from .model import Potential
from .scoring import committee_state, record_frame, reference_fingerprints

__all__ = [
    "FRAMES",
    "PROGRESS",
    "REFERENCE_FINGERPRINTS",
    "STOP_REASONS",
    "SUMMARY",
    "min_distance",
    "read_explored_frames",
    "run_exploration",
    "start_keys",
]

#: Why a trajectory ended.
STOP_REASONS = ("completed", "deviation", "too_close", "non_finite")
#: Trajectories side by side share a model call up to this many atoms per torch thread: enough to keep each thread
#: busy; beyond it a call only grows its memory and cache footprint (64-atom cells on 2 cores: 4 per call are best
#: on one thread, 8 on two; bench/RESULTS.md).
ATOMS_PER_THREAD = 256
#: Settings that do not change the trajectories beyond floating-point rounding (a resume may change them).
_NOT_IN_DIGEST = {
    "models",
    "structures",
    "reference_structures",
    "threads",
    "wall_time",
    "batch_trajectories",
    "device",
}


@dataclass
class _Context:
    """What every trajectory needs: settings, the committee, and where frames go."""

    config: ExplorationConfig
    potential: Potential
    trusted_baselines: tuple  # import-path baselines the caller trusts
    cutoff: float  # range (Å) of the recorded smallest distance: the model cutoff
    dim: int  # fingerprint length
    write: Callable[[Atoms], None]
    starts: list[str]  # key of each start structure, recorded with its frames
    stop: StopRequest  # wall time or SIGTERM: checked after each recorded frame, the point a resume starts from


class _InterruptedError(Exception):
    """Raised after a recorded frame when the run must stop; the trajectory resumes from that frame."""


def _load_structures(config: ExplorationConfig, potential: Potential) -> list[Atoms]:
    """Start structures, checked: elements covered by the model, no atoms closer than 0.5 Å, periodic for NPT."""
    structures = read_frames(config.structures)
    search = NeighborSearch(MIN_ALLOWED_DISTANCE)
    npt = any(stage.pressure is not None for stage in config.stages)
    for index, atoms in enumerate(structures):
        label = f"start structure {index} of {config.structures}"
        try:
            potential.species(atoms.numbers)
        except UnknownElementError as exc:
            raise UnknownElementError(f"{label}: {exc}") from exc
        search(atoms.positions, atoms.cell.array, atoms.pbc, label=label)
        if npt and not atoms.pbc.all():
            raise InputDataError(f"{label} is not periodic in all three directions, which NPT stages need")
    return structures


def start_keys(structures: list[Atoms]) -> list[str]:
    """The key of each start structure: its ``key`` in the structures file (the CalcJob writes the input
    namespace's keys there), else its index."""
    return [decode_key(atoms.info.get("key", index)) for index, atoms in enumerate(structures)]


def _digest(config: ExplorationConfig, structures: list[Atoms]) -> str:
    """Identifies what the trajectories depend on, so a resume with other settings is refused."""
    settings = json.dumps(config.model_dump(mode="json", exclude=_NOT_IN_DIGEST), sort_keys=True)
    return hashlib.sha256((settings + dataset_hash(structures)).encode()).hexdigest()


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(jsonio.dumps(data, indent=2))
    temporary.replace(path)  # atomic: a kill mid-write leaves the previous file


def _recover_frames(path: Path) -> list[Atoms]:
    """Frames written so far; a partly written last frame (a kill mid-write) is cut off the file."""
    frames: list[Atoms] = []
    if not path.is_file():
        return frames
    try:
        for frame in ase.io.iread(path, index=":", format="extxyz"):
            frames.append(frame)
    except Exception:  # ASE raises several types for a truncated frame
        ase.io.write(path, frames, format="extxyz")
    return frames


def _prepare(workdir: Path, digest: str, resume: bool, log) -> tuple[dict, dict]:
    """Finished trajectories {"s/k": record} and the last recorded frame of each unfinished one {(s, k): Atoms}."""
    progress_path = workdir / PROGRESS
    if not (resume and progress_path.is_file()):
        for name in (FRAMES, PROGRESS, SUMMARY):
            (workdir / name).unlink(missing_ok=True)
        _write_json(progress_path, {"digest": digest, "finished": {}})
        return {}, {}
    progress = json.loads(progress_path.read_text())
    if progress.get("digest") != digest:
        raise InputDataError(
            f"{progress_path} was written for other exploration settings or start structures; cannot resume"
        )
    last = {(int(f.info["structure"]), int(f.info["stage"])): f for f in _recover_frames(workdir / FRAMES)}
    finished = progress["finished"]
    log(f"resuming: {len(finished)} trajectories finished, {len(set(last) - _keys(finished))} to continue")
    return finished, last


def _keys(finished: dict) -> set:
    return {(record["structure"], record["stage"]) for record in finished.values()}


def _initial_state(start: Atoms, config: ExplorationConfig, ids: tuple[int, int], last: Atoms | None):
    """(atoms, first step, thermostat generator): seeded Maxwell–Boltzmann velocities, or the last recorded frame."""
    structure, stage = ids
    source = start if last is None else last
    atoms = Atoms(numbers=source.numbers, positions=source.positions, cell=source.cell.array, pbc=source.pbc)
    step = 0 if last is None else int(last.info["step"])
    rng = np.random.default_rng([config.seed, structure, stage, step])
    if last is None:
        thermalize_momenta(atoms, temperature_K=config.stages[stage].temperature, rng=rng)
        Stationary(atoms)
    else:
        atoms.set_momenta(last.get_momenta())
    return atoms, step, rng


def _integrator(atoms: Atoms, stage: ExplorationStage, config: ExplorationConfig, rng) -> MolecularDynamics:
    """Langevin NVT, hydrostatic Langevin–Hoover NPT (LangevinBAOAB), or velocity Verlet NVE, as the stage says."""
    dt = stage.timestep * units.fs
    if stage.resolved_ensemble == "nve":
        return VelocityVerlet(atoms, dt)
    if stage.resolved_ensemble == "nvt":
        return Langevin(
            atoms, dt, temperature_K=stage.temperature, friction=config.friction / units.fs, fixcm=False, rng=rng
        )
    with warnings.catch_warnings():  # LangevinBAOAB announces its heuristic barostat mass
        warnings.simplefilter("ignore", UserWarning)
        return LangevinBAOAB(
            atoms,
            dt,
            temperature_K=stage.temperature,
            externalstress=-stage.pressure * units.GPa,
            hydrostatic=True,
            T_tau=units.fs / config.friction,
            P_tau=config.barostat_time * units.fs,
            rng=rng,
        )


def _stop_reason(atoms: Atoms, state: dict, config: ExplorationConfig) -> str | None:
    if state["too_close"]:
        return "too_close"
    if not state["finite"]:
        return "non_finite"
    closest = state["min_distance"]  # the closest pair within the model cutoff
    if config.min_distance > atoms.calc.potential.descriptor.cutoff:  # a limit beyond it needs a search of its own
        closest = min_distance(atoms, config.min_distance)
    if closest < config.min_distance:
        return "too_close"
    if config.break_deviation is not None and state["max_force_std"] > config.break_deviation:
        return "deviation"
    return None


def _run_trajectory(ctx: _Context, atoms: Atoms, ids: tuple[int, int], step: int, rng, evaluate) -> tuple[str, int]:
    """MD from ``step`` to the stage's end or an early stop; returns (stop reason, steps run).

    :param evaluate: the model call of the trajectory's calculator: its :class:`Lockstep` task's handle.
    """
    stage, config = ctx.config.stages[ids[1]], ctx.config
    atoms.calc = AnnCalculator(
        ctx.potential, config.dtype, config.skin, trusted_baselines=ctx.trusted_baselines, evaluate=evaluate
    )
    # a resumed trajectory whose last recorded frame already ended it stops right there
    reason = _stop_reason(atoms, committee_state(atoms, ctx.dim), ctx.config) if step else None
    dyn = _integrator(atoms, stage, ctx.config, rng) if reason is None and step < stage.steps else None
    since_record = time.perf_counter()
    while reason is None and step < stage.steps:
        with contextlib.suppress(InputDataError):  # overlapping atoms or non-finite positions: see _evaluate
            dyn.step()
        step += 1
        state = committee_state(atoms, ctx.dim)
        reason = _stop_reason(atoms, state, ctx.config)
        if reason is not None or step % stage.sample_interval == 0:
            ctx.write(record_frame(atoms, state, ids, step, ctx.cutoff, ctx.starts[ids[0]]))
            now = time.perf_counter()
            if reason is None and step < stage.steps and ctx.stop.due(margin=1.5 * (now - since_record)):
                raise _InterruptedError
            since_record = now
    return reason or "completed", step


def _batch_width(config: ExplorationConfig, structures: list[Atoms], threads: int, device_type: str = "cpu") -> int:
    """How many trajectories run side by side: ``batch_trajectories``, on the CPU fewer where the largest start
    structures would exceed :data:`ATOMS_PER_THREAD` atoms per thread in a call (one at least). A GPU takes them all:
    a larger call costs it little more than a small one."""
    if device_type != "cpu":
        return config.batch_trajectories
    largest = max(len(atoms) for atoms in structures)
    return max(1, min(config.batch_trajectories, ATOMS_PER_THREAD * threads // max(largest, 1)))


def _append_frame(handle, frame: Atoms) -> None:
    text = io.StringIO()
    ase.io.write(text, frame, format="extxyz")
    handle.write(text.getvalue())  # one write per frame, flushed: a kill loses at most the frame being written
    handle.flush()


def _summarize(frames: list[Atoms], finished: dict, config: ExplorationConfig) -> dict:
    """Frame counts overall and per stage, and how every trajectory ended."""
    stage_of = np.array([int(f.info["stage"]) for f in frames], dtype=int)
    trajectories = sorted(finished.values(), key=lambda r: (r["structure"], r["stage"]))
    stages = [
        {"stage": k, "temperature": stage.temperature, "pressure": stage.pressure, "frames": int((stage_of == k).sum())}
        for k, stage in enumerate(config.stages)
    ]
    return {
        "frames": len(frames),
        "stages": stages,
        "trajectories": trajectories,
        "stop_reasons": {r: sum(t["reason"] == r for t in trajectories) for r in STOP_REASONS},
    }


def run_exploration(
    config: ExplorationConfig, workdir: str | Path, resume: bool = False, log=print, trusted_baselines=()
) -> dict:
    """Run (or resume) every start structure through every stage in ``workdir``; returns the summary.

    :param config: exploration settings; paths already resolved.
    :param resume: continue from ``progress.json`` and ``frames.extxyz`` instead of starting over.
    :param log: called with one line per finished trajectory.
    :param trusted_baselines: import-path baselines the caller trusts (a model file cannot trust its own).
    :returns: the summary, with ``status`` ``finished``; or ``{"status": "wall_time", ...}`` when the wall-time
        budget or SIGTERM stopped the run after a recorded frame (``resume=True`` continues from there).
    :raises InputDataError: no start structures, an element the model lacks, overlapping atoms, or a resume with
        other settings.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)  # first: a missing GPU fails before any work
    if config.threads:
        torch.set_num_threads(config.threads)
    single = AnnCalculator(config.models, config.dtype, trusted_baselines=trusted_baselines, device=device)  # no skin
    potential = single.potential
    structures = _load_structures(config, potential)
    dim = reference_fingerprints(single, structures[:1], config.structures).shape[1]
    digest = _digest(config, structures)
    finished, last = _prepare(workdir, digest, resume, log)
    todo = [(s, k) for s in range(len(structures)) for k in range(len(config.stages)) if f"{s}/{k}" not in finished]
    interrupted: list[tuple[int, int]] = []  # trajectories the wall time stopped after a recorded frame
    with (workdir / FRAMES).open("a") as handle, StopRequest(config.wall_time) as stop:
        write = lambda frame: _append_frame(handle, frame)  # noqa: E731
        cutoff = potential.descriptor.cutoff
        ctx = _Context(config, potential, tuple(trusted_baselines), cutoff, dim, write, start_keys(structures), stop)

        def explore(ids: tuple[int, int], evaluate) -> None:
            """One trajectory, a :class:`Lockstep` task; when it ends, ``progress.json`` records it."""
            s, k = ids
            atoms, step, rng = _initial_state(structures[s], config, ids, last.get(ids))
            try:
                reason, steps = _run_trajectory(ctx, atoms, ids, step, rng, evaluate)
            except _InterruptedError:
                interrupted.append(ids)
                log(f"wall time: stopped during structure {s} stage {k}; resume continues from its last frame")
                return
            finished[f"{s}/{k}"] = {"structure": s, "stage": k, "reason": reason, "steps": steps}
            _write_json(workdir / PROGRESS, {"digest": digest, "finished": finished})
            log(f"structure {s} stage {k}: {reason} after {steps} steps")

        # no trajectory starts once the budget is spent, but the first: every call advances at least one frame
        width = _batch_width(config, structures, torch.get_num_threads(), device.type)
        Lockstep(potential.forward_many, width).run(
            (functools.partial(explore, ids) for ids in todo), admit=lambda: not (interrupted or stop.due())
        )
    unstarted = [(s, k) for s, k in todo if f"{s}/{k}" not in finished and (s, k) not in interrupted]
    if unstarted and not interrupted:
        log(f"wall time: stopped before structure {unstarted[0][0]} stage {unstarted[0][1]}")
    if unstarted or interrupted:
        return {"status": "wall_time", "finished_trajectories": len(finished)}
    return {"status": "finished", **_finish(workdir, config, single, finished, dim)}


def _finish(workdir: Path, config: ExplorationConfig, calc: AnnCalculator, finished: dict, dim: int) -> dict:
    """Sort the frames, write ``summary.json`` (with the device that ran the committee: the last session's, for a
    resumed run) and, with reference structures, their fingerprints (for the duplicate filter)."""
    frames, _ = read_explored_frames(workdir / FRAMES)
    _sort_frames(workdir / FRAMES, frames)
    if config.reference_structures:
        reference = reference_fingerprints(calc, read_frames(config.reference_structures), config.reference_structures)
        np.save(workdir / REFERENCE_FINGERPRINTS, reference)
    summary = {**_summarize(frames, finished, config), "device": device_record(calc.potential.device)}
    _write_json(workdir / SUMMARY, summary)
    return summary


def _sort_frames(path: Path, frames: list[Atoms]) -> None:
    """Order ``frames.extxyz`` (whose ``frames`` are given) by structure, stage and step, as trajectories run one
    after another write it; side by side they record their frames interleaved. The text of each frame is kept."""
    keys = [(int(f.info["structure"]), int(f.info["stage"]), int(f.info["step"])) for f in frames]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    if order == list(range(len(keys))):
        return
    lines = path.read_text().splitlines(keepends=True)
    blocks, start = [], 0
    while start < len(lines):  # an extxyz frame: its atom count, a comment line, a line per atom
        end = start + int(lines[start]) + 2
        blocks.append("".join(lines[start:end]))
        start = end
    if len(blocks) != len(frames):
        raise RuntimeError(f"{path}: {len(blocks)} frames in the text but {len(frames)} read")
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(blocks[index] for index in order))
    temporary.replace(path)  # atomic: a kill mid-write leaves the unsorted file
