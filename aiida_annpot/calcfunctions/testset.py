"""``evaluate_test_set``: a potential scored on a campaign's independent test set (frames it never trained on).

The potential (committee mean, float64) predicts every test frame in-process; :mod:`aiida_annpot.core.testset`
turns the predictions into errors per kind of structure and DFT-vs-potential properties (V0, B0, vacancy
formation energy). The parity data are kept as arrays for plots.
"""

from __future__ import annotations

import math

import numpy as np
from aiida.engine import calcfunction
from aiida.orm import ArrayData, Dict, Float, Int, StructureData
from ase import Atoms

from ..calcfunctions.dataset import structure_key
from ..core.testset import TestFrame, headline, score_test_set
from ..data.dataset import AtomisticDataset
from ..data.potential import AnnPotential

__all__ = ["evaluate_test_set", "finite", "sample_test_frames"]


def finite(value):
    """JSON-safe: non-finite floats become None (AiiDA's JSON storage refuses NaN and infinity)."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite(item) for item in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


@calcfunction
def evaluate_test_set(
    potential: AnnPotential, dataset: AtomisticDataset, kinds: Dict, training: AtomisticDataset | None = None
) -> dict:
    """Errors of ``potential`` on the test frames of ``dataset``, overall and per kind, and the properties.

    A test frame whose structure is also in ``training`` (the potential's training set) is left out and counted
    as ``excluded_trained``: the score is on frames the potential never saw.

    :param kinds: frame name → ``[kind, group]`` (how the structure was made, and the input structure it was made
        from); frames without a name or not listed count as kind ``other`` in group ``other``.
    :returns: ``score`` (Dict: ``overall``, ``kinds``, ``properties``, ``headline``) and ``predictions``
        (ArrayData: per frame ``dft_energy_per_atom``, ``ann_energy_per_atom``, ``kind`` index into the score's
        ``kind_names``; per force component ``dft_forces``, ``ann_forces``).
    """
    described = kinds.get_dict()
    trained = {structure_key(atoms) for atoms in training.to_frames()} if training is not None else set()
    calculator = potential.calculator(dtype="float64")  # imports torch
    frames, excluded = [], 0
    for atoms, name in zip(dataset.to_frames(), dataset.names, strict=True):
        if structure_key(atoms) in trained:
            excluded += 1
            continue
        kind, group = described.get(name, ("other", "other")) if name else ("other", "other")
        copy = atoms.copy()
        copy.calc = calculator
        energy, forces = float(copy.get_potential_energy()), copy.get_forces().copy()
        grade = float(calculator.get_property("extrapolation", copy))
        frames.append(TestFrame(atoms=atoms, kind=kind, group=group, energy=energy, forces=forces, extrapolation=grade))
    score = score_test_set(frames)
    kind_names = sorted(score["kinds"])
    score["kind_names"] = kind_names
    score["headline"] = headline(score)
    score["excluded_trained"] = excluded
    predictions = ArrayData()
    predictions.set_array(
        "dft_energy_per_atom", np.array([f.atoms.get_potential_energy() / len(f.atoms) for f in frames])
    )
    predictions.set_array("ann_energy_per_atom", np.array([f.energy / len(f.atoms) for f in frames]))
    predictions.set_array("kind", np.array([kind_names.index(f.kind) for f in frames], dtype=np.int64))
    predictions.set_array("dft_forces", np.concatenate([f.atoms.get_forces().ravel() for f in frames]))
    predictions.set_array("ann_forces", np.concatenate([f.forces.ravel() for f in frames]))
    return {"score": Dict(finite(score)), "predictions": predictions}


@calcfunction
def sample_test_frames(count: Int, seed: Int, min_distance: Float, **frames) -> dict:
    """``count`` frames drawn at random (seeded) from the hottest stage of an exploration's ``frames_<k>`` files,
    for the test set: MD frames of the final committee, the conditions the potential is meant for.

    Frames with atoms closer than ``min_distance`` Å (unphysical, never labelled) are not drawn.

    :returns: ``structure_<nnn>`` and ``origins`` (Dict: output key → ``{"origin": frames key, "start": start
        structure key, "structure": its index in its job, "stage", "step"}``).
    """
    from .selection import read_frames_files

    atoms, _, origins = read_frames_files(frames)
    stages = np.array([frame.info["stage"] for frame in atoms], dtype=int)
    distances = np.array([frame.info["min_distance"] for frame in atoms], dtype=float)
    pool = np.flatnonzero((stages == stages.max()) & (distances >= min_distance.value)) if atoms else np.array([])
    picks = np.sort(np.random.default_rng(seed.value).permutation(pool)[: count.value])
    outputs, described = {}, {}
    for rank, index in enumerate(picks):
        frame = atoms[int(index)]
        key = f"structure_{rank:03d}"
        outputs[key] = StructureData(
            ase=Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        )
        described[key] = {
            "origin": origins[index],
            "start": frame.info.get("start"),
            **{k: int(frame.info[k]) for k in ("structure", "stage", "step")},
        }
    outputs["origins"] = Dict(described)
    return outputs
