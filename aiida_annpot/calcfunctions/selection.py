"""``select_candidates``: the engine's query-by-committee selection over the frames of one or more explorations.

The inputs are the ``frames_<k>`` files of the exploration jobs (each frame carries σ_F^max, the smallest
interatomic distance, the stage, a fingerprint and an extrapolation grade), the selection settings and, optionally,
the fingerprints of the training set for the duplicate filter. With ``extrapolation: candidate`` in the settings,
frames the committee calls accurate but whose descriptors leave the training ranges are candidates too. The
selected frames become new StructureData (``structure_000``, …) linked to the frames they came from, so each new
label traces back to the exploration and the committee that proposed it.
"""

from __future__ import annotations

import numpy as np
from aiida.engine import calcfunction
from aiida.orm import ArrayData, Dict, SinglefileData, StructureData
from ase import Atoms

from ..common.config import SelectionConfig, load_config
from ..core import selection
from ..core.explored import read_explored_frames

__all__ = ["read_frames_files", "select_candidates"]


def read_frames_files(files: dict[str, SinglefileData]) -> tuple[list[Atoms], np.ndarray, list[str]]:
    """Frames, (F, D) fingerprints and the input key of every frame, over ``files`` in key order."""
    frames, fingerprints, origins = [], [], []
    for key in sorted(files):
        with files[key].as_path() as path:
            part, prints = read_explored_frames(path)
        frames.extend(part)
        origins.extend([key] * len(part))
        if part:
            fingerprints.append(prints)
    stacked = np.concatenate(fingerprints) if fingerprints else np.empty((0, 0))
    return frames, stacked, origins


@calcfunction
def select_candidates(selection_settings: Dict, reference_fingerprints: ArrayData | None = None, **frames) -> dict:
    """Classify every explored frame and pick new structures to label.

    Outputs ``structure_<nnn>`` (the picks, in pick order), ``summary`` (counts and ratios overall and per stage,
    out-of-range counts, where each pick came from) and ``deviations`` (per frame: ``max_force_std``,
    ``extrapolation`` (NaN where not recorded), ``stage`` and ``selected``).
    """
    config = load_config(selection_settings.get_dict(), SelectionConfig)
    atoms, fingerprints, origins = read_frames_files(frames)
    sigma = np.array([frame.info["max_force_std"] for frame in atoms], dtype=float)
    distance = np.array([frame.info["min_distance"] for frame in atoms], dtype=float)
    stage = np.array([frame.info["stage"] for frame in atoms], dtype=int)
    grades = np.array([frame.info["extrapolation"] for frame in atoms], dtype=float)
    reference = reference_fingerprints.get_array("fingerprints") if reference_fingerprints is not None else None
    if not atoms:
        fingerprints = np.empty((0, 0 if reference is None else reference.shape[1]))
    result = selection.select_candidates(sigma, distance, fingerprints, config, reference, grades)
    status = selection.classify(sigma, config.trust_lo, config.trust_hi)

    outputs = {}
    picks = []
    for rank, index in enumerate(result.selected):
        frame = atoms[int(index)]
        outputs[f"structure_{rank:03d}"] = StructureData(
            ase=Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        )
        picks.append({"origin": origins[index], **{key: int(frame.info[key]) for key in ("structure", "stage", "step")},
                      "max_force_std": float(sigma[index]), "promoted": bool(index in result.promoted),
                      "extrapolation": float(grades[index]) if np.isfinite(grades[index]) else None})  # fmt: skip
    tolerance = config.extrapolation_tolerance
    stages = [{"stage": int(k), **selection.class_summary(status[stage == k]),
               "extrapolation": selection.extrapolation_summary(grades[stage == k], tolerance)}
              for k in np.unique(stage)]  # fmt: skip
    outputs["summary"] = Dict({**selection.class_summary(status), "stages": stages, "selection_counts": result.counts,
                               "extrapolation": {**selection.extrapolation_summary(grades, tolerance),
                                                 "promoted": len(result.promoted)},
                               "selected": picks})  # fmt: skip
    deviations = ArrayData()
    deviations.set_array("max_force_std", sigma)
    deviations.set_array("extrapolation", grades)
    deviations.set_array("stage", stage)
    deviations.set_array("selected", np.isin(np.arange(len(atoms)), result.selected))
    outputs["deviations"] = deviations
    return outputs
