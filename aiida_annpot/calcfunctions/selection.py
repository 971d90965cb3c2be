"""``select_candidates``: the engine's query-by-committee selection over the frames of one or more explorations.

The inputs are the ``frames_<k>`` files of the exploration jobs or of ``annpot score`` (each frame carries σ_F^max,
the smallest interatomic distance, the stage, its start structure's key, a fingerprint and an extrapolation grade),
the selection settings and, optionally,
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
    """Classify every scored frame and pick new structures to label (:func:`~aiida_annpot.core.selection.
    select_frames`, the one place the selection is decided).

    Outputs ``structure_<nnn>`` (the picks, in pick order), ``summary`` (counts and ratios overall and per stage,
    out-of-range counts, and per pick its frames file, start structure, stage and step) and ``deviations`` (per
    frame: ``max_force_std``, ``extrapolation`` (NaN where not recorded), ``stage`` and ``selected``).
    """
    config = load_config(selection_settings.get_dict(), SelectionConfig)
    atoms, fingerprints, origins = read_frames_files(frames)
    reference = reference_fingerprints.get_array("fingerprints") if reference_fingerprints is not None else None
    result, summary, arrays = selection.select_frames(atoms, fingerprints, origins, config, reference)
    outputs = {}
    for rank, index in enumerate(result.selected):
        frame = atoms[int(index)]
        outputs[f"structure_{rank:03d}"] = StructureData(
            ase=Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        )
    outputs["summary"] = Dict(summary)
    deviations = ArrayData()
    for name, values in arrays.items():
        deviations.set_array(name, values)
    outputs["deviations"] = deviations
    return outputs
